// Paging structures written into a GuestMemory buffer by the tests, entry by entry, at the indexes the SDM
// (vol. 3A, chapter 4) says the linear address selects. The entry values themselves come from each test case.
import type { GuestMemory } from "../../src/memory/guest-memory.js";

export const P = 1n;
export const RW = 1n << 1n;
export const US = 1n << 2n;
export const PWT = 1n << 3n;
export const PCD = 1n << 4n;
export const A = 1n << 5n;
export const D = 1n << 6n;
export const PS = 1n << 7n;
export const G = 1n << 8n;
export const XD = 1n << 63n;
export const bit = (n: number): bigint => 1n << BigInt(n);

/** The tables' guest-physical addresses: T[0] is the top table (CR3's), T[1] the next one down... */
export const T = [0x1000n, 0x2000n, 0x3000n, 0x4000n, 0x5000n] as const;

export type TableMode = "32-bit" | "pae" | "4-level" | "5-level";

/** Per level, top first: the lowest bit of the linear address that indexes it, how many bits, entry size. */
const LEVELS: Record<TableMode, { shift: number; bits: number; size: 4 | 8 }[]> = {
  // SDM 4.3: PDE by bits 31:22, PTE by bits 21:12, 4-byte entries.
  "32-bit": [
    { shift: 22, bits: 10, size: 4 },
    { shift: 12, bits: 10, size: 4 },
  ],
  // SDM 4.4: PDPTE by bits 31:30, PDE by 29:21, PTE by 20:12.
  pae: [
    { shift: 30, bits: 2, size: 8 },
    { shift: 21, bits: 9, size: 8 },
    { shift: 12, bits: 9, size: 8 },
  ],
  // SDM 4.5: PML4E 47:39, PDPTE 38:30, PDE 29:21, PTE 20:12; PML5E 56:48 first with 5-level paging.
  "4-level": [39, 30, 21, 12].map((shift) => ({ shift, bits: 9, size: 8 as const })),
  "5-level": [48, 39, 30, 21, 12].map((shift) => ({ shift, bits: 9, size: 8 as const })),
};

/**
 * Write `entries` (top level first) for linear address `va`: entry k goes into table `tables[k]` at the index
 * the address selects. The entries must themselves point at the next table (T[k + 1]) where they reference
 * one; fewer entries than levels end the path early (a large page, or a test of a stop).
 */
export function placeEntries(
  mem: GuestMemory,
  mode: TableMode,
  va: bigint,
  entries: readonly bigint[],
  tables: readonly bigint[] = T,
): void {
  const levels = LEVELS[mode];
  entries.forEach((value, k) => {
    const l = levels[k];
    const index = Number((va >> BigInt(l.shift)) & ((1n << BigInt(l.bits)) - 1n));
    const at = Number(tables[k]) + index * l.size;
    if (l.size === 4) mem.writeU32(at, Number(value & 0xffff_ffffn));
    else mem.writeU64(at, value);
  });
}
