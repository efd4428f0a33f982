// Why the UART self-test guest (and every SDK interrupt handler) returns without IRET: the SDK's C reproducer
// (guest/repro/iret-protected.c), compiled with gcc and run against this machine's /dev/kvm. Under kvm_pvm a
// 32-bit protected-mode IRET fails in the host's instruction emulator; POPF + RET works on every backend.
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
    execFileSync("gcc", ["-O2", "-o", exe, join(ROOT, "guest", "repro", "iret-protected.c")]);
    const lines = execFileSync(exe, { encoding: "utf8" }).trim().split("\n");
    const emulating = existsSync("/sys/module/kvm_pvm");
    assert.deepEqual(lines, [
      emulating ? "iret:     KVM_EXIT_INTERNAL_ERROR suberror 1" : "iret:     halted (KVM_EXIT_HLT): ok",
      "popf/ret: halted (KVM_EXIT_HLT): ok",
    ]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
