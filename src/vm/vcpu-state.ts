// The vCPU state KVM hands over in its structs (kvm_regs, kvm_sregs, kvm_vcpu_events), decoded into plain
// objects and encoded back: used by Vcpu's own ioctls and by the VM-control core, whose ioctls a parked vCPU
// thread runs for it (src/debug/). 64-bit values are BigInt throughout.
import {
  kvm_dtable,
  kvm_regs,
  kvm_segment,
  kvm_sregs,
  kvm_vcpu_events,
  type RegName,
  type SegmentName,
} from "../kvm/structs.js";

export type Regs = Record<RegName, bigint>;
export const REG_NAMES = Object.keys(kvm_regs.off) as RegName[];
export const SEGMENT_NAMES: readonly SegmentName[] = ["cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt"];

export interface Segment {
  base: bigint;
  limit: number;
  selector: number;
  type: number;
  present: number;
  dpl: number;
  db: number;
  s: number;
  l: number;
  g: number;
  avl: number;
  unusable: number;
}
export interface DescriptorTable {
  base: bigint;
  limit: number;
}
export interface Sregs extends Record<SegmentName, Segment> {
  gdt: DescriptorTable;
  idt: DescriptorTable;
  cr0: bigint;
  cr2: bigint;
  cr3: bigint;
  cr4: bigint;
  cr8: bigint;
  efer: bigint;
  apic_base: bigint;
  /** Bitmap of a pending external interrupt (256 bits as four u64), as KVM reports it. */
  interrupt_bitmap: bigint[];
}

export interface VcpuEvents {
  exception: { injected: number; nr: number; hasErrorCode: number; pending: number; errorCode: number };
  interrupt: { injected: number; nr: number; soft: number; shadow: number };
  nmi: { injected: number; pending: number; masked: number };
  sipiVector: number;
  flags: number;
  tripleFaultPending: number;
}

/** kvm_regs → Regs. */
export function decodeRegs(b: Buffer): Regs {
  const r = {} as Regs;
  const off: Record<RegName, number> = kvm_regs.off;
  for (const n of REG_NAMES) r[n] = b.readBigUInt64LE(off[n]);
  return r;
}

/** Regs → kvm_regs (`b` is kvm_regs.size bytes). */
export function encodeRegs(regs: Regs, b: Buffer): void {
  const off: Record<RegName, number> = kvm_regs.off;
  for (const n of REG_NAMES) b.writeBigUInt64LE(BigInt.asUintN(64, regs[n]), off[n]);
}

const SREG_SCALARS = ["cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apic_base"] as const;

/** kvm_sregs → Sregs. */
export function decodeSregs(b: Buffer): Sregs {
  const o = kvm_sregs.off;
  const s = {} as Sregs;
  for (const n of SEGMENT_NAMES) s[n] = readSegment(b, o[n]);
  s.gdt = { base: b.readBigUInt64LE(o.gdt), limit: b.readUInt16LE(o.gdt + kvm_dtable.off.limit) };
  s.idt = { base: b.readBigUInt64LE(o.idt), limit: b.readUInt16LE(o.idt + kvm_dtable.off.limit) };
  for (const n of SREG_SCALARS) s[n] = b.readBigUInt64LE(o[n]);
  s.interrupt_bitmap = [0, 1, 2, 3].map((i) => b.readBigUInt64LE(o.interrupt_bitmap + 8 * i));
  return s;
}

/** Sregs → kvm_sregs (`b` is kvm_sregs.size bytes). */
export function encodeSregs(s: Sregs, b: Buffer): void {
  b.fill(0);
  const o = kvm_sregs.off;
  for (const n of SEGMENT_NAMES) writeSegment(b, o[n], s[n]);
  b.writeBigUInt64LE(BigInt.asUintN(64, s.gdt.base), o.gdt);
  b.writeUInt16LE(s.gdt.limit, o.gdt + kvm_dtable.off.limit);
  b.writeBigUInt64LE(BigInt.asUintN(64, s.idt.base), o.idt);
  b.writeUInt16LE(s.idt.limit, o.idt + kvm_dtable.off.limit);
  for (const n of SREG_SCALARS) b.writeBigUInt64LE(BigInt.asUintN(64, s[n]), o[n]);
  s.interrupt_bitmap.forEach((v, i) => b.writeBigUInt64LE(v, o.interrupt_bitmap + 8 * i));
}

/** kvm_vcpu_events → VcpuEvents. */
export function decodeEvents(b: Buffer): VcpuEvents {
  const o = kvm_vcpu_events.off;
  return {
    exception: {
      injected: b[o["exception.injected"]],
      nr: b[o["exception.nr"]],
      hasErrorCode: b[o["exception.has_error_code"]],
      pending: b[o["exception.pending"]],
      errorCode: b.readUInt32LE(o["exception.error_code"]),
    },
    interrupt: {
      injected: b[o["interrupt.injected"]],
      nr: b[o["interrupt.nr"]],
      soft: b[o["interrupt.soft"]],
      shadow: b[o["interrupt.shadow"]],
    },
    nmi: { injected: b[o["nmi.injected"]], pending: b[o["nmi.pending"]], masked: b[o["nmi.masked"]] },
    sipiVector: b.readUInt32LE(o.sipi_vector),
    flags: b.readUInt32LE(o.flags),
    tripleFaultPending: b[o["triple_fault.pending"]],
  };
}

/** VcpuEvents → kvm_vcpu_events; `flags` says which optional parts KVM should take. */
export function encodeEvents(ev: VcpuEvents, b: Buffer): void {
  b.fill(0);
  const o = kvm_vcpu_events.off;
  b[o["exception.injected"]] = ev.exception.injected;
  b[o["exception.nr"]] = ev.exception.nr;
  b[o["exception.has_error_code"]] = ev.exception.hasErrorCode;
  b[o["exception.pending"]] = ev.exception.pending;
  b.writeUInt32LE(ev.exception.errorCode >>> 0, o["exception.error_code"]);
  b[o["interrupt.injected"]] = ev.interrupt.injected;
  b[o["interrupt.nr"]] = ev.interrupt.nr;
  b[o["interrupt.soft"]] = ev.interrupt.soft;
  b[o["interrupt.shadow"]] = ev.interrupt.shadow;
  b[o["nmi.injected"]] = ev.nmi.injected;
  b[o["nmi.pending"]] = ev.nmi.pending;
  b[o["nmi.masked"]] = ev.nmi.masked;
  b.writeUInt32LE(ev.sipiVector >>> 0, o.sipi_vector);
  b.writeUInt32LE(ev.flags >>> 0, o.flags);
  b[o["triple_fault.pending"]] = ev.tripleFaultPending;
}

function readSegment(b: Buffer, off: number): Segment {
  const o = kvm_segment.off;
  return {
    base: b.readBigUInt64LE(off + o.base),
    limit: b.readUInt32LE(off + o.limit),
    selector: b.readUInt16LE(off + o.selector),
    type: b[off + o.type],
    present: b[off + o.present],
    dpl: b[off + o.dpl],
    db: b[off + o.db],
    s: b[off + o.s],
    l: b[off + o.l],
    g: b[off + o.g],
    avl: b[off + o.avl],
    unusable: b[off + o.unusable],
  };
}

function writeSegment(b: Buffer, off: number, s: Segment): void {
  const o = kvm_segment.off;
  b.writeBigUInt64LE(BigInt.asUintN(64, s.base), off + o.base);
  b.writeUInt32LE(s.limit >>> 0, off + o.limit);
  b.writeUInt16LE(s.selector & 0xffff, off + o.selector);
  b[off + o.type] = s.type;
  b[off + o.present] = s.present;
  b[off + o.dpl] = s.dpl;
  b[off + o.db] = s.db;
  b[off + o.s] = s.s;
  b[off + o.l] = s.l;
  b[off + o.g] = s.g;
  b[off + o.avl] = s.avl;
  b[off + o.unusable] = s.unusable;
}
