// The KVM source on a `vmtool run --cpus 2` VM (added by the SMP work; the other observer tests are in
// kvm.test.ts): both vCPU threads of vmtool's own VM are found, with their thread ids inside vmtool's process.
// The guest is the SDK's smp-hello with "stay": the AP halts, the BSP sleeps in `sti; hlt`, the VM stays up.
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync, execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { CLI } from "../helpers/paths.js";
import { GUEST_OUT, guests } from "../helpers/guests.js";
import { isDebugfsMounted, DEFAULT_DEBUGFS } from "../../src/observer/debugfs.js";

before(() => {
  if (!isDebugfsMounted(DEFAULT_DEBUGFS)) execFileSync("mount", ["-t", "debugfs", "none", DEFAULT_DEBUGFS]);
});

test("vcpus --source kvm on a two-vCPU `vmtool run` VM: both vCPU threads, inside vmtool's process", async (t) => {
  guests();
  const child = spawn(
    process.execPath,
    [CLI, "run", "--cpus", "2", "--cmdline", "stay", join(GUEST_OUT, "smp-hello.elf")],
    { stdio: ["pipe", "pipe", "pipe"] },
  );
  let out = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise((r) => child.on("exit", r));
  t.after(async () => {
    child.kill("SIGTERM");
    await exited;
  });
  // Wait for the AP's greeting: both vCPUs have run by then.
  for (let i = 0; i < 300 && !/BSP: 1 of 1 APs up/.test(out); i++) {
    if (child.exitCode !== null) throw new Error(`vmtool exited ${child.exitCode}: ${out}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.match(out, /AP 1 up/);
  const kvm = join(DEFAULT_DEBUGFS, "kvm");
  const dir = readdirSync(kvm).find((d) => d.startsWith(`${child.pid}-`));
  assert.ok(dir, `no KVM debugfs directory for pid ${child.pid}`);
  const r = spawnSync(process.execPath, [CLI, "vcpus", "--source", "kvm", "--json"], {
    encoding: "utf8",
    timeout: 60_000,
  });
  assert.equal(r.status, 0, r.stderr);
  const snap = JSON.parse(r.stdout) as { vms: { pid: number; vcpus: { index: number; tid: number }[] }[] };
  const vm = snap.vms.find((v) => v.pid === child.pid);
  assert.ok(vm, r.stdout);
  assert.deepEqual(
    vm.vcpus.map((v) => v.index),
    [0, 1],
  );
  const tids = readdirSync(`/proc/${child.pid}/task`).map(Number);
  for (const v of vm.vcpus) {
    assert.ok(tids.includes(v.tid) && v.tid !== child.pid, `tid ${v.tid}`);
    // Each vCPU's KVM thread id is the one debugfs gives for it.
    assert.equal(Number(readFileSync(join(kvm, dir, `vcpu${v.index}`, "pid"), "utf8")), v.tid);
  }
  // Ctrl-C-like stop: vmtool ends cleanly with 130.
  child.kill("SIGINT");
  assert.equal(await exited, 130);
});
