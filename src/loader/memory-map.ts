// The guest's physical memory map, computed once from the RAM size and the load plan, and shared by the
// machine description (boot-info.ts) and the Multiboot information (multiboot.ts), so both say the same.
import { LAYOUT, RESERVED_AREAS } from "../vm/machine-layout.js";
import type { LoadPlan } from "./types.js";

/** What a range of the physical address space is used for (values as in guest/include/vmtool/boot_info.h). */
export const MemUse = { FREE: 0, KERNEL: 1, INIT: 2, RESERVED: 3 } as const;
export type MemUseValue = (typeof MemUse)[keyof typeof MemUse];
export const MemFlag = { READ_ONLY: 1 } as const;
const PAGE = 0x1000;

export interface MemoryMapEntry {
  base: number;
  size: number;
  flags: number;
  use: MemUseValue;
  /** For people (trace, docs); not written to the guest. */
  what: string;
}

/** Ranges above RAM that are not memory: the device MMIO window, the APICs, KVM's private pages. */
export const NON_RAM_RANGES: readonly { base: number; size: number; what: string }[] = [
  { base: LAYOUT.MMIO_BASE, size: LAYOUT.MMIO_SIZE, what: "MMIO window for devices" },
  { base: LAYOUT.IOAPIC, size: 0x1000, what: "IOAPIC" },
  { base: LAYOUT.LAPIC, size: 0x1000, what: "local APIC" },
  { base: LAYOUT.IDENTITY_MAP, size: 0x1000 + 0x3000, what: "KVM identity-map page and TSS" },
];

/**
 * RAM [0, memSize) split into FREE, KERNEL (the pages of the plan's segments, .bss included) and INIT (vmtool's boot
 * stack and boot data) entries, sorted and merged, then the RESERVED ranges above RAM.
 */
export function buildMemoryMap(memSize: number, plan?: Pick<LoadPlan, "segments">): MemoryMapEntry[] {
  const claims: { base: number; end: number; use: MemUseValue; what: string }[] = [];
  for (const s of plan?.segments ?? []) {
    // Whole pages: the image owns the pages it touches (vmtool's areas are page-aligned, so no clash).
    if (s.memSize > 0)
      claims.push({
        base: Math.floor(s.gpa / PAGE) * PAGE,
        end: Math.ceil((s.gpa + s.memSize) / PAGE) * PAGE,
        use: MemUse.KERNEL,
        what: "image",
      });
  }
  for (const r of RESERVED_AREAS)
    claims.push({ base: r.base, end: r.base + r.size, use: MemUse.INIT, what: r.what });
  const cuts = new Set<number>([0, memSize]);
  for (const c of claims) {
    cuts.add(Math.min(Math.max(c.base, 0), memSize));
    cuts.add(Math.min(Math.max(c.end, 0), memSize));
  }
  const points = [...cuts].sort((a, b) => a - b);
  const out: MemoryMapEntry[] = [];
  for (let i = 0; i + 1 < points.length; i++) {
    const base = points[i];
    const end = points[i + 1];
    if (end <= base) continue;
    // The image wins over INIT (the loaders refuse overlaps, so this only matters for hand-made plans).
    const c =
      claims.find((x) => x.use === MemUse.KERNEL && x.base <= base && x.end >= end) ??
      claims.find((x) => x.base <= base && x.end >= end);
    const use = c?.use ?? MemUse.FREE;
    const what = c?.what ?? "free RAM";
    const last = out[out.length - 1];
    if (last && last.use === use && last.what === what && last.base + last.size === base)
      last.size += end - base;
    else out.push({ base, size: end - base, flags: 0, use, what });
  }
  for (const r of NON_RAM_RANGES)
    out.push({ base: r.base, size: r.size, flags: 0, use: MemUse.RESERVED, what: r.what });
  return out;
}
