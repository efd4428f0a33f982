// The VMX capability decoder against MSR values of two real Intel CPUs (fixtures in test/arch/fixtures, each with
// its source), field by field; the allowed-0/allowed-1 rule's four outcomes; the observer's single-MSR call.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { ROOT } from "../helpers/paths.js";
import { decodeGroup, decodeAll, controlSetting, type DecodedGroup } from "../../src/arch/vmx/decode.js";
import { readMsrFile } from "../../src/arch/vmx/msr-file.js";

const fixture = (name: string) => readMsrFile(join(ROOT, "test", "arch", "fixtures", name));
const coffee = fixture("intel-coffee-lake-i7-9750h.msr");
const ivy = fixture("intel-ivy-bridge.msr");

function fields(g: DecodedGroup): Record<string, string | number | boolean> {
  return Object.fromEntries(g.fields.map((f) => [f.name, f.value]));
}
function check(g: DecodedGroup, want: Record<string, string | number | boolean>): void {
  const got = fields(g);
  for (const [k, v] of Object.entries(want)) assert.equal(got[k], v, `${g.name} / ${k}`);
}

test("IA32_VMX_BASIC of Coffee Lake: revision, size, memory type, TRUE controls", () => {
  const g = decodeGroup(0x480, coffee);
  assert.equal(g.msr, "0x480");
  assert.equal(g.raw, 0xda040000000004n);
  assert.deepEqual(g.fields, [
    { name: "Revision", bits: [0, 30], value: 4 },
    { name: "VMCS size (bytes)", bits: [32, 44], value: 1024 },
    { name: "VMCS restricted to 32 bit addresses", bit: 48, value: false },
    { name: "Dual-monitor support", bit: 49, value: true },
    { name: "VMCS memory type", bits: [50, 53], value: "WB (6)" },
    { name: "INS/OUTS instruction information", bit: 54, value: true },
    { name: "IA32_VMX_TRUE_*_CTLS support", bit: 55, value: true },
    { name: "Skip checks on event error code", bit: 56, value: false },
  ]);
  check(decodeGroup(0x480, ivy), { Revision: 0x10, "VMCS size (bytes)": 1024 });
});

test("the observer's call: vmx-basic alone in the map", () => {
  const g = decodeGroup(0x480, new Map([[0x480, 0xda040000000004n]]));
  check(g, { Revision: 4, "VMCS memory type": "WB (6)" });
  assert.throws(() => decodeGroup(0x481, new Map([[0x480, 1n]])), /no value for MSR 0x481/);
});

test("pin-based controls: yes / no / forced (default1 bits 1, 2, 4)", () => {
  const g = decodeGroup(0x481, coffee);
  check(g, {
    "External interrupt exiting": "yes",
    "NMI exiting": "yes",
    "Virtual NMIs": "yes",
    "Activate VMX-preemption timer": "yes",
    "Process posted interrupts": "no", // VirtualBox: POSTED_INT (must be cleared)
    "bit 1": "forced",
    "bit 2": "forced",
    "bit 4": "forced",
  });
});

test("primary processor-based controls: CR3-load/store exiting are 'default' (forced by plain, free in TRUE)", () => {
  const g = decodeGroup(0x482, coffee);
  check(g, {
    "Interrupt window exiting": "yes",
    "Use TSC offsetting": "yes",
    "HLT exiting": "yes",
    "INVLPG exiting": "yes",
    "MWAIT exiting": "yes",
    "RDPMC exiting": "yes",
    "RDTSC exiting": "yes",
    "CR3-load exiting": "default",
    "CR3-store exiting": "default",
    "Activate tertiary controls": "no",
    "CR8-load exiting": "yes",
    "CR8-store exiting": "yes",
    "Use TPR shadow": "yes",
    "NMI-window exiting": "yes",
    "MOV-DR exiting": "yes",
    "Unconditional I/O exiting": "yes",
    "Use I/O bitmaps": "yes",
    "Monitor trap flag": "yes",
    "Use MSR bitmaps": "yes",
    "MONITOR exiting": "yes",
    "PAUSE exiting": "yes",
    "Activate secondary controls": "yes",
    "bit 26": "forced",
  });
  // Without the TRUE MSRs (BASIC bit 55 clear) the same plain MSR forces them.
  const noTrue = new Map(coffee);
  noTrue.set(0x480, coffee.get(0x480)! & ~(1n << 55n));
  check(decodeGroup(0x482, noTrue), { "CR3-load exiting": "forced", "HLT exiting": "yes" });
});

test("secondary processor-based controls of Coffee Lake and Ivy Bridge", () => {
  check(decodeGroup(0x48b, coffee), {
    "Virtualize APIC accesses": "yes",
    "Enable EPT": "yes",
    "Descriptor-table exiting": "yes",
    "Enable RDTSCP": "yes",
    "Virtualize x2APIC mode": "yes",
    "Enable VPID": "yes",
    "WBINVD exiting": "yes",
    "Unrestricted guest": "yes",
    "APIC register emulation": "no",
    "Virtual interrupt delivery": "no",
    "PAUSE-loop exiting": "yes",
    "RDRAND exiting": "yes",
    "Enable INVPCID": "yes",
    "Enable VM functions": "yes",
    "VMCS shadowing": "no",
    "Enable ENCLS exiting": "yes",
    "RDSEED exiting": "yes",
    "Enable PML": "yes",
    "EPT-violation #VE": "yes",
    "Conceal non-root operation from PT": "yes",
    "Enable XSAVES/XRSTORS": "yes",
    "PASID translation": "no",
    "Mode-based execute control (XS/XU)": "yes",
    "Sub-page write permissions": "no",
    "GPA translation for PT": "no",
    "TSC scaling": "no",
    "User wait and pause": "no",
    "ENCLV exiting": "no",
  });
  check(decodeGroup(0x48b, ivy), {
    "Unrestricted guest": "yes",
    "APIC register emulation": "no",
    "PAUSE-loop exiting": "no",
    "RDRAND exiting": "yes",
    "Enable INVPCID": "no",
    "Enable VM functions": "no",
  });
});

test("VM-exit and VM-entry controls", () => {
  check(decodeGroup(0x483, coffee), {
    "Save debug controls": "default",
    "Host address-space size": "yes",
    "Load IA32_PERF_GLOBAL_CTRL": "yes",
    "Acknowledge interrupt on exit": "yes",
    "Save IA32_PAT": "yes",
    "Load IA32_PAT": "yes",
    "Save IA32_EFER": "yes",
    "Load IA32_EFER": "yes",
    "Save VMX-preemption timer value": "yes",
    "Clear IA32_BNDCFGS": "yes",
    "Conceal VM exits from PT": "yes",
    "Clear IA32_RTIT_CTL": "no",
    "Activate secondary controls": "no",
  });
  check(decodeGroup(0x483, ivy), { "Clear IA32_BNDCFGS": "no", "Save VMX-preemption timer value": "yes" });
  check(decodeGroup(0x484, coffee), {
    "Load debug controls": "default",
    "IA-32e mode guest": "yes",
    "Entry to SMM": "yes",
    "Deactivate dual-monitor treatment": "yes",
    "Load IA32_PERF_GLOBAL_CTRL": "yes",
    "Load IA32_PAT": "yes",
    "Load IA32_EFER": "yes",
    "Load IA32_BNDCFGS": "yes",
    "Conceal VM entries from PT": "yes",
    "Load IA32_RTIT_CTL": "no",
    "bit 12": "forced",
  });
  check(decodeGroup(0x484, ivy), { "Load IA32_BNDCFGS": "no", "Load IA32_EFER": "yes" });
});

test("MISC, VMCS_ENUM, EPT/VPID, VMFUNC, FEATURE_CONTROL, CR fixed bits", () => {
  check(decodeGroup(0x485, coffee), {
    "VMX-preemption timer scale (log2 of TSC ticks per timer tick)": 7,
    "Store EFER.LMA into IA-32e mode guest control": true,
    "HLT activity state": true,
    "Shutdown activity state": true,
    "Wait-for-SIPI activity state": true,
    "PT in VMX operation": true,
    "IA32_SMBASE support": true,
    "Number of CR3-target values": 4,
    "MSR-load/store count recommended maximum": 512,
    "IA32_SMM_MONITOR_CTL[2] enable": true,
    "VMWRITE to VM-exit information fields": true,
    "Inject event with insn length=0": true,
    "MSEG revision identifier": 0,
  });
  check(decodeGroup(0x485, ivy), {
    "VMX-preemption timer scale (log2 of TSC ticks per timer tick)": 5,
    "PT in VMX operation": false,
    "VMWRITE to VM-exit information fields": false,
    "Inject event with insn length=0": false,
  });
  check(decodeGroup(0x48a, coffee), { "Highest index in VMCS field encodings": 0x17 });
  check(decodeGroup(0x48a, ivy), { "Highest index in VMCS field encodings": 0x15 });
  check(decodeGroup(0x48c, coffee), {
    "Execute-only EPT translations": true,
    "Page-walk length 4": true,
    "Page-walk length 5": false,
    "Paging-structure memory type UC": true,
    "Paging-structure memory type WB": true,
    "2MB EPT pages": true,
    "1GB EPT pages": true,
    "INVEPT supported": true,
    "EPT accessed and dirty flags": true,
    "Advanced VM-exit information for EPT violations": true,
    "Supervisor shadow-stack control": false,
    "Single-context INVEPT": true,
    "All-context INVEPT": true,
    "INVVPID supported": true,
    "Individual-address INVVPID": true,
    "Single-context INVVPID": true,
    "All-context INVVPID": true,
    "Single-context-retaining-globals INVVPID": true,
  });
  check(decodeGroup(0x48c, ivy), {
    "1GB EPT pages": false,
    "EPT accessed and dirty flags": false,
    "Advanced VM-exit information for EPT violations": false,
    "Single-context INVEPT": true,
  });
  check(decodeGroup(0x491, coffee), { "EPTP Switching": true });
  check(decodeGroup(0x3a, coffee), {
    Locked: true,
    "VMX enabled inside SMX operation": false,
    "VMX enabled outside SMX operation": true,
    "SGX launch control enable": true,
    "SGX global enable": false,
  });
  check(decodeGroup(0x3a, ivy), { Locked: true, "SGX launch control enable": false });
  check(decodeGroup(0x486, coffee), {
    "PE (bit 0)": true,
    "NE (bit 5)": true,
    "PG (bit 31)": true,
    "WP (bit 16)": false,
  });
  check(decodeGroup(0x489, coffee), {
    "VMXE (bit 13)": true,
    "UMIP (bit 11)": false,
    "FSGSBASE (bit 16)": true,
    "OSXSAVE (bit 18)": true,
    "SMEP (bit 20)": true,
    "SMAP (bit 21)": true,
    "PKE (bit 22)": false,
  });
});

test("the rule's four outcomes on synthetic values", () => {
  // bit 0: allowed1=0 -> no; bit 1: free -> yes; bit 2: forced in both -> forced; bit 3: forced only in plain.
  const plain = (0b1110n << 32n) | 0b1100n;
  const tru = (0b1110n << 32n) | 0b0100n;
  assert.deepEqual(
    [0, 1, 2, 3].map((n) => controlSetting(n, plain, tru)),
    ["no", "yes", "forced", "default"],
  );
  assert.deepEqual(
    [0, 1, 2, 3].map((n) => controlSetting(n, plain)),
    ["no", "yes", "forced", "forced"],
  );
});

test("decodeAll lists the groups in vmxcap's order, only for MSRs present", () => {
  assert.deepEqual(
    decodeAll(ivy).map((g) => g.msr),
    [
      "0x3a",
      "0x480",
      "0x481",
      "0x482",
      "0x48b",
      "0x483",
      "0x484",
      "0x485",
      "0x48c",
      "0x486",
      "0x487",
      "0x488",
      "0x489",
      "0x48a",
    ],
  );
  assert.ok(decodeAll(coffee).some((g) => g.msr === "0x491"));
});
