// The C reproducer behind the UART self-test guest's IRET-free interrupt return (docs/devices.md): on the
// kvm_pvm backend a 32-bit protected-mode IRET fails in the host's instruction emulator; POPF + RET works
// everywhere. Compiled with gcc and run against this machine's /dev/kvm.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ROOT } from "../helpers/paths.js";

test("protected-mode IRET: emulation failure under kvm_pvm, fine on hardware; POPF+RET fine on both", () => {
  const dir = mkdtempSync(join(tmpdir(), "vmtool-iret-"));
  try {
    const exe = join(dir, "iret-protected");
    execFileSync("gcc", ["-O2", "-o", exe, join(ROOT, "test", "devices", "repro", "iret-protected.c")]);
    const run = (variant: string) => execFileSync(exe, [variant], { encoding: "utf8" }).trim();
    assert.equal(run("popf"), "io 0xf4", "the IRET-free return reaches the OUT");
    const emulating = existsSync("/sys/module/kvm_pvm");
    assert.equal(run("iret"), emulating ? "internal-error 1" : "io 0xf4");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
