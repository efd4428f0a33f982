// A copied tree (`--debugfs DIR`) can hold anything under any name: FIFOs, symlinks to /dev/zero, numbers no
// kernel writes. Every such file is skipped and reported, never a hang, never unbounded memory, never a number
// shown that was not in the file.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CLI } from "../helpers/paths.js";
import { cpuDir, vmcsOf, writeModuleTree } from "./fake-module-tree.js";

let dir: string;
before(() => (dir = mkdtempSync(join(tmpdir(), "vmtool-hostile-tree-"))));
after(() => rmSync(dir, { recursive: true, force: true }));

// Bounded: before src/files, these trees blocked in open() or grew to gigabytes until killed.
const vmtool = (...args: string[]) =>
  spawnSync(process.execPath, [CLI, ...args], {
    encoding: "utf8",
    timeout: 20_000,
    killSignal: "SIGKILL",
  });

test("module tree: a FIFO and a /dev/zero symlink named like VMCS files, a FIFO sysregs: skipped, reported", () => {
  const root = join(dir, "m", "vmtool");
  const now = Math.floor(Date.now() / 1000);
  writeModuleTree(root, { cpus: 2, vcpus: 1, cpusPerVcpu: 1, now });
  execFileSync("mkfifo", [join(cpuDir(root, 0), "abcd0000")]);
  symlinkSync("/dev/zero", join(cpuDir(root, 1), "abce0000"));
  execFileSync("mkfifo", [join(cpuDir(root, 1), "sysregs")]);
  for (const extra of [[], ["--sysregs"]]) {
    const r = vmtool("vcpus", "--source", "vmtool", "--json", "--debugfs", join(dir, "m"), ...extra);
    assert.equal(r.status, 0, `status ${r.status} signal ${r.signal}: ${r.stderr}`);
    const j = JSON.parse(r.stdout) as {
      cpus: { vcpus: { vcpu: string }[] }[];
      problems: { path: string; reason: string }[];
    };
    assert.deepEqual(
      j.cpus.flatMap((c) => c.vcpus.map((v) => v.vcpu)),
      [vmcsOf(0)],
    );
    const reasons = Object.fromEntries(j.problems.map((p) => [p.path.slice(root.length + 1), p.reason]));
    assert.equal(reasons["cpu-000/abcd0000"], "is a FIFO, not a regular file");
    assert.equal(reasons["cpu-001/abce0000"], "is a character device, not a regular file");
    if (extra.length > 0) assert.equal(reasons["cpu-001/sysregs"], "is a FIFO, not a regular file");
    assert.match(r.stderr, /^vmtool: warning: \d files skipped as unreadable or garbage/);
  }
  // watch reads the same files through its kept descriptors.
  const w = vmtool(
    "watch",
    "--source",
    "vmtool",
    "--json",
    "--count",
    "2",
    "--interval",
    "0.05",
    "--debugfs",
    join(dir, "m"),
  );
  assert.equal(w.status, 0, w.stderr);
  assert.match(w.stdout, /"event":"summary".*"skippedFiles":2/);
});

test("KVM tree: a statistics file that is /dev/zero, a FIFO vCPU pid file: skipped, reported", () => {
  const vm = join(dir, "k", "kvm", `${process.pid}-11`);
  mkdirSync(join(vm, "vcpu0"), { recursive: true });
  mkdirSync(join(vm, "vcpu1"), { recursive: true });
  symlinkSync("/dev/zero", join(vm, "exits"));
  writeFileSync(join(vm, "io_exits"), "12\n");
  execFileSync("mkfifo", [join(vm, "vcpu0", "pid")]);
  writeFileSync(join(vm, "vcpu1", "pid"), "0\n");
  const r = vmtool("vcpus", "--source", "kvm", "--json", "--sample", "0", "--debugfs", join(dir, "k"));
  assert.equal(r.status, 0, `status ${r.status} signal ${r.signal}: ${r.stderr}`);
  const j = JSON.parse(r.stdout) as {
    vms: { id: string; statsError?: string; vcpus: { index: number }[] }[];
    problems: { path: string; reason: string }[];
  };
  assert.equal(j.vms.length, 1);
  assert.equal(j.vms[0].statsError, "not readable (is a character device, not a regular file)");
  assert.deepEqual(
    j.vms[0].vcpus.map((v) => v.index),
    [1],
  );
  assert.deepEqual(j.problems, [{ path: join(vm, "vcpu0", "pid"), reason: "is a FIFO, not a regular file" }]);
});
