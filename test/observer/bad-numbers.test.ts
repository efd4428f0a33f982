// Numbers in a copied tree that no kernel writes (signs, exponents, hex, blanks, 20 digits) are skipped and
// reported, never shown as if the file said them, never rounded: KVM's and the module's trees, and /proc.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KvmSource, parseStat } from "../../src/observer/kvm-tree.js";
import { parseTimeFile, readModuleTree } from "../../src/observer/module-tree.js";
import { renderSnapshot } from "../../src/observer/render.js";
import { CLI } from "../helpers/paths.js";
import { cpuDir, timeFile } from "./fake-module-tree.js";

let dir: string;
before(() => (dir = mkdtempSync(join(tmpdir(), "vmtool-bad-numbers-"))));
after(() => rmSync(dir, { recursive: true, force: true }));

function put(path: string, text: string | Buffer): void {
  mkdirSync(join(path, ".."), { recursive: true });
  writeFileSync(path, text);
}

test("a VM folder with a 20-digit pid, 'exits' = -5: skipped and reported, no rounded pid shown", () => {
  const t = join(dir, "f19");
  put(join(t, "kvm", "99999999999999999999-1", "exits"), "-5\n");
  put(join(t, "kvm", "99999999999999999999-1", "vcpu0", "pid"), "0\n");
  const r = spawnSync(process.execPath, [CLI, "vcpus", "--source", "kvm", "--sample", "0", "--debugfs", t], {
    encoding: "utf8",
    timeout: 30_000,
  });
  assert.equal(r.status, 0, r.stderr);
  assert.doesNotMatch(r.stdout, /100000000000000000000|-5/);
  assert.match(r.stdout, /no VM is running/);
  assert.equal(
    r.stderr,
    `vmtool: warning: 1 file skipped as unreadable or garbage (first: ${join(t, "kvm", "99999999999999999999-1")}: ` +
      `not a VM folder of KVM's: pid 99999999999999999999 is out of range)\n`,
  );
});

test("KVM tree: statistics, vCPU folders and thread ids that are not kernel numbers are skipped, each reported", () => {
  const kvm = join(dir, "k", "kvm");
  const proc = join(dir, "k", "proc"); // pid 4194000 has no process: the VM is named by its pid
  mkdirSync(proc, { recursive: true });
  const vm = join(kvm, "4194000-3");
  put(join(vm, "exits"), "-5\n");
  put(join(vm, "io_exits"), "1e5\n");
  put(join(vm, "mmio_exits"), "\n");
  put(join(vm, "halt_exits"), "0x10\n");
  put(join(kvm, "5000000-3", "exits"), "1\n"); // pid above PID_MAX_LIMIT
  put(join(kvm, "12-99999999999", "exits"), "1\n"); // fd above INT_MAX
  put(join(vm, "vcpu99999999999", "pid"), "0\n");
  put(join(vm, "vcpu0", "pid"), "1e3\n");
  put(join(vm, "vcpu1", "pid"), "\n");
  put(join(vm, "vcpu2", "pid"), "-7\n");
  put(join(vm, "vcpu3", "pid"), "0\n");
  const poll = new KvmSource(kvm, proc).poll();
  assert.equal(poll.vms?.length, 1);
  const v = poll.vms[0];
  assert.deepEqual(v.stats, {});
  assert.deepEqual(
    v.vcpus.map((c) => [c.index, c.tid]),
    [[3, 0]],
  );
  const reasons = Object.fromEntries(poll.problems.map((p) => [p.path.slice(kvm.length + 1), p.reason]));
  assert.deepEqual(reasons, {
    "12-99999999999": "not a VM folder of KVM's: fd 99999999999 is out of range",
    "5000000-3": "not a VM folder of KVM's: pid 5000000 is out of range",
    "4194000-3/exits": 'not a count: "-5\\n"',
    "4194000-3/io_exits": 'not a count: "1e5\\n"',
    "4194000-3/mmio_exits": 'not a count: "\\n"',
    "4194000-3/halt_exits": 'not a count: "0x10\\n"',
    "4194000-3/vcpu99999999999": "not a vCPU folder: vCPU 99999999999 is out of range",
    "4194000-3/vcpu0/pid": 'not a thread id: "1e3\\n"',
    "4194000-3/vcpu1/pid": 'not a thread id: "\\n"',
    "4194000-3/vcpu2/pid": 'not a thread id: "-7\\n"',
  });
  const text = renderSnapshot(poll);
  assert.match(text, /^VM 4194000-3: pid 4194000, 1 vCPU; no statistics$/m);
});

test("/proc fields: a stat line with a signed or exponent field is not parsed; schedstat that is not ns is not used", () => {
  const fields = (cpu: string, utime = "3") =>
    `77 (vcpu 0) R ${Array.from({ length: 36 }, (_, i) => (i === 10 ? utime : i === 35 ? cpu : "0")).join(" ")}`;
  assert.deepEqual(parseStat(fields("5")), { state: "R", cpu: 5, cpuTicks: 3 });
  assert.equal(parseStat(fields("-1")), null);
  assert.equal(parseStat(fields("1e2")), null);
  assert.equal(parseStat(fields("5", "0x3")), null);
  // A real thread in a fake /proc: schedstat "-5 ..." falls back to stat's ticks.
  const kvm = join(dir, "p", "kvm");
  const proc = join(dir, "p", "proc");
  put(join(kvm, "4100-1", "vcpu0", "pid"), "77\n");
  put(join(proc, "4100", "comm"), "vmm\n");
  put(join(proc, "4100", "task", "77", "stat"), fields("1"));
  put(join(proc, "4100", "task", "77", "schedstat"), "-5 0 0\n");
  const p = new KvmSource(kvm, proc).poll();
  assert.equal(p.vms![0].vcpus[0].cpuTimeNs, 3 * 1e7);
  put(join(proc, "4100", "task", "77", "schedstat"), "123456789 0 0\n");
  assert.equal(new KvmSource(kvm, proc).poll().vms![0].vcpus[0].cpuTimeNs, 123456789);
});

test("module tree: a CPU folder with a 20-digit number, a time past 2^53, 20-digit .info values", () => {
  const root = join(dir, "m");
  const now = Math.floor(Date.now() / 1000);
  put(join(cpuDir(root, 0), "1000"), timeFile(now));
  put(
    join(cpuDir(root, 0), "1000.info"),
    "sightings 99999999999999999999\nlast_seen_ns 999999999999999999999\n",
  );
  put(join(root, "cpu-99999999999999999999", "2000"), timeFile(now));
  const big = Buffer.alloc(32);
  big.write("9999999999999999999", "latin1");
  assert.equal(parseTimeFile(big, 32), "time too large to be exact");
  put(join(cpuDir(root, 1), "3000"), big);
  const poll = readModuleTree(root, { info: true });
  assert.deepEqual(
    poll.sightings.map((s) => [s.cpu, s.vcpu, s.lastSeen, s.sightings]),
    [[0, "1000", now, undefined]],
  );
  assert.deepEqual(poll.problems.map((p) => [p.path.slice(root.length + 1), p.reason]).sort(), [
    ["cpu-001/3000", "time too large to be exact"],
    ["cpu-99999999999999999999", "not a CPU folder: CPU 99999999999999999999 is out of range"],
  ]);
});

test("KVM tree: a vCPU's files kept open between polls show what they say at each poll, and are closed with it", () => {
  const kvm = join(dir, "held", "kvm");
  const proc = join(dir, "held", "proc");
  const task = join(proc, "4100", "task", "4101");
  const stat = (cpu: number, ticks: number) => {
    const f = new Array<string>(50).fill("0");
    f[0] = "S";
    f[11] = String(ticks);
    f[36] = String(cpu);
    return `4101 (CPU 0/KVM) ${f.join(" ")}\n`;
  };
  put(join(kvm, "4100-7", "vcpu0", "pid"), "4101\n");
  put(join(task, "stat"), stat(1, 5));
  put(join(task, "schedstat"), "50000000 0 1\n");
  const fds = () => readdirSync("/proc/self/fd").length;
  const before = fds();
  const src = new KvmSource(kvm, proc);
  const first = src.poll().vms?.[0].vcpus[0];
  assert.deepEqual([first?.tid, first?.cpu, first?.cpuTimeNs], [4101, 1, 50_000_000]);
  writeFileSync(join(task, "stat"), stat(3, 7));
  writeFileSync(join(task, "schedstat"), "70000000 0 2\n");
  const second = src.poll();
  assert.deepEqual(
    [second.vms?.[0].vcpus[0].cpu, second.vms?.[0].vcpus[0].cpuTimeNs],
    [3, 70_000_000],
    "the second poll reads the files again",
  );
  assert.equal(
    second.sightings.find((s) => s.cpu === 3)?.lastSeen !== null,
    true,
    "CPU time advanced: seen on CPU 3",
  );
  rmSync(join(kvm, "4100-7"), { recursive: true });
  assert.equal(src.poll().vms?.length, 0);
  assert.equal(fds(), before, "the files of a vCPU that is gone are closed");
  src.close();
});
