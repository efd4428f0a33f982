// A human-readable dump of a vCPU's state, printed when the guest faults (and, later, by introspection):
// general registers, segment registers, descriptor tables, control registers and pending events.
import type { Regs, Segment, Sregs, VcpuEvents } from "./vcpu.js";
import { SEGMENT_NAMES } from "./vcpu.js";
import { hex } from "../format.js";

const hex64 = (v: bigint) => hex(v, 16);

export const RFLAGS_BITS: [number, string][] = [
  [0, "CF"],
  [2, "PF"],
  [4, "AF"],
  [6, "ZF"],
  [7, "SF"],
  [8, "TF"],
  [9, "IF"],
  [10, "DF"],
  [11, "OF"],
  [14, "NT"],
  [16, "RF"],
  [17, "VM"],
  [18, "AC"],
  [21, "ID"],
];
export const CR0_BITS: [number, string][] = [
  [0, "PE"],
  [1, "MP"],
  [2, "EM"],
  [3, "TS"],
  [4, "ET"],
  [5, "NE"],
  [16, "WP"],
  [18, "AM"],
  [29, "NW"],
  [30, "CD"],
  [31, "PG"],
];
export const CR4_BITS: [number, string][] = [
  [0, "VME"],
  [1, "PVI"],
  [2, "TSD"],
  [3, "DE"],
  [4, "PSE"],
  [5, "PAE"],
  [6, "MCE"],
  [7, "PGE"],
  [9, "OSFXSR"],
  [10, "OSXMMEXCPT"],
  [13, "VMXE"],
  [18, "OSXSAVE"],
];
export const EFER_BITS: [number, string][] = [
  [0, "SCE"],
  [8, "LME"],
  [10, "LMA"],
  [11, "NXE"],
  [12, "SVME"],
];

/** The names of the bits set in `v` (for a register's flags). */
export function flagNames(v: bigint, bits: [number, string][]): string[] {
  return bits.filter(([b]) => (v >> BigInt(b)) & 1n).map(([, n]) => n);
}

function flags(v: bigint, bits: [number, string][]): string {
  const set = flagNames(v, bits);
  return set.length ? set.join(" ") : "-";
}

function segment(name: string, s: Segment): string {
  return (
    `${name.padEnd(3)} sel=${hex(s.selector, 4)} base=${hex64(s.base)} limit=${hex(s.limit, 8)} ` +
    `type=${s.type.toString(16)} p=${s.present} dpl=${s.dpl} db=${s.db} s=${s.s} l=${s.l} g=${s.g}` +
    (s.unusable ? " unusable" : "")
  );
}

/** The cpu mode the segment and control registers describe. */
export function cpuMode(sregs: Sregs): string {
  if ((sregs.cr0 & 1n) === 0n) return "real mode";
  if (sregs.efer & (1n << 10n)) return sregs.cs.l ? "64-bit long mode" : "compatibility mode";
  return (sregs.cr0 >> 31n) & 1n ? "32-bit protected mode, paging" : "32-bit protected mode";
}

/** Lines of the dump (no trailing newline). */
export function formatVcpuState(regs: Regs, sregs: Sregs, events?: VcpuEvents): string[] {
  const r = regs;
  const lines = [
    `cpu mode: ${cpuMode(sregs)}`,
    `rip=${hex64(r.rip)} rflags=${hex(r.rflags, 8)} [${flags(r.rflags, RFLAGS_BITS)}]`,
    `rax=${hex64(r.rax)} rbx=${hex64(r.rbx)} rcx=${hex64(r.rcx)} rdx=${hex64(r.rdx)}`,
    `rsi=${hex64(r.rsi)} rdi=${hex64(r.rdi)} rsp=${hex64(r.rsp)} rbp=${hex64(r.rbp)}`,
    `r8 =${hex64(r.r8)} r9 =${hex64(r.r9)} r10=${hex64(r.r10)} r11=${hex64(r.r11)}`,
    `r12=${hex64(r.r12)} r13=${hex64(r.r13)} r14=${hex64(r.r14)} r15=${hex64(r.r15)}`,
    ...SEGMENT_NAMES.map((n) => segment(n, sregs[n])),
    `gdt base=${hex64(sregs.gdt.base)} limit=${hex(sregs.gdt.limit, 4)}   idt base=${hex64(sregs.idt.base)} limit=${hex(sregs.idt.limit, 4)}`,
    `cr0=${hex(sregs.cr0, 8)} [${flags(sregs.cr0, CR0_BITS)}] cr2=${hex64(sregs.cr2)} cr3=${hex64(sregs.cr3)}`,
    `cr4=${hex(sregs.cr4, 8)} [${flags(sregs.cr4, CR4_BITS)}] cr8=${hex(sregs.cr8)} efer=${hex(sregs.efer, 4)} [${flags(sregs.efer, EFER_BITS)}]`,
  ];
  if (events) {
    const e = events;
    lines.push(
      `events: exception injected=${e.exception.injected} pending=${e.exception.pending} nr=${e.exception.nr}` +
        (e.exception.hasErrorCode ? ` error_code=${hex(e.exception.errorCode)}` : "") +
        `; interrupt injected=${e.interrupt.injected} nr=${e.interrupt.nr} shadow=${e.interrupt.shadow}` +
        `; nmi injected=${e.nmi.injected} pending=${e.nmi.pending} masked=${e.nmi.masked}`,
    );
  }
  return lines;
}
