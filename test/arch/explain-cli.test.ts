// `vmtool explain` lookups through the real command, and its bad-input handling.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { CLI } from "../helpers/paths.js";

const vmtool = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8" });
const json = (...args: string[]) => {
  const r = vmtool(...args, "--json");
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
};

test("explain exit: by number across the three tables, by name, with the failed-entry bit", () => {
  const hits = json("explain", "exit", "48");
  assert.deepEqual(
    hits.map((h: { table: string; name: string }) => `${h.table}:${h.name}`),
    ["vmx:EPT_VIOLATION", "svm:WRITE_DR0"],
  );
  assert.deepEqual(
    json("explain", "exit", "hlt").map((h: { table: string; number: number }) => `${h.table}:${h.number}`),
    ["vmx:12", "svm:120", "kvm:5"],
  );
  assert.equal(json("explain", "exit", "0x80000021", "--table", "vmx")[0].name, "INVALID_STATE");
  assert.equal(json("explain", "exit", "KVM_EXIT_MMIO")[0].number, 6);
  assert.equal(json("explain", "exit", "0x400", "--table", "svm")[0].name, "NPF");
});

test("explain vmcs: an encoding decoded, a name, a high access, a group", () => {
  const a = json("explain", "vmcs", "0x4402");
  assert.equal(a.field.name, "VM_EXIT_REASON");
  assert.deepEqual(
    [a.decoded.access, a.decoded.index, a.decoded.type, a.decoded.width],
    ["full", 1, "VM-exit information", "32-bit"],
  );
  assert.equal(json("explain", "vmcs", "guest_rip").decoded.encoding, 0x681e);
  const hi = json("explain", "vmcs", "0x201b");
  assert.equal(hi.field.name, "EPT_POINTER");
  assert.equal(hi.decoded.access, "high");
  const g = json("explain", "vmcs", "--group", "guest-state");
  assert.ok(g.fields.some((f: { name: string }) => f.name === "GUEST_CR3"));
  assert.ok(g.fields.every((f: { type: string }) => f.type === "guest state"));
  const unknown = json("explain", "vmcs", "0x7ffe");
  assert.equal(unknown.field, undefined);
});

test("explain vm-instruction-error, msr (with a value decoded), cpuid", () => {
  assert.match(json("explain", "vm-instruction-error", "7").description, /invalid control field/);
  const m = json("explain", "msr", "0x480", "0xda040000000004");
  assert.equal(m.name, "IA32_VMX_BASIC");
  assert.equal(m.decoded.fields[1].value, 1024);
  assert.equal(json("explain", "msr", "vm_cr").index, "0xc0010114");
  const c = json("explain", "cpuid", "0x8000000a");
  assert.equal(c.registers.edx["0"], "NP (nested paging)");
});

test("explain: bad input gives one line and exit 2", () => {
  for (const args of [
    ["exit", "nonsense"],
    ["exit", "9999"],
    ["vmcs", "NOT_A_FIELD"],
    ["vmcs", "--group", "nope"],
    ["vmcs", "0x681e", "--group", "guest-state"],
    ["vmcs"],
    ["vm-instruction-error", "14"],
    ["vm-instruction-error", "x"],
    ["msr", "0x12345678"],
    ["msr", "0x10", "0x1"],
    ["msr", "0x480", "zz"],
    ["msr", "0x480", "0x1ffffffffffffffff"],
    ["cpuid", "7"],
    ["exit", "0x1ffffffffffffffff"],
  ]) {
    const r = vmtool("explain", ...args);
    assert.equal(r.status, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.equal(r.stderr.trim().split("\n").length, 1, args.join(" "));
  }
});
