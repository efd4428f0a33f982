// What this host's kvm_pvm does with `vmtool run --kernel`: it accepts and starts Debian's kernel (vmtool
// refuses nothing a hardware KVM would boot), and an instruction its emulator cannot run (KVM_EXIT_INTERNAL_ERROR,
// emulation failure, what ends a stock kernel here) is reported with the instruction's bytes at RIP and a
// pointer to the docs. On a hardware backend the same guest instruction faults normally: only kvm_pvm runs this.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CLI } from "../helpers/paths.js";
import { busyboxInitramfs, debianKernel, kvmBackend, runCmd } from "./helpers.js";

const skip =
  kvmBackend() === "kvm_pvm" ? undefined : "asserts kvm_pvm's emulator; this host has another backend";
let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), "vmtool-pvm-"));
});
after(() => rmSync(dir, { recursive: true, force: true }));

test(
  "an instruction kvm_pvm cannot emulate in ring 0: its bytes at RIP and a pointer to docs/linux.md (status 4)",
  { skip },
  () => {
    // lock cmpxchg16b [rdi], what SLUB runs early in a Linux boot, then hlt.
    const guest = join(dir, "cx16.bin");
    writeFileSync(guest, Buffer.from([0xf0, 0x48, 0x0f, 0xc7, 0x0f, 0xf4]));
    const r = runCmd(process.execPath, [CLI, "run", "--mode", "long", guest], 30_000);
    assert.equal(r.status, 4, r.stderr);
    assert.match(
      r.stderr,
      /^vmtool: guest fault: KVM internal error \(KVM_EXIT_INTERNAL_ERROR\): suberror 1 \(emulation failure\): KVM could not emulate the instruction at RIP, bytes f0 48 0f c7 0f f4( [0-9a-f]{2})*$/m,
    );
    assert.match(r.stderr, /rip=0x0000000000100000/);
    assert.match(
      r.stderr,
      /^vmtool: KVM's instruction emulator cannot run that instruction.*docs\/linux\.md/m,
    );
  },
);

test(
  "Debian's kernel is accepted and started here (no refusal a hardware KVM would not make)",
  { skip },
  async () => {
    const initrd = join(dir, "initrd.cpio");
    writeFileSync(initrd, busyboxInitramfs("halt -f\n"));
    const child = spawn(process.execPath, [CLI, "run", "--kernel", debianKernel(), "--initrd", initrd], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stderr = "";
    let stopped = false;
    child.stderr.on("data", (b: Buffer) => {
      stderr += b.toString();
      // Once the summary is out the guest is running: stop it (a boot here never ends; docs/linux.md).
      if (!stopped && /^vmtool: Linux /m.test(stderr)) stopped = child.kill("SIGTERM");
    });
    const status = await new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    assert.match(stderr, /^vmtool: Linux 6\.\d+\.\d+\S*, bzImage, 256 MiB, 1 vCPU, initrd \d+\.\d MB$/m);
    assert.equal(status, 143, stderr);
    assert.match(stderr, /interrupted by SIGTERM/);
  },
);
