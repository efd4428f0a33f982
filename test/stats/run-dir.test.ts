// The run directory a `vmtool run` publishes (src/vmm/run-dir.ts) and the live exit counters in it: private
// (0700/0600), removed when the run ends, a stale one (its process killed) ignored and cleaned; the counters
// bounded; everything a reader takes from the files checked (any process of the same user can write them).
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
  mkdirSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ADDRESS_ENTRIES, LIVE_ACCESS, LiveExitCounters } from "../../src/vmm/live-counters.js";
import { RunDirectory, processStartTime } from "../../src/vmm/run-dir.js";
import { CountersReader, findRuns, parseRunDescription } from "../../src/stats/run-dirs.js";
import { StatsFormatError } from "../../src/stats/errors.js";
import { busyGuest, runArgs } from "./guests.js";
import { event, jsonLines, startVm, stat, waitFor } from "./helpers.js";

function scratch(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), "vmtool-rundir-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const describe = { memSize: 1 << 20, vmFd: 3, vmStatsFd: 4, vcpus: [{ id: 0, fd: 5, statsFd: 6 }] };

test("counters written by LiveExitCounters read back exactly; past ADDRESS_ENTRIES addresses, one 'other' count", (t) => {
  const base = join(scratch(t), "vmtool");
  const run = RunDirectory.create(
    2,
    { ...describe, vcpus: [...describe.vcpus, { id: 1, fd: 7, statsFd: 8 }] },
    base,
  );
  assert.ok(run, "published");
  t.after(() => run.close());
  const a = new LiveExitCounters(run.vcpuCounters(0));
  const b = new LiveExitCounters(run.vcpuCounters(1));
  a.setThread(1234);
  const extra = 500;
  for (let i = 0; i < ADDRESS_ENTRIES + extra; i++) a.add(6, 0xe000_0000 + 8 * i, LIVE_ACCESS.MMIO_READ);
  for (let i = 0; i < 3; i++) a.add(2, 0xe9, LIVE_ACCESS.PIO_OUT); // past the table too: "other" ports
  for (let i = 0; i < 7; i++) b.add(2, 0x3f8, LIVE_ACCESS.PIO_IN);
  b.add(10, -1, 0);
  b.add(200, -1, 0); // a reason past the last slot counts there
  const [va, vb] = CountersReader.open(run.dir).read();
  assert.equal(va.tid, 1234);
  assert.equal(va.reasons[6], ADDRESS_ENTRIES + extra);
  assert.equal(va.entries.length, ADDRESS_ENTRIES, "the table stops at its bound");
  assert.equal(va.otherMmio, extra);
  assert.equal(va.otherPio, 3);
  assert.equal(
    va.entries.reduce((s, [, c]) => s + c, 0) + va.otherMmio + va.otherPio,
    ADDRESS_ENTRIES + extra + 3,
    "no exit lost",
  );
  assert.deepEqual(vb.entries, [[0x3f8 * 4 + LIVE_ACCESS.PIO_IN + 1, 7]]);
  assert.equal(vb.reasons[2], 7);
  assert.equal(vb.reasons[10], 1);
  assert.equal(vb.reasons[63], 1);
  // Private: the folder 0700, its files 0600.
  assert.equal(statSync(base).mode & 0o777, 0o700);
  assert.equal(statSync(run.dir).mode & 0o777, 0o700);
  for (const f of readdirSync(run.dir)) assert.equal(statSync(join(run.dir, f)).mode & 0o777, 0o600, f);
  const desc = parseRunDescription(readFileSync(join(run.dir, "run.json"), "utf8"), run.dir);
  assert.equal(desc.pid, process.pid);
  assert.equal(desc.startTime, processStartTime("self"));
  run.close();
  assert.deepEqual(readdirSync(base), [], "removed when the run ends");
});

test("a base folder vmtool cannot trust is not used: a symlink, open to others, or not a folder", (t) => {
  const dir = scratch(t);
  const open = join(dir, "open");
  mkdirSync(open, { mode: 0o777 });
  assert.equal(RunDirectory.create(1, describe, open), undefined, "mode 0777");
  symlinkSync(dir, join(dir, "link"));
  assert.equal(RunDirectory.create(1, describe, join(dir, "link")), undefined, "a symlink");
  writeFileSync(join(dir, "file"), "");
  assert.equal(RunDirectory.create(1, describe, join(dir, "file")), undefined, "a file");
  assert.equal(RunDirectory.create(1, describe, join(dir, "missing", "vmtool")), undefined, "no parent");
});

test("run.json and counters files that are not what vmtool writes are refused, field by field", (t) => {
  const dir = scratch(t);
  const good = {
    format: 1,
    pid: 10,
    startTime: 5,
    startedAt: "x",
    argv: ["node"],
    memSize: 4096,
    vmFd: 3,
    vmStatsFd: -1,
    vcpus: [{ id: 0, fd: 4, statsFd: -1 }],
    counters: 1,
  };
  assert.equal(parseRunDescription(JSON.stringify(good), "x").pid, 10);
  const bad: unknown[] = [
    "not json",
    "null",
    "[]",
    { ...good, format: 2 },
    { ...good, pid: 0 },
    { ...good, pid: "10" },
    { ...good, startTime: -1 },
    { ...good, vmFd: 1.5 },
    { ...good, argv: [1] },
    { ...good, vcpus: [{ id: 0 }] },
    { ...good, vcpus: Array(5000).fill({ id: 0, fd: 1, statsFd: 1 }) },
    { ...good, counters: 9 },
  ];
  for (const b of bad)
    assert.throws(
      () => parseRunDescription(typeof b === "string" ? b : JSON.stringify(b), "x"),
      StatsFormatError,
      JSON.stringify(b).slice(0, 60),
    );
  // A counters file: wrong magic, wrong size, a symlink, a folder.
  writeFileSync(join(dir, "counters"), Buffer.alloc(64));
  assert.throws(() => CountersReader.open(dir), StatsFormatError);
  const run = RunDirectory.create(1, describe, join(dir, "vmtool"))!;
  t.after(() => run.close());
  const bytes = readFileSync(join(run.dir, "counters"));
  const trunc = join(dir, "t");
  mkdirSync(trunc);
  writeFileSync(join(trunc, "counters"), bytes.subarray(0, bytes.length - 8));
  assert.throws(() => CountersReader.open(trunc), StatsFormatError, "truncated");
  const link = join(dir, "l");
  mkdirSync(link);
  symlinkSync(join(run.dir, "counters"), join(link, "counters"));
  assert.throws(() => CountersReader.open(link), /ELOOP/, "a symlink is not followed");
});

test("a real run publishes itself, stat finds it; killed, it leaves a stale folder that stat ignores and removes", async (t) => {
  const runtime = scratch(t);
  const env = { ...process.env, XDG_RUNTIME_DIR: runtime };
  const vm = startVm(t, runArgs(busyGuest()), env);
  const dir = join(runtime, "vmtool", String(vm.pid));
  await waitFor("the run folder", () => {
    try {
      return readdirSync(dir).sort().join(",") === "counters,run.json" ? true : undefined;
    } catch {
      return undefined;
    }
  });
  const desc = parseRunDescription(readFileSync(join(dir, "run.json"), "utf8"), dir);
  assert.equal(desc.pid, vm.pid);
  assert.ok(desc.argv.includes("run"));
  assert.equal(desc.vcpus.length, 1);
  assert.ok(desc.vmStatsFd >= 0 && desc.vcpus[0].statsFd >= 0, "the stats fds it holds");
  const saved = process.env.XDG_RUNTIME_DIR;
  process.env.XDG_RUNTIME_DIR = runtime;
  try {
    assert.equal(findRuns("/proc").get(vm.pid)?.dir, dir, "a reader of the same user finds it");
  } finally {
    if (saved === undefined) delete process.env.XDG_RUNTIME_DIR;
    else process.env.XDG_RUNTIME_DIR = saved;
  }
  const r = stat(["--json", "-p", String(vm.pid), "--count", "1", "-s", "0.2", "--source", "vmtool"], {
    env,
  });
  assert.equal(r.status, 0, r.stderr);
  const v = jsonLines(r.stdout)[0].vms[0];
  assert.ok((event(v, "vmtool", "vmtool_exits(IO)")?.delta ?? 0) > 0, "counted live");
  // Ended normally: the folder goes with the run.
  vm.kill("SIGTERM");
  await vm.ended;
  assert.throws(() => statSync(dir), /ENOENT/);
  // Killed: nothing removes it, until a reader finds its process gone.
  const killed = startVm(t, runArgs(busyGuest()), env);
  const stale = join(runtime, "vmtool", String(killed.pid));
  await waitFor("the second run folder", () => {
    try {
      return readdirSync(stale).includes("run.json") ? true : undefined;
    } catch {
      return undefined;
    }
  });
  killed.kill("SIGKILL");
  await killed.ended;
  assert.ok(statSync(stale).isDirectory(), "left behind by SIGKILL");
  // Other runs of this user may be going on: only the killed one must not be there.
  const after = stat(["--json", "--count", "1", "-s", "0.1", "--source", "vmtool"], { env });
  assert.equal(after.status, 0, after.stderr);
  const pids = jsonLines(after.stdout).flatMap((l) => l.vms.map((x) => x.pid));
  assert.ok(!pids.includes(killed.pid), `a stale run is not reported: ${pids.join(" ")}`);
  assert.throws(() => statSync(stale), /ENOENT/, "and it is removed");
});
