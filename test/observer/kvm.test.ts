// The KVM source on real VMs: `vmtool run` guests (one vCPU each) and a two-vCPU VM from a small C program
// (vmtool run has one vCPU in this version). debugfs is mounted by the test when it is not.
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync, execFileSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CLI } from "../helpers/paths.js";
import { guests } from "../helpers/guests.js";
import { waitForHaltedVcpus } from "../helpers/vcpu-threads.js";
import { isDebugfsMounted, DEFAULT_DEBUGFS } from "../../src/observer/debugfs.js";

interface KvmSnapshot {
  source: string;
  vms: Array<{
    id: string;
    pid: number;
    name: string;
    vcpus: Array<{ id: string; index: number; tid: number; cpu: number | null; cpuTimeNs: number | null }>;
  }>;
  cpus: Array<{ cpu: number; vcpus: Array<{ vcpu: string; lastSeen: number | null }> }>;
}

const vmtool = (...args: string[]) =>
  spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: 60_000 });

before(() => {
  if (!isDebugfsMounted(DEFAULT_DEBUGFS)) execFileSync("mount", ["-t", "debugfs", "none", DEFAULT_DEBUGFS]);
});

/** Start a process and wait until KVM's debugfs has a VM of its with `vcpus` vCPUs that have run. */
async function startVm(
  t: { after(fn: () => Promise<void> | void): void },
  cmd: string,
  args: string[],
  vcpus: number,
): Promise<ChildProcess> {
  const child = spawn(cmd, args, { stdio: ["pipe", "ignore", "pipe"] });
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise((r) => child.on("exit", r));
  t.after(async () => {
    child.kill("SIGKILL");
    await exited;
  });
  const kvm = join(DEFAULT_DEBUGFS, "kvm");
  for (let i = 0; i < 300; i++) {
    const dir = readdirSync(kvm).find((d) => d.startsWith(`${child.pid}-`));
    if (dir) {
      const tids = readdirSync(join(kvm, dir))
        .filter((d) => /^vcpu\d+$/.test(d))
        .map((d) => Number(spawnSync("cat", [join(kvm, dir, d, "pid")], { encoding: "utf8" }).stdout));
      if (tids.length === vcpus && tids.every((x) => x > 0)) return child;
    }
    if (child.exitCode !== null) throw new Error(`${cmd} exited ${child.exitCode}: ${stderr}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`no VM of pid ${child.pid} in ${kvm}: ${stderr}`);
}

const threadsOf = (pid: number) => readdirSync(`/proc/${pid}/task`).map(Number);

test("vcpus --source kvm finds vmtool run VMs by pid: a spinning guest seen on a host CPU, a halted one placed", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "vmtool-observer-kvm-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const spin = join(dir, "spin.bin");
  writeFileSync(spin, Buffer.from([0xeb, 0xfe])); // jmp $: burns guest CPU forever
  const busy = await startVm(t, process.execPath, [CLI, "run", "--mode", "real", spin], 1);
  // The SDK's serial echo guest halts waiting for UART input: a vCPU that exists but does not run.
  const idle = await startVm(t, process.execPath, [CLI, "run", guests().serialEcho], 1);
  await waitForHaltedVcpus(idle.pid!); // the echo guest has reached its HLT

  const r = vmtool("vcpus", "--source", "kvm", "--json", "--sample", "300");
  assert.equal(r.status, 0, r.stderr);
  const snap = JSON.parse(r.stdout) as KvmSnapshot;
  assert.equal(snap.source, "kvm");
  const ncpu = Number(execFileSync("nproc", ["--all"], { encoding: "utf8" }));
  const cpuTimes = new Map<boolean, number>();
  for (const [child, running] of [
    [busy, true],
    [idle, false],
  ] as const) {
    const vm = snap.vms.find((v) => v.pid === child.pid);
    assert.ok(vm, `VM of pid ${child.pid} not found in ${snap.vms.map((v) => v.id).join(", ")}`);
    assert.equal(vm.name, "node");
    assert.equal(vm.vcpus.length, 1);
    const v = vm.vcpus[0];
    assert.ok(threadsOf(child.pid!).includes(v.tid), `tid ${v.tid} is not a thread of ${child.pid}`);
    assert.ok(v.cpu !== null && v.cpu >= 0 && v.cpu < ncpu, `cpu ${v.cpu}`);
    const placed = snap.cpus.find((c) => c.cpu === v.cpu)?.vcpus.find((s) => s.vcpu === v.id);
    assert.ok(placed, `${v.id} not listed under cpu ${v.cpu}`);
    if (running) {
      // Its CPU time advanced during the sample: seen just now.
      assert.ok(
        placed.lastSeen !== null && Math.abs(Date.now() / 1000 - placed.lastSeen) < 30,
        `${placed.lastSeen}`,
      );
    }
    cpuTimes.set(running, v.cpuTimeNs ?? 0);
  }
  // The halted guest's vCPU only runs when something wakes it (it may be seen: it did run, briefly). Compared
  // over the same half second: a one-vCPU run's loop is on its main thread, whose CPU time includes Node's start.
  await new Promise((r) => setTimeout(r, 500));
  const later = vmtool("vcpus", "--source", "kvm", "--json", "--sample", "300");
  assert.equal(later.status, 0, later.stderr);
  const again = JSON.parse(later.stdout) as KvmSnapshot;
  const grew = (child: { pid?: number }, running: boolean) =>
    (again.vms.find((v) => v.pid === child.pid)?.vcpus[0]?.cpuTimeNs ?? 0) - cpuTimes.get(running)!;
  const idleNs = grew(idle, false);
  const busyNs = grew(busy, true);
  assert.ok(idleNs * 5 < busyNs, `over 0.5 s: idle ${idleNs} ns, busy ${busyNs} ns`);
  const text = vmtool("vcpus", "--source", "kvm");
  assert.equal(text.status, 0, text.stderr);
  assert.match(text.stdout, new RegExp(`^VM ${busy.pid}-\\d+: node, pid ${busy.pid}, 1 vCPU;`, "m"));
  assert.match(text.stdout, new RegExp(`node\\[${busy.pid}\\]/vcpu0 +last seen \\d{4}-`));
});

test("a two-vCPU VM: both vCPU threads found and seen; watch reports them as JSON events", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "vmtool-observer-kvm-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // A minimal VMM in C: 2 vCPUs in real mode spinning in `jmp $`.
  writeFileSync(
    join(dir, "vm2.c"),
    `#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
static int kvm, vm;
static void *vcpu(void *arg) {
  int fd = ioctl(vm, KVM_CREATE_VCPU, (long)arg);
  struct kvm_sregs s; ioctl(fd, KVM_GET_SREGS, &s); s.cs.base = 0; s.cs.selector = 0; ioctl(fd, KVM_SET_SREGS, &s);
  struct kvm_regs r; memset(&r, 0, sizeof r); r.rip = 0x1000; r.rflags = 2; ioctl(fd, KVM_SET_REGS, &r);
  for (;;) if (ioctl(fd, KVM_RUN, 0) < 0) _exit(1);
}
int main(void) {
  kvm = open("/dev/kvm", O_RDWR); vm = ioctl(kvm, KVM_CREATE_VM, 0);
  unsigned char *mem = mmap(0, 0x10000, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  mem[0x1000] = 0xeb; mem[0x1001] = 0xfe;
  struct kvm_userspace_memory_region reg = {0, 0, 0, 0x10000, (unsigned long)mem};
  ioctl(vm, KVM_SET_USER_MEMORY_REGION, &reg);
  pthread_t t[2];
  for (long i = 0; i < 2; i++) pthread_create(&t[i], 0, vcpu, (void *)i);
  pause();
  return 0;
}
`,
  );
  execFileSync("gcc", ["-O2", "-pthread", "-o", join(dir, "vm2"), join(dir, "vm2.c")]);
  const child = await startVm(t, join(dir, "vm2"), [], 2);
  const r = vmtool("vcpus", "--source", "kvm", "--json");
  assert.equal(r.status, 0, r.stderr);
  const vm = (JSON.parse(r.stdout) as KvmSnapshot).vms.find((v) => v.pid === child.pid);
  assert.ok(vm);
  assert.equal(vm.name, "vm2");
  assert.deepEqual(
    vm.vcpus.map((v) => v.index),
    [0, 1],
  );
  const tids = threadsOf(child.pid!);
  for (const v of vm.vcpus) assert.ok(tids.includes(v.tid) && v.tid !== child.pid, `tid ${v.tid}`);

  const w = vmtool("watch", "--source", "kvm", "--json", "--interval", "0.2", "--count", "3");
  assert.equal(w.status, 0, w.stderr);
  const lines = w.stdout
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  const mine = lines.filter((e) => e.event === "appeared" && String(e.vcpu).startsWith(`${child.pid}-`));
  assert.deepEqual(mine.map((e) => e.label).sort(), [`vm2[${child.pid}]/vcpu0`, `vm2[${child.pid}]/vcpu1`]);
  for (const e of mine) assert.equal(typeof e.cpu, "number");
  const summary = lines[lines.length - 1];
  assert.equal(summary.event, "summary");
  assert.equal(summary.polls, 3);

  // The VM goes away: watch reports its vCPUs vanished.
  const watcher = spawn(process.execPath, [CLI, "watch", "--source", "kvm", "--interval", "0.2"], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  watcher.stdout.on("data", (d: Buffer) => (out += d.toString()));
  const done = new Promise((res) => watcher.on("exit", res));
  for (let i = 0; i < 300 && !out.includes(`vm2[${child.pid}]/vcpu1`); i++)
    await new Promise((res) => setTimeout(res, 100));
  child.kill("SIGKILL");
  for (let i = 0; i < 300 && (out.match(/vanished/g) ?? []).length < 2; i++)
    await new Promise((res) => setTimeout(res, 100));
  watcher.kill("SIGINT");
  assert.equal(await done, 0);
  assert.match(out, new RegExp(`vanished +vm2\\[${child.pid}\\]/vcpu0 gone`));
  assert.match(out, new RegExp(`vanished +vm2\\[${child.pid}\\]/vcpu1 gone`));
  assert.match(out, /^watched KVM for [\d.]+ s \(\d+ polls\): .*2 vanished/m);
  assert.ok(existsSync(CLI));
});
