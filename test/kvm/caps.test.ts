// The KVM_CAP_* table and the ioctl numbers, checked against the installed kernel headers with gcc.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KVM_CAP } from "../../src/kvm/caps.js";
import { KVM } from "../../src/kvm/ioctls.js";

function runC(body: string): string {
  const dir = mkdtempSync(join(tmpdir(), "vmtool-caps-"));
  try {
    writeFileSync(
      join(dir, "c.c"),
      `#include <stdio.h>\n#include <linux/kvm.h>\nint main(void){${body}return 0;}`,
    );
    execFileSync("gcc", ["-o", join(dir, "c"), join(dir, "c.c")]);
    return execFileSync(join(dir, "c"), { encoding: "utf8" });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test("KVM_CAP_* numbers equal the header's", () => {
  const names = Object.keys(KVM_CAP);
  assert.ok(names.length > 150, `only ${names.length} capabilities`);
  const out = runC(names.map((n) => `printf("%s %d\\n", "${n}", KVM_CAP_${n});`).join(""));
  const want = names.map((n) => `${n} ${KVM_CAP[n]}`).join("\n");
  assert.equal(out.trim(), want);
});

test("ioctl numbers equal the header's", () => {
  const names = Object.keys(KVM) as (keyof typeof KVM)[];
  const out = runC(names.map((n) => `printf("%s %lu\\n", "${n}", (unsigned long)KVM_${n});`).join(""));
  const want = names.map((n) => `${n} ${KVM[n]}`).join("\n");
  assert.equal(out.trim(), want);
});
