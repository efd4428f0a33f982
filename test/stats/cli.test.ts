// `vmtool stat`'s outputs parsed as kvm_stat's users parse them (-1, -l, -c, -L, -z, --json), and every kind
// of bad input: one line on stderr, exit status 2. Not root: which sources need it, and what the rest show.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, renameSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CLI } from "../helpers/paths.js";
import { busyGuest, runArgs } from "./guests.js";
import { isRoot, jsonLines, startVm, stat, waitFor } from "./helpers.js";

const TIMESTAMP = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d/;

test("-1: every event as 'name total delta' in kvm_stat's columns, sorted; -f keeps the matching ones", async (t) => {
  const vm = startVm(t, runArgs(busyGuest()));
  await waitFor("the VM", () =>
    stat(["-1", "-p", String(vm.pid), "-f", "vmtool"]).stdout.includes("vmtool_exits") ? true : undefined,
  );
  const r = stat(["-1", "-p", String(vm.pid)]);
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trimEnd().split("\n");
  const parsed = lines.map((l) => {
    const m = /^(\S+) +(\d+) +(\d+)$/.exec(l);
    assert.ok(m, `'${l}'`);
    assert.equal(l.length, 62, `kvm_stat's '%-42s%10d%10d': '${l}'`);
    return { name: m[1], total: Number(m[2]), delta: Number(m[3]) };
  });
  assert.deepEqual(
    parsed.map((p) => p.name),
    parsed.map((p) => p.name).sort(),
  );
  const get = (n: string) => parsed.find((p) => p.name === n);
  // Binary stats and vmtool's counters, children included; the guest makes 4 exits a round.
  assert.ok(get("exits")!.delta > 0);
  assert.ok(get("vmtool_exits")!.delta > 0);
  assert.ok(get("vmtool_exits(IO)")!.delta > 0);
  assert.ok(Math.abs(get("vmtool_io(0x80,out)")!.delta - get("vmtool_mmio(0xe0000000,read)")!.delta) <= 1);
  assert.ok(get("halt_wait_ns"), "every event is listed, zeros included");
  const f = stat(["-1", "-p", String(vm.pid), "-f", "vmtool_exits"]);
  assert.deepEqual(
    f.stdout
      .trimEnd()
      .split("\n")
      .map((l) => l.split(/ +/)[0])
      .filter((n) => !n.startsWith("vmtool_exits")),
    [],
    "-f is a regex matched at the start of the name",
  );
  const perVcpu = stat(["-1", "-p", String(vm.pid), "-f", "exits$", "--per-vcpu"]);
  assert.match(perVcpu.stdout, /^exits\/vcpu0 +\d+ +\d+$/m);
});

test("-l, -l -c, -L FILE -c (header once per file), -z, SIGHUP reopening a rotated file; a pipe gets -l's lines", async (t) => {
  const vm = startVm(t, runArgs(busyGuest()));
  const pid = String(vm.pid);
  // Events that all exist from the start (an INTR exit, a kick, may come later and add a column).
  const FIXED = "vmtool_exits(\\((IO|MMIO)\\))?$";
  await waitFor("the VM", () =>
    stat(["-1", "-p", pid, "-f", "vmtool"]).stdout.includes("vmtool_exits") ? true : undefined,
  );
  const log = stat(["-l", "-p", pid, "-s", "0.2", "--count", "3", "-f", FIXED]);
  assert.equal(log.status, 0, log.stderr);
  const [banner, ...rows] = log.stdout.trimEnd().split("\n");
  const keys = banner.trim().split(" ");
  assert.ok(keys.includes("vmtool_exits") && keys.includes("vmtool_exits(IO)"), banner);
  assert.equal(rows.length, 3);
  for (const row of rows) {
    assert.match(row, TIMESTAMP);
    assert.equal(row.slice(19).trim().split(/ +/).length, keys.length, row);
  }
  // No output option and no terminal (a pipe): the same log lines, never the screen's escape sequences.
  const piped = stat(["-p", pid, "-s", "0.2", "--count", "2", "-f", FIXED]);
  assert.equal(piped.status, 0, piped.stderr);
  assert.ok(!piped.stdout.includes("\u001b"), "no escape sequence");
  const [pipedBanner, ...pipedRows] = piped.stdout.trimEnd().split("\n");
  assert.equal(pipedBanner, banner);
  assert.equal(pipedRows.length, 2);
  for (const row of pipedRows) assert.match(row, TIMESTAMP);
  const csv = stat(["-l", "-c", "-p", pid, "-s", "0.2", "--count", "2", "-f", FIXED]);
  const [head, ...data] = csv.stdout.trimEnd().split("\n");
  assert.equal(head, `timestamp,${keys.join(",")}`);
  assert.equal(data.length, 2);
  for (const d of data) {
    const cells = d.split(",");
    assert.match(cells[0], new RegExp(`${TIMESTAMP.source}$`));
    assert.equal(cells.length, keys.length + 1);
    assert.ok(cells.slice(1).every((c) => /^\d+$/.test(c)));
  }
  // -L FILE -c: appended; the header only in an empty file.
  const dir = mkdtempSync(join(tmpdir(), "vmtool-stat-log-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, "stat.csv");
  for (let i = 0; i < 2; i++) {
    const r = stat(["-L", file, "-c", "-p", pid, "-s", "0.2", "--count", "2", "-f", FIXED]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, "");
  }
  const lines = readFileSync(file, "utf8").trimEnd().split("\n");
  assert.equal(lines.filter((l) => l.startsWith("timestamp,")).length, 1, lines.join("\n"));
  assert.equal(lines.length, 5);
  // -z: an event that stays at 0 (the busy guest never halts): its lines are printed without -z, left out with.
  const zeroArgs = ["-l", "-p", pid, "-s", "0.2", "--count", "2", "-f", "halt_exits$", "--source", "stats"];
  const plain = stat(zeroArgs);
  assert.equal(plain.status, 0, plain.stderr);
  assert.match(plain.stdout, /^halt_exits\n(.* +0\n){2}$/);
  const z = stat([...zeroArgs, "-z"]);
  assert.equal(z.status, 0, z.stderr);
  assert.equal(z.stdout, "", "all-zero lines skipped");
  // SIGHUP: the file is reopened by name (after logrotate moved it), and a new CSV file gets its header.
  const rotating = join(dir, "rot.csv");
  const w = spawn(process.execPath, [CLI, "stat", "-L", rotating, "-c", "-p", pid, "-s", "0.2", "-f", FIXED]);
  t.after(() => w.kill("SIGKILL"));
  await waitFor("a line in the log", () => (readOr(rotating).split("\n").length > 2 ? true : undefined));
  renameSync(rotating, `${rotating}.1`);
  w.kill("SIGHUP");
  await waitFor("a line in the new file", () => (readOr(rotating).split("\n").length > 2 ? true : undefined));
  w.kill("SIGTERM");
  assert.equal(await new Promise((r) => w.on("exit", r)), 0);
  assert.match(readOr(rotating), /^timestamp,vmtool_exits/);
  assert.match(readOr(`${rotating}.1`), /^timestamp,vmtool_exits/);
});

function readOr(p: string): string {
  try {
    return readFileSync(p, "utf8");
  } catch {
    return "";
  }
}

test("--json: one object per interval, --count of them; -f help lists the events", async (t) => {
  const vm = startVm(t, runArgs(busyGuest()));
  await waitFor("the VM", () =>
    stat(["-1", "-p", String(vm.pid), "-f", "vmtool"]).stdout.includes("vmtool_exits") ? true : undefined,
  );
  const r = stat(["--json", "-p", String(vm.pid), "-s", "0.2", "--count", "3"]);
  assert.equal(r.status, 0, r.stderr);
  const lines = jsonLines(r.stdout);
  assert.equal(lines.length, 3);
  for (const l of lines) {
    assert.ok(l.seconds > 0.1 && l.seconds < 5, String(l.seconds));
    assert.equal(l.vms.length, 1);
    assert.equal(l.vms[0].pid, vm.pid);
    assert.ok(l.summary["vmtool_exits"].delta > 0);
  }
  const help = stat(["-f", "help"]);
  assert.equal(help.status, 0, help.stderr);
  const names = help.stdout.split("\n").map((s) => s.trim());
  assert.ok(names.includes("exits") && names.includes("vmtool_exits"), help.stdout);
  if (isRoot) assert.ok(names.includes("kvm_userspace_exit") && names.includes("kvm_pio"), "tracepoints too");
});

test("bad input: one line on stderr, exit status 2", () => {
  const self = spawnSync("sleep", ["0"]); // a pid that existed and is gone
  const cases: [string[], RegExp][] = [
    [["-p", "99999999999"], /-p\/--pid: 99999999999 is above the maximum/],
    [["-p", "99999999"], /-p 99999999: no such process/],
    [["-p", String(self.pid)], new RegExp(`-p ${self.pid}: no such process`)],
    [["-p", "1"], /-p 1: not a VM/],
    [["-p", "abc"], /-p\/--pid: 'abc' is not a number/],
    [["-p", "0"], /below the minimum/],
    [["-g", "no-such-guest-here"], /-g no-such-guest-here: no VM of that name/],
    [["-g", ""], /-g\/--guest: no guest name/],
    [["-p", "1", "-g", "x"], /give one of them/],
    [["-f", "(unclosed"], /-f\/--fields: '\(unclosed' is not a valid regular expression/],
    [["-f", "a[z-a]"], /not a valid regular expression/],
    [["-s", "0.05"], /-s\/--set-delay: 0.05 is outside 0.1..25.5 seconds/],
    [["-s", "25.6"], /outside 0.1..25.5/],
    [["-s", "abc"], /'abc' is not a number of seconds/],
    [["-s", "-1"], /not a number of seconds/],
    [["-c"], /-c\/--csv needs -l\/--log or -L\/--log-to-file/],
    [["-z"], /-z\/--skip-zero-records needs -l/],
    [["-1", "-l"], /-1 and -l cannot be combined/],
    [["-l", "--json"], /cannot be combined/],
    [
      ["-L", "/nonexistent-dir/x.csv", "--count", "1"],
      /-L \/nonexistent-dir\/x.csv: cannot open for appending \(ENOENT\)/,
    ],
    [["-L", tmpdir(), "--count", "1"], /cannot open for appending \(EISDIR\)/],
    [["--source", "bogus"], /--source: 'bogus' is not one of auto, stats, vmtool, tracepoints, debugfs/],
    [["--source", "stats,"], /--source: '' is not one of/],
    [["-t", "--source", "stats"], /-t\/-d and --source: give one of them/],
    [["--count", "0"], /--count: 0 is below the minimum 1/],
    [["--count", "1e3"], /--count: '1e3' is not a number/],
    [["--bogus"], /unknown option '--bogus'/],
    [["extra"], /too many arguments/],
  ];
  for (const [args, re] of cases) {
    const r = stat(args);
    assert.equal(r.status, 2, `${args.join(" ")}: status ${r.status}\n${r.stderr}`);
    const lines = r.stderr
      .trimEnd()
      .split("\n")
      .filter((l) => !l.startsWith("(run with --help"));
    assert.equal(lines.length, 1, `${args.join(" ")}: one line:\n${r.stderr}`);
    assert.match(lines[0], re, args.join(" "));
    assert.equal(r.stdout, "", args.join(" "));
  }
});

test("a log file that stops taking writes: one line, status 10 (the output could not be written)", async (t) => {
  const vm = startVm(t, runArgs(busyGuest()));
  const pid = String(vm.pid);
  await waitFor("the VM", () =>
    stat(["-1", "-p", pid, "-f", "vmtool"]).stdout.includes("vmtool_exits") ? true : undefined,
  );
  const r = stat(["-L", "/proc/version", "-p", pid, "-s", "0.1", "--count", "1", "--source", "vmtool"]);
  assert.equal(r.status, 10, r.stderr);
  assert.deepEqual(r.stderr.trimEnd().split("\n"), [
    "vmtool: error: cannot write to /proc/version (EIO): the log is incomplete",
  ]);
});

test(
  "not root: says which sources need root and shows what the others give",
  { skip: !isRoot && "needs root to become another user" },
  () => {
    const env = { ...process.env, XDG_RUNTIME_DIR: "" };
    const asNobody = (args: string[]) =>
      spawnSync(
        "setpriv",
        ["--reuid", "nobody", "--regid", "nogroup", "--clear-groups", process.execPath, CLI, "stat", ...args],
        {
          encoding: "utf8",
          env,
          timeout: 60_000,
        },
      );
    const r = asNobody(["-1"]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(
      r.stderr,
      /^vmtool: not root: .*tracepoints \(.*root.*\).*debugfs \(debugfs is readable by root only\).* need root; showing what the rest give$/m,
    );
    assert.match(r.stderr, /stats \(other users' VMs\)/);
    // Asking only for what needs root: nothing can be shown, the host cannot do it (status 6).
    const t = asNobody(["-1", "--source", "tracepoints"]);
    assert.equal(t.status, 6, t.stderr);
    assert.match(t.stderr, /^vmtool: error: tracepoints: /);
    assert.equal(t.stderr.trimEnd().split("\n").length, 1);
    const p = asNobody(["-1", "-p", "1"]);
    assert.equal(p.status, 6, p.stderr);
    assert.match(
      p.stderr,
      /-p 1: cannot tell whether it runs a VM: its descriptors are readable by its owner and root only/,
    );
  },
);
