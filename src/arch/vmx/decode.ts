// Decoding of the VMX capability MSRs (IA32_VMX_BASIC 0x480 ... IA32_VMX_EXIT_CTLS2 0x493) and
// IA32_FEATURE_CONTROL (0x3A), field by field. Source: Intel SDM Vol. 3D, Appendix A "VMX Capability Reporting
// Facility" (A.1-A.11) and Vol. 3C chapter 25 "VM-execution/exit/entry control fields" for the control names;
// IA32_FEATURE_CONTROL: SDM Vol. 4 (MSR table) and Vol. 3C 24.7 "Enabling and entering VMX operation".
// One decoder serves `vmtool vmx`, the observer (vmx-basic of the module) and `vmtool explain msr`.
import { hex } from "../../format.js";

/** How a VM-execution/exit/entry control may be set (the words QEMU's vmxcap prints). */
export type ControlSetting = "no" | "yes" | "forced" | "default";

export interface DecodedField {
  name: string;
  bit?: number;
  bits?: [number, number];
  /** A control: one of ControlSetting; a flag: boolean; a range: number; an enumeration: text like "WB (6)". */
  value: string | number | boolean;
}

export interface DecodedGroup {
  name: string;
  /** The MSR index as "0x481". */
  msr: string;
  raw: bigint;
  fields: DecodedField[];
}

export const IA32_FEATURE_CONTROL = 0x3a;
export const IA32_VMX_BASIC = 0x480;

interface ControlMsr {
  kind: "control";
  name: string;
  /** The TRUE_* MSR that replaces this one's allowed-0 half when BASIC bit 55 is set. */
  true?: number;
  bits: Record<number, string>;
}
interface Allowed1Msr {
  kind: "allowed1";
  name: string;
  bits: Record<number, string>;
}
interface FieldsMsr {
  kind: "fields";
  name: string;
  decode: (v: bigint) => DecodedField[];
}
type MsrDef = ControlMsr | Allowed1Msr | FieldsMsr;

const MEMORY_TYPES: Record<number, string> = { 0: "UC", 1: "WC", 4: "WT", 5: "WP", 6: "WB" };
/** A memory-type code as "WB (6)". */
export function memoryType(n: number): string {
  return `${MEMORY_TYPES[n] ?? "reserved"} (${n})`;
}

const bit = (v: bigint, n: number): boolean => ((v >> BigInt(n)) & 1n) === 1n;
const bits = (v: bigint, lo: number, hi: number): number =>
  Number((v >> BigInt(lo)) & ((1n << BigInt(hi - lo + 1)) - 1n));
const flag = (v: bigint, n: number, name: string): DecodedField => ({ name, bit: n, value: bit(v, n) });
const range = (v: bigint, lo: number, hi: number, name: string): DecodedField => ({
  name,
  bits: [lo, hi],
  value: bits(v, lo, hi),
});

// Control names: SDM Vol. 3C, Tables 25-5 (pin-based), 25-6 (primary processor-based), 25-7 (secondary),
// 25-8 (tertiary), 25-13 (VM-exit), 25-14 (secondary VM-exit), 25-15 (VM-entry).
const PINBASED: Record<number, string> = {
  0: "External interrupt exiting",
  3: "NMI exiting",
  5: "Virtual NMIs",
  6: "Activate VMX-preemption timer",
  7: "Process posted interrupts",
};
const PROCBASED: Record<number, string> = {
  2: "Interrupt window exiting",
  3: "Use TSC offsetting",
  7: "HLT exiting",
  9: "INVLPG exiting",
  10: "MWAIT exiting",
  11: "RDPMC exiting",
  12: "RDTSC exiting",
  15: "CR3-load exiting",
  16: "CR3-store exiting",
  17: "Activate tertiary controls",
  19: "CR8-load exiting",
  20: "CR8-store exiting",
  21: "Use TPR shadow",
  22: "NMI-window exiting",
  23: "MOV-DR exiting",
  24: "Unconditional I/O exiting",
  25: "Use I/O bitmaps",
  27: "Monitor trap flag",
  28: "Use MSR bitmaps",
  29: "MONITOR exiting",
  30: "PAUSE exiting",
  31: "Activate secondary controls",
};
const PROCBASED2: Record<number, string> = {
  0: "Virtualize APIC accesses",
  1: "Enable EPT",
  2: "Descriptor-table exiting",
  3: "Enable RDTSCP",
  4: "Virtualize x2APIC mode",
  5: "Enable VPID",
  6: "WBINVD exiting",
  7: "Unrestricted guest",
  8: "APIC register emulation",
  9: "Virtual interrupt delivery",
  10: "PAUSE-loop exiting",
  11: "RDRAND exiting",
  12: "Enable INVPCID",
  13: "Enable VM functions",
  14: "VMCS shadowing",
  15: "Enable ENCLS exiting",
  16: "RDSEED exiting",
  17: "Enable PML",
  18: "EPT-violation #VE",
  19: "Conceal non-root operation from PT",
  20: "Enable XSAVES/XRSTORS",
  21: "PASID translation",
  22: "Mode-based execute control (XS/XU)",
  23: "Sub-page write permissions",
  24: "GPA translation for PT",
  25: "TSC scaling",
  26: "User wait and pause",
  27: "PCONFIG",
  28: "ENCLV exiting",
  30: "VMM bus-lock detection",
  31: "Instruction timeout",
};
const PROCBASED3: Record<number, string> = {
  0: "LOADIWKEY exiting",
  1: "Enable HLAT",
  2: "EPT paging-write control",
  3: "Guest-paging verification",
  4: "IPI virtualization",
  7: "Virtualize IA32_SPEC_CTRL",
};
const EXIT: Record<number, string> = {
  2: "Save debug controls",
  9: "Host address-space size",
  12: "Load IA32_PERF_GLOBAL_CTRL",
  15: "Acknowledge interrupt on exit",
  18: "Save IA32_PAT",
  19: "Load IA32_PAT",
  20: "Save IA32_EFER",
  21: "Load IA32_EFER",
  22: "Save VMX-preemption timer value",
  23: "Clear IA32_BNDCFGS",
  24: "Conceal VM exits from PT",
  25: "Clear IA32_RTIT_CTL",
  26: "Clear IA32_LBR_CTL",
  27: "Clear UINV",
  28: "Load CET state",
  29: "Load PKRS",
  30: "Save IA32_PERF_GLOBAL_CTRL",
  31: "Activate secondary controls",
};
const EXIT2: Record<number, string> = {};
const ENTRY: Record<number, string> = {
  2: "Load debug controls",
  9: "IA-32e mode guest",
  10: "Entry to SMM",
  11: "Deactivate dual-monitor treatment",
  13: "Load IA32_PERF_GLOBAL_CTRL",
  14: "Load IA32_PAT",
  15: "Load IA32_EFER",
  16: "Load IA32_BNDCFGS",
  17: "Conceal VM entries from PT",
  18: "Load IA32_RTIT_CTL",
  19: "Load UINV",
  20: "Load CET state",
  21: "Load guest IA32_LBR_CTL",
  22: "Load PKRS",
};

// CR0/CR4 bit names (SDM Vol. 3A 2.5) for the fixed-bit MSRs (Appendix A.7, A.8).
const CR0_BITS: Record<number, string> = {
  0: "PE",
  1: "MP",
  2: "EM",
  3: "TS",
  4: "ET",
  5: "NE",
  16: "WP",
  18: "AM",
  29: "NW",
  30: "CD",
  31: "PG",
};
const CR4_BITS: Record<number, string> = {
  0: "VME",
  1: "PVI",
  2: "TSD",
  3: "DE",
  4: "PSE",
  5: "PAE",
  6: "MCE",
  7: "PGE",
  8: "PCE",
  9: "OSFXSR",
  10: "OSXMMEXCPT",
  11: "UMIP",
  12: "LA57",
  13: "VMXE",
  14: "SMXE",
  16: "FSGSBASE",
  17: "PCIDE",
  18: "OSXSAVE",
  19: "KL",
  20: "SMEP",
  21: "SMAP",
  22: "PKE",
  23: "CET",
  24: "PKS",
  25: "UINTR",
};

function crBits(names: Record<number, string>, width: number): (v: bigint) => DecodedField[] {
  return (v) => {
    const out: DecodedField[] = [];
    for (let n = 0; n < width; n++) {
      if (names[n] !== undefined) out.push(flag(v, n, `${names[n]} (bit ${n})`));
      else if (bit(v, n)) out.push(flag(v, n, `bit ${n}`));
    }
    return out;
  };
}

const MSRS: Record<number, MsrDef> = {
  [IA32_FEATURE_CONTROL]: {
    kind: "fields",
    name: "Feature control",
    decode: (v) => [
      flag(v, 0, "Locked"),
      flag(v, 1, "VMX enabled inside SMX operation"),
      flag(v, 2, "VMX enabled outside SMX operation"),
      range(v, 8, 14, "SENTER local function enables"),
      flag(v, 15, "SENTER global enable"),
      flag(v, 17, "SGX launch control enable"),
      flag(v, 18, "SGX global enable"),
      flag(v, 20, "LMCE on"),
    ],
  },
  [IA32_VMX_BASIC]: {
    kind: "fields",
    name: "Basic VMX Information",
    decode: (v) => [
      range(v, 0, 30, "Revision"),
      range(v, 32, 44, "VMCS size (bytes)"),
      flag(v, 48, "VMCS restricted to 32 bit addresses"),
      flag(v, 49, "Dual-monitor support"),
      { name: "VMCS memory type", bits: [50, 53], value: memoryType(bits(v, 50, 53)) },
      flag(v, 54, "INS/OUTS instruction information"),
      flag(v, 55, "IA32_VMX_TRUE_*_CTLS support"),
      flag(v, 56, "Skip checks on event error code"),
    ],
  },
  0x481: { kind: "control", name: "pin-based controls", true: 0x48d, bits: PINBASED },
  0x482: { kind: "control", name: "primary processor-based controls", true: 0x48e, bits: PROCBASED },
  0x483: { kind: "control", name: "VM-Exit controls", true: 0x48f, bits: EXIT },
  0x484: { kind: "control", name: "VM-Entry controls", true: 0x490, bits: ENTRY },
  0x485: {
    kind: "fields",
    name: "Miscellaneous data",
    decode: (v) => [
      range(v, 0, 4, "VMX-preemption timer scale (log2 of TSC ticks per timer tick)"),
      flag(v, 5, "Store EFER.LMA into IA-32e mode guest control"),
      flag(v, 6, "HLT activity state"),
      flag(v, 7, "Shutdown activity state"),
      flag(v, 8, "Wait-for-SIPI activity state"),
      flag(v, 14, "PT in VMX operation"),
      flag(v, 15, "IA32_SMBASE support"),
      range(v, 16, 24, "Number of CR3-target values"),
      {
        name: "MSR-load/store count recommended maximum",
        bits: [25, 27],
        value: 512 * (bits(v, 25, 27) + 1),
      },
      flag(v, 28, "IA32_SMM_MONITOR_CTL[2] enable"),
      flag(v, 29, "VMWRITE to VM-exit information fields"),
      flag(v, 30, "Inject event with insn length=0"),
      range(v, 32, 63, "MSEG revision identifier"),
    ],
  },
  0x486: { kind: "fields", name: "CR0 bits fixed to 1", decode: crBits(CR0_BITS, 32) },
  0x487: {
    kind: "fields",
    name: "CR0 bits allowed to be 1",
    decode: crBits(CR0_BITS, 32),
  },
  0x488: { kind: "fields", name: "CR4 bits fixed to 1", decode: crBits(CR4_BITS, 32) },
  0x489: {
    kind: "fields",
    name: "CR4 bits allowed to be 1",
    decode: crBits(CR4_BITS, 32),
  },
  0x48a: {
    kind: "fields",
    name: "VMCS enumeration",
    decode: (v) => [range(v, 1, 9, "Highest index in VMCS field encodings")],
  },
  0x48b: { kind: "control", name: "secondary processor-based controls", bits: PROCBASED2 },
  0x48c: {
    kind: "fields",
    name: "VPID and EPT capabilities",
    decode: (v) => [
      flag(v, 0, "Execute-only EPT translations"),
      flag(v, 6, "Page-walk length 4"),
      flag(v, 7, "Page-walk length 5"),
      flag(v, 8, "Paging-structure memory type UC"),
      flag(v, 14, "Paging-structure memory type WB"),
      flag(v, 16, "2MB EPT pages"),
      flag(v, 17, "1GB EPT pages"),
      flag(v, 20, "INVEPT supported"),
      flag(v, 21, "EPT accessed and dirty flags"),
      flag(v, 22, "Advanced VM-exit information for EPT violations"),
      flag(v, 23, "Supervisor shadow-stack control"),
      flag(v, 25, "Single-context INVEPT"),
      flag(v, 26, "All-context INVEPT"),
      flag(v, 32, "INVVPID supported"),
      flag(v, 40, "Individual-address INVVPID"),
      flag(v, 41, "Single-context INVVPID"),
      flag(v, 42, "All-context INVVPID"),
      flag(v, 43, "Single-context-retaining-globals INVVPID"),
      range(v, 48, 53, "Maximum HLAT prefix size"),
    ],
  },
  0x491: {
    kind: "fields",
    name: "VM Functions",
    decode: (v) => {
      const out = [flag(v, 0, "EPTP Switching")];
      for (let n = 1; n < 64; n++) if (bit(v, n)) out.push(flag(v, n, `VM function ${n}`));
      return out;
    },
  },
  0x492: { kind: "allowed1", name: "tertiary processor-based controls", bits: PROCBASED3 },
  0x493: { kind: "allowed1", name: "secondary VM-Exit controls", bits: EXIT2 },
};

/** The TRUE_* MSRs, decoded as part of the control MSR they refine. */
const TRUE_OF: Record<number, number> = { 0x48d: 0x481, 0x48e: 0x482, 0x48f: 0x483, 0x490: 0x484 };

/** Every MSR index this decoder knows, in the order `vmtool vmx` prints them (vmxcap's order, then the rest). */
export const DECODED_MSRS: readonly number[] = [
  0x3a, 0x480, 0x481, 0x482, 0x48b, 0x492, 0x483, 0x493, 0x484, 0x485, 0x48c, 0x491, 0x486, 0x487, 0x488,
  0x489, 0x48a,
];

/** Indices `vmtool vmx` accepts in saved values: the VMX range 0x480-0x493 and IA32_FEATURE_CONTROL. */
export function isVmxCapabilityMsr(index: number): boolean {
  return index === IA32_FEATURE_CONTROL || (index >= 0x480 && index <= 0x493);
}

/** The name of the MSR a group is about ("IA32_VMX_PINBASED_CTLS"), for the explain tables and text output. */
export const VMX_MSR_NAMES: Readonly<Record<number, string>> = {
  0x3a: "IA32_FEATURE_CONTROL",
  0x480: "IA32_VMX_BASIC",
  0x481: "IA32_VMX_PINBASED_CTLS",
  0x482: "IA32_VMX_PROCBASED_CTLS",
  0x483: "IA32_VMX_EXIT_CTLS",
  0x484: "IA32_VMX_ENTRY_CTLS",
  0x485: "IA32_VMX_MISC",
  0x486: "IA32_VMX_CR0_FIXED0",
  0x487: "IA32_VMX_CR0_FIXED1",
  0x488: "IA32_VMX_CR4_FIXED0",
  0x489: "IA32_VMX_CR4_FIXED1",
  0x48a: "IA32_VMX_VMCS_ENUM",
  0x48b: "IA32_VMX_PROCBASED_CTLS2",
  0x48c: "IA32_VMX_EPT_VPID_CAP",
  0x48d: "IA32_VMX_TRUE_PINBASED_CTLS",
  0x48e: "IA32_VMX_TRUE_PROCBASED_CTLS",
  0x48f: "IA32_VMX_TRUE_EXIT_CTLS",
  0x490: "IA32_VMX_TRUE_ENTRY_CTLS",
  0x491: "IA32_VMX_VMFUNC",
  0x492: "IA32_VMX_PROCBASED_CTLS3",
  0x493: "IA32_VMX_EXIT_CTLS2",
};

/** Re-exported for the decoder's users (the one hex of src/format.ts). */
export { hex };

/**
 * The allowed-0/allowed-1 rule (SDM Vol. 3D A.3-A.5): bit X may be 1 when bit 32+X of the MSR is 1, and must be 1
 * when bit X is 1. With TRUE_* MSRs (BASIC bit 55), the TRUE MSR's low half replaces the plain one's: a bit that
 * the plain MSR forces but the TRUE MSR leaves free is a "default1" control ("default").
 */
export function controlSetting(n: number, plain: bigint, trueMsr?: bigint): ControlSetting {
  const allowed1 = bit(plain, 32 + n);
  if (!allowed1) return "no";
  const mustBe1 = bit(plain, n);
  if (trueMsr === undefined) return mustBe1 ? "forced" : "yes";
  if (bit(trueMsr, n)) return "forced";
  return mustBe1 ? "default" : "yes";
}

/** Decode one MSR (or, for a control MSR, the MSR with its TRUE_* refinement) from a map of saved values. */
export function decodeGroup(msrIndex: number, msrs: ReadonlyMap<number, bigint>): DecodedGroup {
  const index = TRUE_OF[msrIndex] ?? msrIndex;
  const def = MSRS[index];
  if (def === undefined)
    throw new Error(`MSR ${hex(msrIndex)} is not a VMX capability MSR this decoder knows`);
  const raw = msrs.get(index) ?? (index !== msrIndex ? msrs.get(msrIndex) : undefined);
  if (raw === undefined) throw new Error(`no value for MSR ${hex(index)} (${VMX_MSR_NAMES[index]})`);
  const group: DecodedGroup = { name: def.name, msr: hex(index), raw, fields: [] };
  if (def.kind === "fields") {
    group.fields = def.decode(raw);
  } else if (def.kind === "allowed1") {
    // A 64-bit allowed-1 MSR (A.3.4, A.4.2): each bit says whether the control may be 1; none is forced.
    for (let n = 0; n < 64; n++) {
      const name = def.bits[n];
      const allowed = bit(raw, n);
      if (name !== undefined || allowed)
        group.fields.push({ name: name ?? `bit ${n}`, bit: n, value: allowed ? "yes" : "no" });
    }
  } else {
    const basic = msrs.get(IA32_VMX_BASIC);
    const trueIdx = def.true;
    const trueVal =
      trueIdx !== undefined && basic !== undefined && bit(basic, 55) ? msrs.get(trueIdx) : undefined;
    for (let n = 0; n < 32; n++) {
      const name = def.bits[n];
      const setting = controlSetting(n, raw, trueVal);
      // Unnamed bits are shown only when they are not plain "no" (a reserved default1 bit, or a future control).
      if (name !== undefined || setting !== "no")
        group.fields.push({ name: name ?? `bit ${n}`, bit: n, value: setting });
    }
  }
  return group;
}

/** Decode every known MSR present in `msrs`, in vmxcap's order. */
export function decodeAll(msrs: ReadonlyMap<number, bigint>): DecodedGroup[] {
  return DECODED_MSRS.filter((i) => msrs.has(i)).map((i) => decodeGroup(i, msrs));
}
