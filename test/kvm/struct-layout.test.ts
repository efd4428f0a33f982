// Every struct layout declared in src/kvm/structs.ts, checked against gcc's sizeof/offsetof on <linux/kvm.h>.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ALL_LAYOUTS } from "../../src/kvm/structs.js";

// Union members of kvm_run are reached through the run struct in C.
function cExpr(layoutName: string): { type: string; prefix: string } {
  if (layoutName.startsWith("kvm_run."))
    return { type: "struct kvm_run", prefix: layoutName.slice("kvm_run.".length) + "." };
  return { type: `struct ${layoutName}`, prefix: "" };
}

// Where our field name is not the C member path (anonymous unions, nested arch structs).
const C_MEMBER: Record<string, string> = {
  "kvm_run.exit": "io",
  "kvm_guest_debug.debugreg": "arch.debugreg",
  "kvm_xcrs.xcrs": "xcrs",
};

test("struct layouts match gcc's offsetof/sizeof on <linux/kvm.h>", () => {
  const lines: string[] = [
    "#include <stdio.h>",
    "#include <stddef.h>",
    "#include <linux/kvm.h>",
    "int main(void) {",
  ];
  const expected: string[] = [];
  for (const l of ALL_LAYOUTS) {
    const { type, prefix } = cExpr(l.name);
    if (!prefix) {
      lines.push(`printf("%s size %zu\\n", "${l.name}", sizeof(${type}));`);
      expected.push(`${l.name} size ${l.size}`);
    }
    for (const [f, info] of Object.entries(l.fields)) {
      const base = prefix ? `offsetof(${type}, ${prefix.slice(0, -1)})` : "0";
      const member = C_MEMBER[`${l.name}.${f}`] ?? f;
      lines.push(
        `printf("%s.%s %zu\\n", "${l.name}", "${f}", offsetof(${type}, ${prefix}${member}) - ${base});`,
      );
      expected.push(`${l.name}.${f} ${info.offset}`);
    }
  }
  lines.push("return 0; }");
  const dir = mkdtempSync(join(tmpdir(), "vmtool-layout-"));
  try {
    writeFileSync(join(dir, "l.c"), lines.join("\n"));
    execFileSync("gcc", ["-o", join(dir, "l"), join(dir, "l.c")]);
    const out = execFileSync(join(dir, "l"), { encoding: "utf8" }).trim().split("\n");
    assert.deepEqual(out, expected);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
