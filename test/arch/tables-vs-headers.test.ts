// The reference tables in data/ against the kernel's own headers where those carry the same numbers
// (<asm/vmx.h> EXIT_REASON_*, <asm/svm.h> SVM_EXIT_*, <linux/kvm.h> KVM_EXIT_*, <asm/kvm_para.h> KVM_FEATURE_* and
// MSR_KVM_*), compiled with gcc; and the VMCS table's encodings against their own groups and widths.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync, rmSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  vmxExitReasons,
  svmExitCodes,
  kvmExitReasons,
  vmcsFields,
  msrTable,
  cpuidLeaves,
} from "../../src/arch/tables.js";
import { decodeVmcsEncoding, GROUP_TYPE } from "../../src/arch/vmcs.js";

function runC(includes: string[], body: string): string {
  const dir = mkdtempSync(join(tmpdir(), "vmtool-tables-"));
  try {
    writeFileSync(
      join(dir, "c.c"),
      `#include <stdio.h>\n${includes.map((i) => `#include <${i}>`).join("\n")}\nint main(void){${body}return 0;}`,
    );
    execFileSync("gcc", ["-o", join(dir, "c"), join(dir, "c.c")]);
    return execFileSync(join(dir, "c"), { encoding: "utf8" });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Every `#define PREFIXNAME` in a header (so the test also finds header entries missing from the table). */
function headerNames(header: string, prefix: string, dropSubValues = false): string[] {
  const path = header.startsWith("linux/")
    ? join("/usr/include", header)
    : join("/usr/include/x86_64-linux-gnu", header);
  const text = readFileSync(path, "utf8");
  const all = [...text.matchAll(new RegExp(`#define\\s+${prefix}(\\w+)\\s+(-?\\d|0x)`, "g"))].map(
    (m) => m[1],
  );
  // Leave out sub-values such as KVM_EXIT_IO_IN or KVM_EXIT_HYPERV_SYNIC (an entry's name plus a suffix).
  if (!dropSubValues) return all;
  return all.filter((h) => !all.some((o) => o !== h && h.startsWith(`${o}_`)) && !h.startsWith("IO_"));
}

function compare(prefix: string, include: string, entries: { name: string; number: number }[]): void {
  const body = entries
    .map((e) => `printf("%s %lld\\n", "${e.name}", (long long)${prefix}${e.name});`)
    .join("");
  const out = runC([include], body).trim().split("\n");
  for (const [i, line] of out.entries()) {
    const [name, n] = line.split(" ");
    assert.equal(Number(n), entries[i].number, `${prefix}${name}`);
  }
}

test("VMX exit reasons equal <asm/vmx.h> EXIT_REASON_*, and the table has every one of them", () => {
  const t = vmxExitReasons().entries;
  const names = new Set(t.map((e) => e.name));
  for (const h of headerNames("asm/vmx.h", "EXIT_REASON_"))
    assert.ok(names.has(h), `table lacks EXIT_REASON_${h}`);
  compare(
    "EXIT_REASON_",
    "asm/vmx.h",
    t.filter((e) => headerNames("asm/vmx.h", "EXIT_REASON_").includes(e.name)),
  );
});

test("SVM exit codes equal <asm/svm.h> SVM_EXIT_*, and the table has every one of them", () => {
  const t = svmExitCodes().entries;
  const inHeader = new Set(headerNames("asm/svm.h", "SVM_EXIT_"));
  const table = new Map(t.map((e) => [e.name, e]));
  // Header-only helpers that are not exit codes: EXCP_BASE/LAST_EXCP bound the exception range, SW is KVM-internal.
  for (const h of inHeader)
    if (!["EXCP_BASE", "LAST_EXCP", "SW", "REASONS"].includes(h))
      assert.ok(table.has(h), `table lacks SVM_EXIT_${h}`);
  compare(
    "SVM_EXIT_",
    "asm/svm.h",
    t.filter((e) => inHeader.has(e.name)),
  );
  const base = runC(["asm/svm.h"], 'printf("%d %d\\n", SVM_EXIT_EXCP_BASE, SVM_EXIT_LAST_EXCP);').trim();
  assert.equal(base, `${table.get("EXCP0")!.number} ${table.get("EXCP31")!.number}`);
});

test("KVM_EXIT_* equal <linux/kvm.h>, and the table has every one of them", () => {
  const t = kvmExitReasons().entries;
  const names = new Set(t.map((e) => e.name));
  const inHeader = headerNames("linux/kvm.h", "KVM_EXIT_", true);
  for (const h of inHeader) assert.ok(names.has(h), `table lacks KVM_EXIT_${h}`);
  // The table may know newer exits than the installed header (it follows the newest api.rst).
  compare(
    "KVM_EXIT_",
    "linux/kvm.h",
    t.filter((e) => inHeader.includes(e.name)),
  );
});

test("KVM paravirtual MSRs and CPUID feature bits equal <asm/kvm_para.h>", () => {
  const kvmMsrs = msrTable().entries.filter((e) => e.name.startsWith("KVM_"));
  assert.equal(kvmMsrs.length, headerNames("asm/kvm_para.h", "MSR_KVM_").length);
  compare(
    "MSR_",
    "asm/kvm_para.h",
    kvmMsrs.map((e) => ({ name: e.name, number: e.index })),
  );
  const bits = cpuidLeaves().entries.find((e) => e.leaf === 0x40000001)!.registers.eax!;
  const feats = Object.entries(bits).map(([b, name]) => ({ name, number: Number(b) }));
  assert.equal(feats.length, headerNames("asm/kvm_para.h", "KVM_FEATURE_").length);
  compare("KVM_FEATURE_", "asm/kvm_para.h", feats);
});

test("every VMCS field's encoding agrees with its group and name (SDM Appendix B layout)", () => {
  const t = vmcsFields();
  assert.deepEqual(Object.keys(t.groups).sort(), [
    "guest-state",
    "host-state",
    "vm-entry-control",
    "vm-execution-control",
    "vm-exit-control",
    "vm-exit-information",
  ]);
  const seen = new Set<number>();
  for (const f of t.entries) {
    assert.ok(!seen.has(f.encoding), `duplicate encoding 0x${f.encoding.toString(16)}`);
    seen.add(f.encoding);
    const d = decodeVmcsEncoding(f.encoding);
    assert.equal(d.type, GROUP_TYPE[f.group], `${f.name}: type`);
    assert.equal(d.access, "full", f.name);
    assert.equal(d.reservedBitsSet, false, f.name);
    if (/_SELECTOR$/.test(f.name)) assert.equal(d.width, "16-bit", f.name);
    if (/_(LIMIT|AR_BYTES)$/.test(f.name)) assert.equal(d.width, "32-bit", f.name);
    if (/^(GUEST|HOST)_(CR[034]|RSP|RIP|RFLAGS|\w+_BASE)$/.test(f.name))
      assert.equal(d.width, "natural width", f.name);
    if (
      /(_ADDR|_ADDRESS|BITMAP_[AB]|BITMAP\d|_POINTER|_PDPTR\d)$/.test(f.name) &&
      f.name !== "GUEST_LINEAR_ADDRESS"
    )
      assert.equal(d.width, "64-bit", f.name);
    if (f.name === "EXCEPTION_BITMAP") assert.equal(d.width, "32-bit", f.name);
  }
  const rip = decodeVmcsEncoding(0x681e);
  assert.deepEqual(rip, {
    encoding: 0x681e,
    access: "full",
    index: 15,
    type: "guest state",
    width: "natural width",
    reservedBitsSet: false,
  });
  assert.equal(decodeVmcsEncoding(0x2001).access, "high");
});
