// Text and JSON for `vmtool introspect`: hexdumps, decoded registers and segments, page walks, events, the
// `info` report. Pure functions of what the VMM answered.
import { hex } from "../../format.js";
import {
  CR0_BITS,
  CR4_BITS,
  EFER_BITS,
  RFLAGS_BITS,
  cpuMode,
  flagNames,
  formatVcpuState,
} from "../../vm/state-dump.js";
import type { Segment, Sregs } from "../../vm/vcpu-state.js";
import {
  DESCRIPTOR_NAMES,
  EVENT_NAMES,
  MEMORY_KINDS,
  PAGING_MODES,
  WALK_LEVEL_KINDS,
  WALK_STOP_REASONS,
} from "../../kvmi-client/ids.js";
import type { KvmiEvent, MemoryRange, RegistersReply, TranslationWalk } from "../../kvmi-client/wire.js";
import { sizeText } from "../../kvmi-client/ram.js";

const hex64 = (v: bigint) => hex(v, 16);

/** Lines of 16 bytes: address, bytes in two groups of 8, the printable ones (hexdump -C's format). */
export function hexdump(gpa: bigint, bytes: Uint8Array): string {
  const lines: string[] = [];
  for (let i = 0; i < bytes.length; i += 16) {
    const row = bytes.subarray(i, i + 16);
    const hx = Array.from(row, (b) => b.toString(16).padStart(2, "0"));
    const left = hx.slice(0, 8).join(" ");
    const right = hx.slice(8).join(" ");
    const text = Array.from(row, (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".")).join("");
    lines.push(
      `${(gpa + BigInt(i)).toString(16).padStart(16, "0")}  ${left.padEnd(23)}  ${right.padEnd(23)}  |${text}|`,
    );
  }
  return lines.join("\n") + (lines.length ? "\n" : "");
}

/** What a segment's hidden attributes say, in words: "code, 64-bit, execute/read, accessed". */
export function segmentKind(s: Segment): string {
  if (s.unusable) return "unusable";
  const t = s.type;
  const parts: string[] = [];
  if (s.s) {
    if (t & 8) {
      parts.push("code", s.l ? "64-bit" : s.db ? "32-bit" : "16-bit");
      parts.push(t & 2 ? "execute/read" : "execute-only");
      if (t & 4) parts.push("conforming");
    } else {
      parts.push("data", s.db ? "32-bit" : "16-bit");
      parts.push(t & 2 ? "read/write" : "read-only");
      if (t & 4) parts.push("expand-down");
    }
    if (t & 1) parts.push("accessed");
  } else {
    const sys: Record<number, string> = {
      1: "16-bit TSS (available)",
      2: "LDT",
      3: "16-bit TSS (busy)",
      4: "16-bit call gate",
      9: "TSS (available)",
      11: "TSS (busy)",
      12: "call gate",
      14: "interrupt gate",
      15: "trap gate",
    };
    parts.push(sys[t] ?? `system type ${t}`);
  }
  if (!s.present) parts.push("not present");
  parts.push(`DPL ${s.dpl}`);
  if (s.g) parts.push("4 KiB granularity");
  return parts.join(", ");
}

const SEGMENTS = ["cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt"] as const;

/** Names of the MSRs `regs` asks for. */
export const REGS_MSRS: readonly [number, string][] = [
  [0xc0000080, "EFER"],
  [0xc0000081, "STAR"],
  [0xc0000082, "LSTAR"],
  [0xc0000083, "CSTAR"],
  [0xc0000084, "SFMASK"],
  [0xc0000100, "FS_BASE"],
  [0xc0000101, "GS_BASE"],
  [0xc0000102, "KERNEL_GS_BASE"],
  [0x174, "SYSENTER_CS"],
  [0x175, "SYSENTER_ESP"],
  [0x176, "SYSENTER_EIP"],
  [0x1b, "APIC_BASE"],
  [0x277, "PAT"],
];
const MSR_NAMES = new Map(REGS_MSRS);

export function msrName(index: number): string {
  return MSR_NAMES.get(index) ?? hex(index);
}

const MODE_BITS: Record<number, string> = { 2: "16-bit", 4: "32-bit", 8: "64-bit" };

/** A vCPU's registers as text: mode, general registers, segments with their hidden parts, CRs, MSRs. */
export function regsText(vcpu: number, r: RegistersReply): string {
  const lines = [`vCPU ${vcpu}: ${MODE_BITS[r.mode] ?? `mode ${r.mode}`} addressing (KVMI mode ${r.mode})`];
  lines.push(...formatVcpuState(r.regs, r.sregs).map((l) => `  ${l}`));
  for (const n of SEGMENTS) lines.push(`  ${n.padEnd(3)} ${segmentKind(r.sregs[n])}`);
  if (r.msrs.length > 0)
    lines.push(
      ...r.msrs.map((m) => `  msr ${msrName(m.index).padEnd(15)} ${hex(m.index, 8)} = ${hex64(m.value)}`),
    );
  return lines.join("\n") + "\n";
}

function segmentJson(s: Segment): Record<string, unknown> {
  return { ...s, kind: segmentKind(s) };
}

/** The same as JSON (64-bit values as hex strings). */
export function regsJson(vcpu: number, r: RegistersReply): Record<string, unknown> {
  const sregs: Record<string, unknown> = {};
  for (const n of SEGMENTS) sregs[n] = segmentJson(r.sregs[n]);
  for (const k of ["gdt", "idt", "cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apic_base"] as const)
    sregs[k] = r.sregs[k];
  return {
    vcpu,
    mode: r.mode,
    cpuMode: cpuMode(r.sregs),
    regs: r.regs,
    sregs,
    flags: {
      rflags: flagNames(r.regs.rflags, RFLAGS_BITS),
      cr0: flagNames(r.sregs.cr0, CR0_BITS),
      cr4: flagNames(r.sregs.cr4, CR4_BITS),
      efer: flagNames(r.sregs.efer, EFER_BITS),
    },
    msrs: Object.fromEntries(r.msrs.map((m) => [msrName(m.index), m.value])),
  };
}

const ENTRY_BITS: [number, string][] = [
  [0, "P"],
  [1, "RW"],
  [2, "US"],
  [3, "PWT"],
  [4, "PCD"],
  [5, "A"],
  [6, "D"],
  [7, "PS"],
  [8, "G"],
  [63, "NX"],
];

function nameOf(map: ReadonlyMap<number, string>, v: number, what: string): string {
  return map.get(v) ?? `${what} ${v}`;
}

/** The page walk, level by level. */
export function walkText(gva: bigint, vcpu: number, w: TranslationWalk): string {
  const lines = [`${hex(gva)} on vCPU ${vcpu}: paging ${nameOf(PAGING_MODES, w.mode, "mode")}`];
  for (const l of w.levels) {
    const flags = flagNames(l.entryValue, ENTRY_BITS);
    lines.push(
      `  ${nameOf(WALK_LEVEL_KINDS, l.kind, "level").padEnd(6)} at ${hex(l.entryGpa, 8)} = ${hex64(l.entryValue)} [${flags.join(" ") || "-"}]`,
    );
  }
  lines.push(
    w.gpa === undefined
      ? `  no translation: ${nameOf(WALK_STOP_REASONS, w.stopReason, "stop reason")}`
      : `  -> ${hex(w.gpa)}`,
  );
  return lines.join("\n") + "\n";
}

export function walkJson(gva: bigint, vcpu: number, w: TranslationWalk): Record<string, unknown> {
  return {
    gva,
    vcpu,
    mode: w.mode,
    modeName: PAGING_MODES.get(w.mode) ?? null,
    gpa: w.gpa ?? null,
    stopReason: w.stopReason,
    stop: WALK_STOP_REASONS.get(w.stopReason) ?? null,
    levels: w.levels.map((l) => ({
      kind: l.kind,
      name: WALK_LEVEL_KINDS.get(l.kind) ?? null,
      entryGpa: l.entryGpa,
      entryValue: l.entryValue,
      flags: flagNames(l.entryValue, ENTRY_BITS),
    })),
  };
}

export function memoryMapLines(map: readonly MemoryRange[]): string[] {
  return map.map(
    (r) =>
      `  ${hex(r.gpa, 8)}-${hex(r.gpa + r.size - 1n, 8)}  ${nameOf(MEMORY_KINDS, r.kind, "kind").padEnd(8)} ${sizeText(r.size)}`,
  );
}

/** What an event says, beyond its kind and vCPU. */
export function eventDetails(ev: KvmiEvent): Record<string, unknown> {
  switch (ev.kind) {
    case "cr":
      return { cr: ev.cr, old: ev.oldValue, new: ev.newValue };
    case "msr":
      return { msr: hex(ev.msr), name: msrName(ev.msr), old: ev.oldValue, new: ev.newValue };
    case "breakpoint":
      return { gpa: ev.gpa, insnLen: ev.insnLen };
    case "pf":
      return { gva: ev.gva, gpa: ev.gpa, access: accessText(ev.access) };
    case "trap":
      return { vector: ev.vector, errorCode: ev.errorCode, cr2: ev.cr2 };
    case "descriptor":
      return { descriptor: DESCRIPTOR_NAMES.get(ev.descriptor) ?? ev.descriptor, write: ev.write };
    case "singlestep":
      return { failed: ev.failed };
    case "cpuid":
      return { function: ev.function, index: ev.index, insnLength: ev.insnLength };
    default:
      return {};
  }
}

function accessText(a: number): string {
  return (a & 1 ? "r" : "-") + (a & 2 ? "w" : "-") + (a & 4 ? "x" : "-");
}

function value(v: unknown): string {
  if (typeof v === "bigint") return hex(v);
  if (typeof v === "number") return String(v);
  if (typeof v === "boolean") return v ? "yes" : "no";
  return typeof v === "string" ? v : JSON.stringify(v);
}

/** One line per event: "vCPU 0 breakpoint main rip=0x100123 gpa=0x100123 -> continue". */
export function eventLine(
  ev: KvmiEvent,
  extra: { label?: string; reply?: string; note?: string } = {},
): string {
  const details = Object.entries(eventDetails(ev))
    .filter(([k]) => k !== "insnLen")
    .map(([k, v]) => `${k}=${value(v)}`);
  return (
    [
      `vCPU ${ev.vcpu}`,
      EVENT_NAMES.get(ev.id)?.toLowerCase() ?? ev.kind,
      ...(extra.label ? [extra.label] : []),
      `rip=${hex(ev.regs.rip)}`,
      ...details,
    ].join(" ") +
    (extra.note ? ` (${extra.note})` : "") +
    (extra.reply ? ` -> ${extra.reply}` : "")
  );
}

export function eventJson(ev: KvmiEvent, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    event: ev.kind,
    vcpu: ev.vcpu,
    seq: ev.seq,
    mode: ev.mode,
    rip: ev.regs.rip,
    cr3: ev.sregs.cr3,
    ...eventDetails(ev),
    ...extra,
  };
}

export function cpuModeOf(sregs: Sregs): string {
  return cpuMode(sregs);
}
