// Guest linear-address translation (src/debug/paging.ts). Part 1: paging structures written into a GuestMemory
// buffer, one case per rule of the Intel SDM (vol. 3A, chapter 4), each case's answer worked out from the
// SDM by hand. Part 2 (further down): real guests on this host's KVM, their walks compared with KVM_TRANSLATE
// and with what the guest itself reads through its own mappings.
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { GuestMemory } from "../../src/memory/guest-memory.js";
import {
  accessOutcome,
  CR0_PE,
  CR0_PG,
  CR0_WP,
  CR4_LA57,
  CR4_PAE,
  CR4_PGE,
  CR4_PKE,
  CR4_PSE,
  CR4_SMAP,
  CR4_SMEP,
  EFER_LMA,
  EFER_LME,
  EFER_NXE,
  PagingStateError,
  formatWalk,
  pagingFeatures,
  pagingMode,
  pagingState,
  segmentToLinear,
  translate,
  walk,
  type EntryBits,
  type EntryName,
  type PagingState,
  type PhysicalReader,
  type StopReason,
  type Walk,
  type WalkEntry,
} from "../../src/debug/paging.js";
import type { Segment } from "../../src/vm/vcpu.js";
import { A, D, G, P, PS, RW, T, US, XD, bit, placeEntries, type TableMode } from "./page-tables.js";
import {
  big,
  idtAndHandlers,
  onKvmPvm,
  onQemuTcg,
  pdptrs,
  probe32,
  probe64,
  probeResults,
  runPhase,
  stores32,
  stores64,
  type Probe,
  type ProbeResult,
} from "./guest-probes.js";
import { Vm } from "../../src/vm/vm.js";
import type { Vcpu } from "../../src/vm/vcpu.js";
import { bootVcpu } from "../../src/vm/boot-modes.js";
import { LAYOUT } from "../../src/vm/machine-layout.js";
import { assembleBytes } from "../vm/asm.js";

const RAM = 0x40_0000; // 4 MiB at GPA 0: the tables are at T[0..4] = 0x1000..0x5000

/** The registers each mode starts from in the cases (CR0.WP set, as operating systems run). */
const BASE: Record<TableMode | "none", Pick<PagingState, "cr0" | "cr4" | "efer">> = {
  none: { cr0: CR0_PE, cr4: 0n, efer: 0n },
  "32-bit": { cr0: CR0_PE | CR0_PG | CR0_WP, cr4: CR4_PSE, efer: 0n },
  pae: { cr0: CR0_PE | CR0_PG | CR0_WP, cr4: CR4_PAE, efer: EFER_NXE },
  "4-level": { cr0: CR0_PE | CR0_PG | CR0_WP, cr4: CR4_PAE, efer: EFER_LME | EFER_LMA | EFER_NXE },
  "5-level": {
    cr0: CR0_PE | CR0_PG | CR0_WP,
    cr4: CR4_PAE | CR4_LA57,
    efer: EFER_LME | EFER_LMA | EFER_NXE,
  },
};

interface Case {
  name: string;
  mode: TableMode | "none";
  va: bigint;
  /** Entries top level first (placed by placeEntries at T[0], T[1]...). */
  entries?: bigint[];
  /** Changes to the mode's base registers and the default features (MAXPHYADDR 48, 1-GByte pages, PSE-36). */
  set?: Partial<PagingState>;
  /** PAE: where CR3 points (the PDPT), when not T[0]. */
  cr3?: bigint;
  /** Extra set-up of memory (entries the path helper cannot express). */
  setup?: (mem: GuestMemory) => void;
  expect:
    | { gpa: bigint; size: number; inRam?: boolean; rights?: Partial<RightsExpect>; bits?: BitsExpect }
    | { stop: StopReason; level?: EntryName; reserved?: bigint };
}

interface RightsExpect {
  user: boolean;
  writable: boolean;
  executable: boolean;
  global: boolean;
  supervisor: { read: boolean; write: boolean; execute: boolean };
  userMode: { read: boolean; write: boolean; execute: boolean };
  now: { read: boolean; write: boolean; execute: boolean };
}
/** Expected decoded bits of some of the entries, by level. */
type BitsExpect = Partial<Record<EntryName, Partial<EntryBits>>>;

const all = { read: true, write: true, execute: true };
const none = { read: false, write: false, execute: false };

const CASES: Case[] = [
  // --- no paging (SDM 4.1.1: CR0.PG = 0, linear addresses are physical) ---
  {
    name: "real mode: the linear address is the physical address, up to 0x10FFEF (FFFF:FFFF)",
    mode: "none",
    set: { cr0: 0n },
    va: 0x10_ffefn,
    expect: { gpa: 0x10_ffefn, size: 4096, inRam: true, rights: { now: all } },
  },
  {
    name: "protected mode without paging: identity over the 32-bit linear space",
    mode: "none",
    va: 0xffff_ffffn,
    expect: { gpa: 0xffff_ffffn, size: 4096, inRam: false },
  },
  {
    name: "protected mode without paging: a 33-bit value is no linear address",
    mode: "none",
    va: 0x1_0000_0000n,
    expect: { stop: "address-width" },
  },
  // --- 32-bit paging (SDM 4.3) ---
  {
    name: "32-bit: PDE (bits 31:22) -> PTE (bits 21:12) -> 4 KiB frame",
    mode: "32-bit",
    va: 0x8040_3123n,
    entries: [T[1] | P | RW | US, 0x0012_3000n | P | RW | US],
    expect: {
      gpa: 0x0012_3123n,
      size: 4096,
      rights: { user: true, writable: true, executable: true, userMode: all, supervisor: all },
    },
  },
  {
    name: "32-bit: a PDE with P = 0 ends the walk, whatever its other bits",
    mode: "32-bit",
    va: 0x8040_3123n,
    entries: [0xffff_fffen],
    expect: { stop: "not-present", level: "PDE" },
  },
  {
    name: "32-bit: a PTE with P = 0 ends the walk",
    mode: "32-bit",
    va: 0x8040_3123n,
    entries: [T[1] | P, 0xffff_f000n],
    expect: { stop: "not-present", level: "PTE" },
  },
  {
    name: "32-bit, CR4.PSE = 0: PDE bit 7 is ignored, the PDE references a page table",
    mode: "32-bit",
    set: { cr4: 0n },
    va: 0x0000_1abcn,
    entries: [T[1] | P | PS, 0x0005_5000n | P],
    expect: { gpa: 0x5_5abcn, size: 4096 },
  },
  {
    name: "32-bit, CR4.PSE = 1, PDE.PS = 1: a 4 MiB page (bits 31:22 of the PDE, 21:0 of the address)",
    mode: "32-bit",
    va: 0x8040_3123n,
    entries: [0x0c00_0000n | P | RW | PS],
    expect: { gpa: 0x0c00_3123n, size: 0x40_0000, bits: { PDE: { pageSize: true, dirty: false } } },
  },
  {
    name: "32-bit PSE-36: PDE bits 20:13 are physical-address bits 39:32",
    mode: "32-bit",
    va: 0x1234n,
    entries: [0x0040_0000n | (5n << 13n) | P | PS],
    expect: { gpa: 0x5_0040_1234n, size: 0x40_0000, inRam: false },
  },
  {
    name: "32-bit PSE-36, MAXPHYADDR 36: PDE bits 21:17 are reserved",
    mode: "32-bit",
    set: { maxPhyAddr: 36 },
    va: 0x1234n,
    entries: [0x0040_0000n | bit(17) | P | PS],
    expect: { stop: "reserved-bit", level: "PDE", reserved: bit(17) },
  },
  {
    name: "32-bit PSE-36, MAXPHYADDR 48: M = min(40, MAXPHYADDR), so bit 20 is address bit 39",
    mode: "32-bit",
    va: 0x1234n,
    entries: [bit(20) | P | PS],
    expect: { gpa: 0x80_0000_1234n, size: 0x40_0000 },
  },
  {
    name: "32-bit PSE-36: bit 21 is reserved whatever MAXPHYADDR",
    mode: "32-bit",
    set: { maxPhyAddr: 52 },
    va: 0x1234n,
    entries: [bit(21) | P | PS],
    expect: { stop: "reserved-bit", level: "PDE", reserved: bit(21) },
  },
  {
    name: "32-bit without PSE-36: PDE bits 21:13 are reserved",
    mode: "32-bit",
    set: { pse36: false },
    va: 0x1234n,
    entries: [bit(13) | P | PS],
    expect: { stop: "reserved-bit", level: "PDE", reserved: bit(13) },
  },
  {
    name: "32-bit 4 MiB page: bit 12 is PAT, not an address bit",
    mode: "32-bit",
    va: 0x1234n,
    entries: [0x0040_0000n | bit(12) | P | PS],
    expect: { gpa: 0x40_1234n, size: 0x40_0000, bits: { PDE: { pat: true } } },
  },
  {
    name: "32-bit: no linear address above 4 GiB",
    mode: "32-bit",
    va: 0x1_0000_0000n,
    expect: { stop: "address-width" },
  },
  {
    name: "32-bit: PTE bit 7 is PAT; G with CR4.PGE makes the translation global",
    mode: "32-bit",
    set: { cr4: CR4_PSE | CR4_PGE },
    va: 0x1000n,
    entries: [T[1] | P, 0x7000n | P | PS | G],
    expect: {
      gpa: 0x7000n,
      size: 4096,
      rights: { global: true },
      bits: { PTE: { pat: true, global: true } },
    },
  },
  {
    name: "32-bit: G without CR4.PGE is not a global translation",
    mode: "32-bit",
    va: 0x1000n,
    entries: [T[1] | P, 0x7000n | P | G],
    expect: { gpa: 0x7000n, size: 4096, rights: { global: false } },
  },
  {
    name: "32-bit: rights are those of both levels (a read-only PDE), CR0.WP = 1 stops supervisor writes; no XD",
    mode: "32-bit",
    va: 0x1000n,
    entries: [T[1] | P | US, 0x7000n | P | RW | US],
    expect: {
      gpa: 0x7000n,
      size: 4096,
      rights: {
        user: true,
        writable: false,
        executable: true,
        supervisor: { read: true, write: false, execute: true },
        userMode: { read: true, write: false, execute: true },
      },
    },
  },
  {
    name: "32-bit, CR0.WP = 0: supervisor writes to read-only pages are allowed, user writes are not",
    mode: "32-bit",
    set: { cr0: CR0_PE | CR0_PG },
    va: 0x1000n,
    entries: [T[1] | P | US, 0x7000n | P | RW | US],
    expect: {
      gpa: 0x7000n,
      size: 4096,
      rights: { supervisor: all, userMode: { read: true, write: false, execute: true } },
    },
  },
  {
    name: "32-bit: a supervisor page (U/S = 0 at one level) gives CPL 3 nothing",
    mode: "32-bit",
    set: { cpl: 3 },
    va: 0x1000n,
    entries: [T[1] | P | RW, 0x7000n | P | RW | US],
    expect: { gpa: 0x7000n, size: 4096, rights: { user: false, userMode: none, now: none, supervisor: all } },
  },
  // --- PAE paging (SDM 4.4) ---
  {
    name: "PAE: PDPTE (bits 31:30) -> PDE (29:21) -> PTE (20:12) -> 4 KiB frame; PDPTEs have no R/W or U/S",
    mode: "pae",
    va: 0xc020_3456n,
    entries: [T[1] | P, T[2] | P | RW | US, 0x9_8765_4000n | P | RW],
    expect: {
      gpa: 0x9_8765_4456n,
      size: 4096,
      inRam: false,
      rights: { user: false, writable: true, executable: true },
      bits: { PDPTE: { present: true, writable: undefined, user: undefined, accessed: undefined } },
    },
  },
  {
    name: "PAE: PDE.PS = 1 maps a 2 MiB page (CR4.PSE does not matter)",
    mode: "pae",
    va: 0x4060_1234n,
    entries: [T[1] | P, 0x1_2340_0000n | P | PS | RW],
    expect: { gpa: 0x1_2340_1234n, size: 0x20_0000, bits: { PDE: { pat: false, pageSize: true } } },
  },
  {
    name: "PAE: a PDPTE with P = 0",
    mode: "pae",
    va: 0x4060_1234n,
    entries: [0n],
    expect: { stop: "not-present", level: "PDPTE" },
  },
  {
    name: "PAE: PDPTE bits 2:1 are reserved (R/W set in a PDPTE)",
    mode: "pae",
    va: 0x4060_1234n,
    entries: [T[1] | P | RW],
    expect: { stop: "reserved-bit", level: "PDPTE", reserved: RW },
  },
  {
    name: "PAE: PDPTE bits 8:5 are reserved (A set in a PDPTE)",
    mode: "pae",
    va: 0x4060_1234n,
    entries: [T[1] | P | A],
    expect: { stop: "reserved-bit", level: "PDPTE", reserved: A },
  },
  {
    name: "PAE: PDPTE bit 63 is reserved even with EFER.NXE",
    mode: "pae",
    va: 0x4060_1234n,
    entries: [T[1] | P | XD],
    expect: { stop: "reserved-bit", level: "PDPTE", reserved: XD },
  },
  {
    name: "PAE: bits 20:13 of a 2 MiB PDE are reserved",
    mode: "pae",
    va: 0x1234n,
    entries: [T[1] | P, 0x20_0000n | P | PS | bit(13)],
    expect: { stop: "reserved-bit", level: "PDE", reserved: bit(13) },
  },
  {
    name: "PAE: bit 12 of a 2 MiB PDE is PAT",
    mode: "pae",
    va: 0x1234n,
    entries: [T[1] | P, 0x20_0000n | P | PS | bit(12)],
    expect: { gpa: 0x20_1234n, size: 0x20_0000, bits: { PDE: { pat: true, pageSize: true } } },
  },
  {
    name: "PAE, EFER.NXE = 0: bit 63 of a PTE is reserved",
    mode: "pae",
    set: { efer: 0n },
    va: 0x1234n,
    entries: [T[1] | P, T[2] | P, 0x7000n | P | XD],
    expect: { stop: "reserved-bit", level: "PTE", reserved: XD },
  },
  {
    name: "PAE, EFER.NXE = 1: XD forbids instruction fetches",
    mode: "pae",
    va: 0x1234n,
    entries: [T[1] | P, T[2] | P | RW, 0x7000n | P | RW | XD],
    expect: {
      gpa: 0x7234n,
      size: 4096,
      rights: { executable: false, supervisor: { read: true, write: true, execute: false } },
      bits: { PTE: { executeDisable: true } },
    },
  },
  {
    name: "PAE, MAXPHYADDR 36: bits 62:36 of a PTE are reserved",
    mode: "pae",
    set: { maxPhyAddr: 36 },
    va: 0x1234n,
    entries: [T[1] | P, T[2] | P, bit(36) | 0x7000n | P],
    expect: { stop: "reserved-bit", level: "PTE", reserved: bit(36) },
  },
  {
    name: "PAE: bits 62:52 are reserved too (4-level paging ignores them)",
    mode: "pae",
    va: 0x1234n,
    entries: [T[1] | P, T[2] | P, bit(55) | 0x7000n | P],
    expect: { stop: "reserved-bit", level: "PTE", reserved: bit(55) },
  },
  {
    name: "PAE, MAXPHYADDR 36: bit 35 is an address bit",
    mode: "pae",
    set: { maxPhyAddr: 36 },
    va: 0x1234n,
    entries: [T[1] | P, T[2] | P, bit(35) | 0x7000n | P],
    expect: { gpa: 0x8_0000_7234n, size: 4096 },
  },
  {
    name: "PAE: CR3 bits 31:5 locate the PDPT (32-byte aligned)",
    mode: "pae",
    cr3: 0x1020n,
    va: 0x1234n,
    entries: [T[1] | P, 0x40_0000n | P | PS],
    expect: { gpa: 0x40_1234n, size: 0x20_0000 },
  },
  {
    name: "PAE: the four PDPTE registers, when given, are used instead of memory",
    mode: "pae",
    set: { pdptes: [T[1] | P, 0n, 0n, 0n] },
    va: 0x1234n,
    setup: (mem) => mem.writeU64(Number(T[1]), 0x40_0000n | P | PS), // PDPT[0] in memory stays 0
    expect: { gpa: 0x40_1234n, size: 0x20_0000 },
  },
  {
    name: "PAE: without the registers the PDPTEs are read from memory",
    mode: "pae",
    va: 0x1234n,
    setup: (mem) => mem.writeU64(Number(T[1]), 0x40_0000n | P | PS),
    expect: { stop: "not-present", level: "PDPTE" },
  },
  {
    name: "PAE: no linear address above 4 GiB",
    mode: "pae",
    va: 0x1_0000_1234n,
    expect: { stop: "address-width" },
  },
  // --- 4-level paging (SDM 4.5) ---
  {
    name: "4-level: PML4E (47:39) -> PDPTE (38:30) -> PDE (29:21) -> PTE (20:12) -> 4 KiB frame",
    mode: "4-level",
    va: 0x0000_7f12_3456_789an,
    entries: [T[1] | P | RW | US, T[2] | P | RW | US, T[3] | P | RW | US, 0x0abc_def0_1000n | P | RW | US],
    expect: { gpa: 0x0abc_def0_189an, size: 4096, rights: { user: true, writable: true, executable: true } },
  },
  {
    name: "4-level: an address whose bits 63:47 are not all equal is not canonical",
    mode: "4-level",
    va: 0x0000_8000_0000_0000n,
    expect: { stop: "non-canonical" },
  },
  {
    name: "4-level: 0xFFFF7FFFFFFFF000 is not canonical",
    mode: "4-level",
    va: 0xffff_7fff_ffff_f000n,
    expect: { stop: "non-canonical" },
  },
  {
    name: "4-level: 0x8000000000000000 is not canonical",
    mode: "4-level",
    va: 0x8000_0000_0000_0000n,
    expect: { stop: "non-canonical" },
  },
  {
    name: "4-level: the upper canonical half translates (PML4 index 256)",
    mode: "4-level",
    va: 0xffff_8000_0000_0123n,
    entries: [T[1] | P, T[2] | P, T[3] | P, 0x5000n | P],
    expect: { gpa: 0x5123n, size: 4096 },
  },
  {
    name: "4-level: PDE.PS = 1 maps a 2 MiB page",
    mode: "4-level",
    va: 0x4060_1234n,
    entries: [T[1] | P | RW, T[2] | P | RW, 0x1_2340_0000n | P | RW | PS],
    expect: { gpa: 0x1_2340_1234n, size: 0x20_0000 },
  },
  {
    name: "4-level: PDPTE.PS = 1 maps a 1 GiB page where the CPU has them",
    mode: "4-level",
    va: 0x0000_0001_4012_3456n,
    entries: [T[1] | P | RW, 0x40_0000_0000n | P | RW | PS],
    expect: { gpa: 0x40_0012_3456n, size: 0x4000_0000, bits: { PDPTE: { pageSize: true, pat: false } } },
  },
  {
    name: "4-level without 1 GiB pages: PDPTE bit 7 is reserved",
    mode: "4-level",
    set: { gbPages: false },
    va: 0x0000_0001_4012_3456n,
    entries: [T[1] | P | RW, 0x40_0000_0000n | P | RW | PS],
    expect: { stop: "reserved-bit", level: "PDPTE", reserved: PS },
  },
  {
    name: "4-level: bits 29:13 of a 1 GiB PDPTE are reserved",
    mode: "4-level",
    va: 0x4000_0000n,
    entries: [T[1] | P, 0x4000_0000n | P | PS | bit(29)],
    expect: { stop: "reserved-bit", level: "PDPTE", reserved: bit(29) },
  },
  {
    name: "4-level: bit 13 of a 1 GiB PDPTE is reserved (the lowest of 29:13)",
    mode: "4-level",
    va: 0x4000_0000n,
    entries: [T[1] | P, 0x4000_0000n | P | PS | bit(13)],
    expect: { stop: "reserved-bit", level: "PDPTE", reserved: bit(13) },
  },
  {
    name: "4-level: bit 12 of a 1 GiB PDPTE is PAT",
    mode: "4-level",
    va: 0x4000_0010n,
    entries: [T[1] | P, 0x4000_0000n | P | PS | bit(12)],
    expect: { gpa: 0x4000_0010n, size: 0x4000_0000, bits: { PDPTE: { pat: true } } },
  },
  {
    name: "4-level: bits 20:13 of a 2 MiB PDE are reserved",
    mode: "4-level",
    va: 0x1234n,
    entries: [T[1] | P, T[2] | P, 0x20_0000n | P | PS | bit(20)],
    expect: { stop: "reserved-bit", level: "PDE", reserved: bit(20) },
  },
  {
    name: "4-level: PML4E bit 7 (PS) is reserved",
    mode: "4-level",
    va: 0x1234n,
    entries: [T[1] | P | PS],
    expect: { stop: "reserved-bit", level: "PML4E", reserved: PS },
  },
  {
    name: "4-level: PML4E bit 8 is ignored (Intel; AMD reserves it)",
    mode: "4-level",
    va: 0x1234n,
    entries: [T[1] | P | G, T[2] | P, T[3] | P, 0x7000n | P],
    expect: { gpa: 0x7234n, size: 4096 },
  },
  {
    name: "4-level, MAXPHYADDR 48: bits 51:48 are reserved (bit 51 of a PTE)",
    mode: "4-level",
    va: 0x1234n,
    entries: [T[1] | P, T[2] | P, T[3] | P, 0x7000n | P | bit(51)],
    expect: { stop: "reserved-bit", level: "PTE", reserved: bit(51) },
  },
  {
    name: "4-level, MAXPHYADDR 48: bit 48 of a PDPTE that references a table is reserved",
    mode: "4-level",
    va: 0x1234n,
    entries: [T[1] | P, T[2] | P | bit(48)],
    expect: { stop: "reserved-bit", level: "PDPTE", reserved: bit(48) },
  },
  {
    name: "4-level: bits 62:52 are ignored",
    mode: "4-level",
    va: 0x1234n,
    entries: [T[1] | P | bit(62), T[2] | P, T[3] | P, 0x7000n | P | bit(52) | bit(58)],
    expect: { gpa: 0x7234n, size: 4096 },
  },
  {
    name: "4-level, MAXPHYADDR 39: bit 39 of a PML4E is reserved",
    mode: "4-level",
    set: { maxPhyAddr: 39 },
    va: 0x1234n,
    entries: [T[1] | P | bit(39)],
    expect: { stop: "reserved-bit", level: "PML4E", reserved: bit(39) },
  },
  {
    name: "4-level, EFER.NXE = 0: bit 63 is reserved at every level (PML4E)",
    mode: "4-level",
    set: { efer: EFER_LME | EFER_LMA },
    va: 0x1234n,
    entries: [T[1] | P | XD],
    expect: { stop: "reserved-bit", level: "PML4E", reserved: XD },
  },
  {
    name: "4-level, EFER.NXE = 1: XD at any level (here the PDPTE) forbids fetches",
    mode: "4-level",
    va: 0x1234n,
    entries: [T[1] | P | RW, T[2] | P | RW | XD, T[3] | P | RW, 0x7000n | P | RW],
    expect: {
      gpa: 0x7234n,
      size: 4096,
      rights: { executable: false, supervisor: { read: true, write: true, execute: false } },
      bits: { PDPTE: { executeDisable: true }, PTE: { executeDisable: false } },
    },
  },
  {
    name: "4-level, CR0.WP = 1: a read-only PDE stops supervisor writes",
    mode: "4-level",
    va: 0x1234n,
    entries: [T[1] | P | RW, T[2] | P | RW, T[3] | P, 0x7000n | P | RW],
    expect: {
      gpa: 0x7234n,
      size: 4096,
      rights: { writable: false, supervisor: { read: true, write: false, execute: true } },
    },
  },
  {
    name: "4-level, CR0.WP = 0: supervisor writes to a read-only page are allowed",
    mode: "4-level",
    set: { cr0: CR0_PE | CR0_PG },
    va: 0x1234n,
    entries: [T[1] | P | RW, T[2] | P | RW, T[3] | P, 0x7000n | P | RW],
    expect: { gpa: 0x7234n, size: 4096, rights: { writable: false, supervisor: all } },
  },
  {
    name: "4-level, CR4.SMEP: no supervisor fetches from a user page",
    mode: "4-level",
    set: { cr4: CR4_PAE | CR4_SMEP },
    va: 0x1234n,
    entries: [T[1] | P | RW | US, T[2] | P | RW | US, T[3] | P | RW | US, 0x7000n | P | RW | US],
    expect: {
      gpa: 0x7234n,
      size: 4096,
      rights: { supervisor: { read: true, write: true, execute: false }, userMode: all },
    },
  },
  {
    name: "4-level, CR4.SMEP: a supervisor page stays executable for CPL 0 (one U/S = 0 makes it one)",
    mode: "4-level",
    set: { cr4: CR4_PAE | CR4_SMEP },
    va: 0x1234n,
    entries: [T[1] | P | RW | US, T[2] | P | RW, T[3] | P | RW | US, 0x7000n | P | RW | US],
    expect: { gpa: 0x7234n, size: 4096, rights: { user: false, supervisor: all, userMode: none } },
  },
  {
    name: "4-level, CR4.SMAP, RFLAGS.AC = 0: no supervisor data access to a user page",
    mode: "4-level",
    set: { cr4: CR4_PAE | CR4_SMAP },
    va: 0x1234n,
    entries: [T[1] | P | RW | US, T[2] | P | RW | US, T[3] | P | RW | US, 0x7000n | P | RW | US],
    expect: {
      gpa: 0x7234n,
      size: 4096,
      rights: { supervisor: { read: false, write: false, execute: true } },
    },
  },
  {
    name: "4-level, CR4.SMAP, RFLAGS.AC = 1: supervisor data accesses to a user page are allowed",
    mode: "4-level",
    set: { cr4: CR4_PAE | CR4_SMAP, ac: true },
    va: 0x1234n,
    entries: [T[1] | P | RW | US, T[2] | P | RW | US, T[3] | P | RW | US, 0x7000n | P | RW | US],
    expect: { gpa: 0x7234n, size: 4096, rights: { supervisor: all } },
  },
  {
    name: "4-level, CPL 3: the rights that apply are the user-mode ones",
    mode: "4-level",
    set: { cpl: 3 },
    va: 0x1234n,
    entries: [T[1] | P | RW | US, T[2] | P | RW | US, T[3] | P | US, 0x7000n | P | RW | US | XD],
    expect: {
      gpa: 0x7234n,
      size: 4096,
      rights: { now: { read: true, write: false, execute: false } },
    },
  },
  {
    name: "4-level: Accessed and Dirty are reported per entry (D only where a page is mapped)",
    mode: "4-level",
    va: 0x1234n,
    entries: [T[1] | P | A, T[2] | P, T[3] | P | A | D, 0x7000n | P | A | D],
    expect: {
      gpa: 0x7234n,
      size: 4096,
      bits: {
        PML4E: { accessed: true, dirty: undefined },
        PDPTE: { accessed: false },
        PDE: { accessed: true, dirty: undefined, pageSize: false },
        PTE: { accessed: true, dirty: true },
      },
    },
  },
  {
    name: "4-level, CR4.PKE: bits 62:59 of the entry that maps the page are its protection key",
    mode: "4-level",
    set: { cr4: CR4_PAE | CR4_PKE },
    va: 0x1234n,
    entries: [T[1] | P, T[2] | P, T[3] | P, 0x7000n | P | (11n << 59n)],
    expect: {
      gpa: 0x7234n,
      size: 4096,
      bits: { PTE: { protectionKey: 11 }, PDE: { protectionKey: undefined } },
    },
  },
  {
    name: "4-level: a table outside guest RAM ends the walk (nothing is read there)",
    mode: "4-level",
    va: 0x1234n,
    entries: [0x1_0000_0000n | P],
    expect: { stop: "outside-ram", level: "PDPTE" },
  },
  {
    name: "4-level: a page outside guest RAM is still a translation (MMIO, or nothing)",
    mode: "4-level",
    va: 0x1234n,
    entries: [T[1] | P, T[2] | P, T[3] | P, 0xfee0_0000n | P],
    expect: { gpa: 0xfee0_0234n, size: 4096, inRam: false },
  },
  {
    name: "4-level: a recursive PML4 entry maps the PML4 itself (index 510 at every level)",
    mode: "4-level",
    va: 0xffff_ff7f_bfdf_e008n,
    setup: (mem) => mem.writeU64(Number(T[0]) + 510 * 8, T[0] | P | RW),
    expect: { gpa: T[0] + 8n, size: 4096 },
  },
  {
    name: "4-level: CR3 bits 11:0 (PCID) and 63 are no part of the PML4's address",
    mode: "4-level",
    set: { cr3: T[0] | 0x5n | bit(63) },
    va: 0x1234n,
    entries: [T[1] | P, T[2] | P, T[3] | P, 0x7000n | P],
    expect: { gpa: 0x7234n, size: 4096 },
  },
  // --- 5-level paging (SDM 4.5 with CR4.LA57) ---
  {
    name: "5-level: PML5E (56:48) -> PML4E -> PDPTE -> PDE -> PTE",
    mode: "5-level",
    va: 0x00ff_8000_0000_1234n,
    entries: [T[1] | P, T[2] | P, T[3] | P, T[4] | P, 0x9000n | P],
    expect: { gpa: 0x9234n, size: 4096 },
  },
  {
    name: "5-level: bits 63:56 must all equal bit 56",
    mode: "5-level",
    va: 0x0100_0000_0000_0000n,
    expect: { stop: "non-canonical" },
  },
  {
    name: "5-level: 0x0000800000000000 is canonical (PML5 index 0, PML4 index 256)",
    mode: "5-level",
    va: 0x0000_8000_0000_0000n,
    entries: [T[1] | P, T[2] | P, T[3] | P, T[4] | P, 0x9000n | P],
    expect: { gpa: 0x9000n, size: 4096 },
  },
  {
    name: "5-level: PML5E bit 7 (PS) is reserved",
    mode: "5-level",
    va: 0x1234n,
    entries: [T[1] | P | PS],
    expect: { stop: "reserved-bit", level: "PML5E", reserved: PS },
  },
  {
    name: "5-level: the upper half (0xFF00000000000000) and a 1 GiB page",
    mode: "5-level",
    va: 0xff00_0000_4000_0abcn,
    entries: [T[1] | P, T[2] | P, 0x8000_0000n | P | PS],
    expect: { gpa: 0x8000_0abcn, size: 0x4000_0000 },
  },
  // --- registers that select no mode ---
  {
    name: "CR0.PG without CR0.PE selects no mode",
    mode: "32-bit",
    set: { cr0: CR0_PG },
    va: 0x1234n,
    expect: { stop: "invalid-state" },
  },
  {
    name: "EFER.LMA without CR4.PAE selects no mode",
    mode: "4-level",
    set: { cr4: 0n },
    va: 0x1234n,
    expect: { stop: "invalid-state" },
  },
  {
    name: "EFER.LMA without CR0.PG selects no mode",
    mode: "4-level",
    set: { cr0: CR0_PE },
    va: 0x1234n,
    expect: { stop: "invalid-state" },
  },
];

function stateFor(c: Case): PagingState {
  return {
    ...BASE[c.mode],
    cr3: c.cr3 ?? T[0],
    cpl: 0,
    ac: false,
    maxPhyAddr: 48,
    gbPages: true,
    pse36: true,
    ...c.set,
  };
}

function run(c: Case): { w: Walk; state: PagingState; mem: GuestMemory } {
  const mem = new GuestMemory([{ gpa: 0, bytes: new Uint8Array(RAM) }]);
  const state = stateFor(c);
  if (c.entries && c.mode !== "none")
    placeEntries(mem, c.mode, c.va, c.entries, c.cr3 !== undefined ? [c.cr3, ...T.slice(1)] : T);
  c.setup?.(mem);
  return { w: walk(state, c.va, mem), state, mem };
}

describe("the walk follows the SDM, case by case", () => {
  for (const c of CASES) {
    test(c.name, () => {
      const { w, state, mem } = run(c);
      const e = c.expect;
      if ("gpa" in e) {
        assert.ok(w.ok, `expected a translation, got: ${w.ok ? "" : w.message}`);
        assert.equal(w.gpa, e.gpa, `gpa ${w.gpa.toString(16)}`);
        assert.equal(w.page.size, e.size);
        assert.equal(w.page.base + w.page.offset, e.gpa);
        if (e.inRam !== undefined) assert.equal(w.inRam, e.inRam);
        if (e.rights)
          for (const [k, v] of Object.entries(e.rights))
            assert.deepEqual(w.rights[k as keyof RightsExpect], v, k);
        if (e.bits)
          for (const [level, want] of Object.entries(e.bits)) {
            const entry: WalkEntry | undefined = w.entries.find((x) => x.level === level);
            assert.ok(entry, `no ${level} in the walk`);
            for (const [k, v] of Object.entries(want))
              assert.equal(entry.bits[k as keyof EntryBits], v, `${level}.${k}`);
          }
        // The last entry maps the page the translation is in.
        if (c.mode !== "none") {
          const last = w.entries[w.entries.length - 1];
          assert.equal(last.maps, "page");
          assert.equal(last.target, w.page.base);
          assert.equal(last.pageSize, e.size);
          assert.ok(w.entries.slice(0, -1).every((x) => x.maps === "table"));
        } else {
          assert.deepEqual(w.entries, []);
          assert.match(w.note ?? "", /linear address is the physical address/);
        }
      } else {
        assert.equal(w.ok, false, `expected no translation, got ${w.ok ? w.gpa.toString(16) : ""}`);
        if (w.ok) return;
        assert.equal(w.reason, e.stop, w.message);
        assert.equal(w.level, e.level);
        if (e.reserved !== undefined) {
          const last = w.entries[w.entries.length - 1];
          assert.equal(last.reserved, e.reserved, `reserved ${last.reserved.toString(16)}`);
          assert.equal(last.maps, "none");
        }
        if (e.stop === "not-present") assert.equal(w.entries[w.entries.length - 1].bits.present, false);
      }
      // Every entry the walk shows is really in memory at the address it gives, with the value it gives.
      for (const x of w.entries)
        if (x.source === "memory")
          assert.equal(x.size === 4 ? BigInt(mem.readU32(Number(x.gpa))) : mem.readU64(Number(x.gpa)), x.raw);
      // The one-call form agrees, and the text form names every entry.
      const t = translate(state, c.va, mem);
      assert.equal(t.ok, w.ok);
      if (t.ok && w.ok) assert.equal(t.gpa, w.gpa);
      const text = formatWalk(w, state).join("\n");
      for (const x of w.entries) assert.ok(text.includes(`${x.level}[${x.index}]`), text);
    });
  }
});

// --- Part 1b: the small pieces around the walk ---

describe("around the walk", () => {
  const mem = new GuestMemory([{ gpa: 0, bytes: new Uint8Array(RAM) }]);
  const long: PagingState = { ...stateFor(CASES[0]), ...BASE["4-level"], cr3: T[0] };

  test("the mode comes from CR0.PG/PE, CR4.PAE/LA57 and EFER.LMA (SDM 4.1.1)", () => {
    assert.equal(pagingMode({ cr0: 0n, cr4: CR4_PAE, efer: 0n }), "none");
    assert.equal(pagingMode({ cr0: CR0_PE, cr4: 0n, efer: 0n }), "none");
    assert.equal(pagingMode({ cr0: CR0_PE | CR0_PG, cr4: CR4_PSE, efer: 0n }), "32-bit");
    assert.equal(pagingMode({ cr0: CR0_PE | CR0_PG, cr4: CR4_PAE, efer: EFER_LME }), "pae"); // LME, not yet LMA
    assert.equal(pagingMode(BASE["4-level"]), "4-level");
    assert.equal(pagingMode(BASE["5-level"]), "5-level");
    assert.deepEqual(pagingMode({ cr0: CR0_PG, cr4: 0n, efer: 0n }), {
      invalid: "CR0.PG is set while CR0.PE is clear",
    });
  });

  test("CPU parameters that cannot exist are refused with one clear error", () => {
    assert.throws(
      () => walk({ ...long, maxPhyAddr: 53 }, 0n, mem),
      (e: Error) => e instanceof PagingStateError && /MAXPHYADDR 53/.test(e.message),
    );
    assert.throws(() => walk({ ...long, maxPhyAddr: 31 }, 0n, mem), PagingStateError);
    assert.throws(() => walk({ ...long, cpl: 4 }, 0n, mem), /CPL 4/);
    assert.throws(() => walk({ ...long, pdptes: [0n, 0n, 0n] }, 0n, mem), /3 PDPTE registers/);
  });

  test("a linear address that is no 64-bit value is refused, not wrapped", () => {
    for (const va of [-1n, 1n << 64n]) {
      const w = walk(long, va, mem);
      assert.equal(w.ok, false);
      if (!w.ok) assert.equal(w.reason, "address-width");
    }
  });

  test("a reader that throws, or an entry that straddles the end of RAM, ends the walk as outside RAM", () => {
    const throwing: PhysicalReader = {
      contains: () => true,
      readU32: () => {
        throw new Error("boom");
      },
      readU64: () => {
        throw new Error("boom");
      },
    };
    const w = walk(long, 0x1234n, throwing);
    assert.ok(!w.ok && w.reason === "outside-ram" && w.level === "PML4E");
    // RAM ends 4 bytes into PML4 entry 511: the entry is not read at all.
    const short = new GuestMemory([{ gpa: 0, bytes: new Uint8Array(0x1ffc) }]);
    let reads = 0;
    const counting: PhysicalReader = {
      contains: (gpa, len) => short.contains(gpa, len),
      readU32: (gpa) => (reads++, short.readU32(gpa)),
      readU64: (gpa) => (reads++, short.readU64(gpa)),
    };
    const w2 = walk(long, 0xffff_ff80_0000_0000n, counting);
    assert.ok(!w2.ok && w2.reason === "outside-ram", JSON.stringify(w2, big));
    assert.equal(reads, 0);
    assert.match(w2.message, /0x1ff8, outside guest RAM/);
  });

  test("features from CPUID: MAXPHYADDR (0x80000008), 1 GiB pages, PSE-36, vendor; the SDM's defaults without leaf 0x80000008", () => {
    const leaf = (fn: number, r: { eax?: number; ebx?: number; ecx?: number; edx?: number }) => ({
      function: fn,
      index: 0,
      flags: 0,
      eax: r.eax ?? 0,
      ebx: r.ebx ?? 0,
      ecx: r.ecx ?? 0,
      edx: r.edx ?? 0,
    });
    // "AuthenticAMD" in EBX, EDX, ECX.
    const amd = leaf(0, { ebx: 0x68747541, edx: 0x69746e65, ecx: 0x444d4163 });
    const intel = leaf(0, { ebx: 0x756e6547, edx: 0x49656e69, ecx: 0x6c65746e });
    assert.deepEqual(
      pagingFeatures([
        amd,
        leaf(1, { edx: 1 << 17 }),
        leaf(0x8000_0001, { edx: 1 << 26 }),
        leaf(0x8000_0008, { eax: 0x3027 }),
      ]),
      { maxPhyAddr: 0x27, gbPages: true, pse36: true, vendor: "amd" },
    );
    assert.deepEqual(pagingFeatures([intel, leaf(1, { edx: 1 << 6 })]), {
      maxPhyAddr: 36,
      gbPages: false,
      pse36: false,
      vendor: "intel",
    });
    assert.equal(pagingFeatures([]).maxPhyAddr, 32);
  });

  test("AMD reserves bit 8 of PML4Es and PML5Es (APM vol. 2, 5.3.3), Intel ignores it", () => {
    const m = new GuestMemory([{ gpa: 0, bytes: new Uint8Array(RAM) }]);
    placeEntries(m, "4-level", 0x1234n, [T[1] | P | G, T[2] | P | G, T[3] | P, 0x7000n | P]);
    assert.equal(walk(long, 0x1234n, m).ok, true);
    const w = walk({ ...long, vendor: "amd" }, 0x1234n, m);
    assert.ok(!w.ok && w.reason === "reserved-bit" && w.level === "PML4E");
    // Bit 8 of a PDPTE that references a table is ignored by both.
    assert.equal(w.entries[0].reserved, G);
  });

  test("the CPL is SS.DPL (0 in real mode, 3 in virtual-8086 mode); RFLAGS.AC is taken", () => {
    const seg = (dpl: number): Segment => ({
      base: 0n,
      limit: 0xffff,
      selector: 0,
      type: 3,
      present: 1,
      dpl,
      db: 0,
      s: 1,
      l: 0,
      g: 0,
      avl: 0,
      unusable: 0,
    });
    const f = { maxPhyAddr: 48, gbPages: false, pse36: true };
    const s = { cr0: CR0_PE, cr3: 0n, cr4: 0n, efer: 0n, ss: seg(3) };
    assert.equal(pagingState(s, 2n, f).cpl, 3);
    assert.equal(pagingState({ ...s, ss: seg(0) }, 2n, f).cpl, 0);
    assert.equal(pagingState({ ...s, cr0: 0n }, 2n, f).cpl, 0);
    assert.equal(pagingState({ ...s, ss: seg(0) }, (1n << 17n) | 2n, f).cpl, 3);
    assert.equal(pagingState(s, (1n << 18n) | 2n, f).ac, true);
    assert.deepEqual(pagingState(s, 2n, f, [1n, 2n, 3n, 4n]).pdptes, [1n, 2n, 3n, 4n]);
  });

  test("what an access would do: the page-fault error code of SDM 4.7 (P, W/R, U/S, RSVD, I/D), #GP off the canonical space", () => {
    const m = new GuestMemory([{ gpa: 0, bytes: new Uint8Array(RAM) }]);
    placeEntries(m, "4-level", 0x1234n, [
      T[1] | P | RW | US,
      T[2] | P | RW | US,
      T[3] | P | RW | US,
      0x7000n | P | US,
    ]);
    placeEntries(m, "4-level", 0x20_1234n, [
      T[1] | P | RW | US,
      T[2] | P | RW | US,
      0x20_0000n | P | RW | PS | XD,
    ]);
    placeEntries(m, "4-level", 0x40_0000n, [
      T[1] | P | RW | US,
      T[2] | P | RW | US,
      0x20_0000n | P | PS | bit(13),
    ]);
    const at = (st: PagingState, va: bigint, kind: "read" | "write" | "execute") =>
      accessOutcome(st, va, kind, m);
    assert.deepEqual(at(long, 0x1234n, "read"), { fault: "none", gpa: 0x7234n });
    assert.equal((at(long, 0x1234n, "write") as { errorCode: number }).errorCode, 0x3); // read-only, CR0.WP
    assert.equal(at({ ...long, cr0: CR0_PE | CR0_PG }, 0x1234n, "write").fault, "none"); // CR0.WP = 0
    assert.equal((at({ ...long, cpl: 3 }, 0x1234n, "write") as { errorCode: number }).errorCode, 0x7);
    assert.equal(
      (at({ ...long, cr4: CR4_PAE | CR4_SMEP }, 0x1234n, "execute") as { errorCode: number }).errorCode,
      0x11,
    );
    assert.equal((at({ ...long, cpl: 3 }, 0x5000_0000n, "write") as { errorCode: number }).errorCode, 0x6); // not present
    assert.equal((at(long, 0x40_0000n, "execute") as { errorCode: number }).errorCode, 0x19); // RSVD, I/D with NXE
    // No I/D without NXE and SMEP (the reserved bit is still one).
    assert.equal(
      (at({ ...long, efer: EFER_LME | EFER_LMA }, 0x40_0000n, "execute") as { errorCode: number }).errorCode,
      0x9,
    );
    assert.equal((at(long, 0x20_1234n, "execute") as { errorCode: number }).errorCode, 0x11); // XD
    assert.equal(at(long, 0x8000_0000_0000_0000n, "read").fault, "general-protection");
    assert.equal(at({ ...long, cr3: 0x1_0000_0000n }, 0x1234n, "read").fault, "unknown");
  });

  test("the walk as text: one line per entry (name, index, address, raw value, bits, what it maps), then the result", () => {
    const m = new GuestMemory([{ gpa: 0, bytes: new Uint8Array(RAM) }]);
    placeEntries(m, "4-level", 0xffff_8000_0000_3123n, [
      T[1] | P | RW | A,
      T[2] | P | RW,
      T[3] | P | RW | US | A,
      0x0030_6000n | P | RW | A | D | XD,
    ]);
    const w = walk(long, 0xffff_8000_0000_3123n, m);
    assert.deepEqual(formatWalk(w, long), [
      "linear 0xffff800000003123: 4-level paging, CR3 0x1000, CPL 0, CR0.WP=1, EFER.NXE=1",
      "  PML4E[256] at 0x1800 = 0x0000000000002023  P RW S A -> page-directory-pointer table 0x2000",
      "  PDPTE[0]   at 0x2000 = 0x0000000000003003  P RW S -> page directory 0x3000",
      "  PDE[0]     at 0x3000 = 0x0000000000004027  P RW U A -> page table 0x4000",
      "  PTE[3]     at 0x4018 = 0x8000000000306063  P RW S A D XD -> 4 KiB page 0x306000",
      "  = physical 0x306123 (4 KiB page 0x306000 + 0x123), in guest RAM",
      "  rights: supervisor page, writable, not executable",
      "    CPL 0-2 may: read, write; CPL 3 may: nothing",
    ]);
    const stop = formatWalk(walk(long, 0xffff_8000_0000_4000n, m), long);
    assert.equal(stop[stop.length - 2], "  PTE[4]     at 0x4020 = 0x0000000000000000  not present");
    assert.equal(
      stop[stop.length - 1],
      "  no translation: the PTE is not present (an access would page-fault)",
    );
    m.writeU64(Number(T[3]) + 8 * 3, 0x0030_6000n | P | bit(50));
    const rsvd = formatWalk(walk(long, 0xffff_8000_0000_3123n, m), long);
    assert.equal(
      rsvd[4],
      "  PTE[3]     at 0x4018 = 0x0004000000306001  P RO S  reserved bits set: 0x4000000000000",
    );
    assert.equal(
      rsvd[5],
      "  no translation: the PTE sets reserved bit 50 (an access would page-fault, error code RSVD)",
    );
    const pae: PagingState = { ...long, ...BASE.pae, pdptes: [T[1] | P, 0n, 0n, 0n] };
    m.writeU64(Number(T[1]), 0x40_0000n | P | PS);
    assert.match(
      formatWalk(walk(pae, 0x1234n, m), pae)[1],
      /^ {2}PDPTE\[0\] register \(from 0x1000\) = 0x0000000000002001 {2}P -> page directory 0x2000$/,
    );
    assert.deepEqual(formatWalk(walk({ ...long, cr0: 0n, efer: 0n }, 0xb8000n, m)), [
      "linear 0xb8000: no paging",
      "  = physical 0xb8000 (4 KiB page 0xb8000 + 0x0), in guest RAM",
      "  real mode: the linear address is the physical address",
    ]);
    assert.deepEqual(formatWalk(walk({ ...long, cr4: 0n }, 0n, m)), [
      "linear 0x0: registers that select no paging mode",
      "  no translation: no paging mode: EFER.LMA is set while CR4.PAE is clear",
    ]);
  });
});

describe("segmentation: linear = base + offset, with the limit check", () => {
  const seg = (o: Partial<Segment>): Segment => ({
    base: 0n,
    limit: 0xffff_ffff,
    selector: 0x10,
    type: 3,
    present: 1,
    dpl: 0,
    db: 1,
    s: 1,
    l: 0,
    g: 1,
    avl: 0,
    unusable: 0,
    ...o,
  });
  const pm = { cr0: CR0_PE, efer: 0n, cs: seg({ type: 0xb }) };

  test("real mode: CS base 0x10000 + 0xFFF0; one byte past the 64 KiB limit faults; unusable means nothing there", () => {
    const real = { cr0: 0n, efer: 0n, cs: seg({ base: 0x1_0000n, limit: 0xffff, type: 0xb, unusable: 1 }) };
    assert.deepEqual(segmentToLinear(real, "cs", 0xfff0n), { ok: true, linear: 0x1_fff0n });
    assert.deepEqual(
      segmentToLinear({ ...real, ds: seg({ base: 0xffff0n, limit: 0xffff }) }, "ds", 0xffffn),
      { ok: true, linear: 0x10_ffefn },
    );
    const r = segmentToLinear(real, "cs", 0xffffn, 2);
    assert.ok(!r.ok && /0xffff\+2 is beyond CS's limit 0xffff/.test(r.message), JSON.stringify(r));
  });

  test("protected mode: a flat segment's last byte is 0xFFFFFFFF; a 2-byte access there faults; a base wraps at 4 GiB", () => {
    assert.deepEqual(segmentToLinear({ ...pm, ds: seg({}) }, "ds", 0xffff_ffffn), {
      ok: true,
      linear: 0xffff_ffffn,
    });
    assert.equal(segmentToLinear({ ...pm, ds: seg({}) }, "ds", 0xffff_ffffn, 2).ok, false);
    assert.deepEqual(segmentToLinear({ ...pm, fs: seg({ base: 0xffff_f000n }) }, "fs", 0x2000n), {
      ok: true,
      linear: 0x1000n,
    });
    assert.equal(segmentToLinear({ ...pm, ds: seg({}) }, "ds", 0x1_0000_0000n).ok, false);
    const u = segmentToLinear({ ...pm, es: seg({ unusable: 1 }) }, "es", 0n);
    assert.ok(!u.ok && /ES is not usable/.test(u.message));
    assert.equal(segmentToLinear(pm, "gs", 0n).ok, false);
  });

  test("expand-down data segments hold the offsets above their limit, up to 0xFFFF or 0xFFFFFFFF (B bit)", () => {
    const down = seg({ type: 0x7, limit: 0xfff, base: 0x10_0000n });
    assert.deepEqual(segmentToLinear({ ...pm, ss: down }, "ss", 0x1000n), { ok: true, linear: 0x10_1000n });
    assert.equal(segmentToLinear({ ...pm, ss: down }, "ss", 0xfffn).ok, false);
    assert.equal(segmentToLinear({ ...pm, ss: { ...down, db: 0 } }, "ss", 0xffffn).ok, true);
    assert.equal(segmentToLinear({ ...pm, ss: { ...down, db: 0 } }, "ss", 0xffffn, 2).ok, false);
    // A code segment with the same type bits is not expand-down (bit 3 set: code).
    assert.equal(segmentToLinear({ ...pm, cs: seg({ type: 0xf, limit: 0xfff }) }, "cs", 0x10n).ok, true);
  });

  test("64-bit mode: no limit check, only FS and GS have a base", () => {
    const lm = {
      cr0: CR0_PE | CR0_PG,
      efer: EFER_LME | EFER_LMA,
      cs: seg({ type: 0xb, l: 1, db: 0, limit: 0 }),
    };
    const ds = seg({ base: 0x1234n, limit: 0 });
    assert.deepEqual(segmentToLinear({ ...lm, ds }, "ds", 0xffff_8000_0000_0000n), {
      ok: true,
      linear: 0xffff_8000_0000_0000n,
    });
    assert.deepEqual(segmentToLinear({ ...lm, gs: ds }, "gs", 0x10n), { ok: true, linear: 0x1244n });
    assert.deepEqual(segmentToLinear({ ...lm, fs: seg({ base: 0xffff_ffff_ffff_fff0n }) }, "fs", 0x20n), {
      ok: true,
      linear: 0x10n,
    });
    // Compatibility mode (CS.L = 0 under EFER.LMA) checks limits as protected mode does.
    assert.equal(segmentToLinear({ ...lm, cs: seg({ type: 0xb, limit: 0xfff }) }, "cs", 0x1000n).ok, false);
  });
});

// --- Part 2: real guests on this host's KVM ---

const MEM = 64 << 20;

/** Every 32-bit word of [from, to) holds its own address XOR 0x5a5a5a5a: a read tells where it landed. */
function fillPattern(mem: GuestMemory, from: number, to: number): void {
  const v = new DataView(mem.slice(from, to - from).buffer, mem.slice(from, to - from).byteOffset, to - from);
  for (let o = 0; o < to - from; o += 4) v.setUint32(o, ((from + o) ^ 0x5a5a5a5a) >>> 0, true);
}

/** The state the walk needs, from the stopped vCPU (features from the CPUID the vCPU was given). */
function vcpuState(vm: Vm, vcpu: Vcpu, withPdptes = true): PagingState {
  const s = vcpu.getSregs();
  const f = pagingFeatures(vm.kvm.cpuid());
  const pae = pagingMode(s) === "pae";
  return pagingState(s, vcpu.getRegs().rflags, f, pae && withPdptes ? pdptrs(vcpu) : undefined);
}

/** The state as the guest's CPU applies it: QEMU's TCG walks an AMD CPU model's tables by Intel's rules. */
function cpuState(state: PagingState): PagingState {
  return onQemuTcg() ? { ...state, vendor: "intel" } : state;
}

/** The page-fault error code the walk says an access gets; undefined: no fault. */
function expectedFault(state: PagingState, p: Probe, mem: GuestMemory): number | undefined {
  const kind = p.access === "exec" ? "execute" : p.access;
  const o = accessOutcome({ ...cpuState(state), ac: p.ac ?? false }, p.va, kind, mem);
  assert.ok(o.fault === "none" || o.fault === "page-fault", `probe ${hexs(p.va)}: ${o.fault}`);
  return o.fault === "page-fault" ? o.errorCode : undefined;
}

const hexs = (v: bigint | number) => `0x${v.toString(16)}`;

/** Check each probe's outcome in the guest against the walk; returns how many faulted. */
function checkProbes(state: PagingState, results: ProbeResult[], mem: GuestMemory): number {
  let faults = 0;
  const tcg = onQemuTcg();
  for (const r of results) {
    const want = expectedFault(state, r.probe, mem);
    const what = `${r.probe.access} ${hexs(r.probe.va)}${r.probe.ac ? " (AC=1)" : ""}`;
    if (want === undefined) {
      assert.equal(
        r.fault,
        undefined,
        `${what}: the walk allows it, the guest took #PF ${hexs(r.fault?.code ?? 0)}\n${formatWalk(walk(state, r.probe.va, mem), state).join("\n")}`,
      );
      if (r.probe.access === "read") {
        const w = walk(cpuState(state), r.probe.va, mem);
        assert.ok(w.ok);
        assert.equal(
          r.value,
          mem.readU32(Number(w.gpa)),
          `${what}: the guest read another place than ${hexs(w.gpa)}`,
        );
      }
    } else {
      faults++;
      assert.ok(r.fault, `${what}: the walk says #PF ${hexs(want)}, the guest did not fault`);
      // Under QEMU's TCG a reserved-bit fault comes without P (onQemuTcg): compare the rest of the code.
      const got = tcg && (want & 8) !== 0 ? r.fault.code | 1 : r.fault.code;
      assert.equal(hexs(got), hexs(want), `${what}: error code ${hexs(r.fault.code)}`);
      assert.equal(r.fault.cr2, r.probe.va, `${what}: CR2`);
    }
  }
  return faults;
}

/** Sign-extended 48-bit address. */
const canon48 = (v: bigint) => (v & (1n << 47n) ? v | (0xffffn << 48n) : v & ((1n << 48n) - 1n));

/** A small fixed-seed generator (xorshift64*) for sample addresses. */
function prng(seed: bigint): () => bigint {
  let x = seed;
  return () => {
    x ^= x >> 12n;
    x ^= (x << 25n) & 0xffff_ffff_ffff_ffffn;
    x ^= x >> 27n;
    return (x * 0x2545f4914f6cdd1dn) & 0xffff_ffff_ffff_ffffn;
  };
}

/**
 * Walk every address, then ask KVM_TRANSLATE (in that order: KVM's walk sets Accessed bits). They must agree
 * on whether there is a translation and where, except where KVM is known to differ from the SDM, which
 * `known` names per address (the caller asserts what KVM does there).
 */
function compareWithKvm(
  state: PagingState,
  vcpu: Vcpu,
  mem: GuestMemory,
  vas: readonly bigint[],
  known: (va: bigint, w: Walk) => boolean = () => false,
): { compared: number; translated: number } {
  const walks = vas.map((va) => walk(state, va, mem));
  let compared = 0;
  let translated = 0;
  vas.forEach((va, i) => {
    const w = walks[i];
    if (known(va, w)) return;
    const k = vcpu.translate(va);
    compared++;
    // KVM_TRANSLATE is a supervisor-mode data read: where such a read is not allowed (SMAP on a user page,
    // RFLAGS.AC clear) it reports no translation.
    const ours =
      w.ok && w.rights.supervisor.read ? hexs(w.gpa) : `none (${w.ok ? "no supervisor read" : w.reason})`;
    const kvms = k.valid ? hexs(k.gpa) : "none";
    assert.equal(
      ours === kvms || (ours.startsWith("none") && !k.valid),
      true,
      `${hexs(va)}: walk ${ours}, KVM_TRANSLATE ${kvms}\n${formatWalk(w, state).join("\n")}`,
    );
    if (k.valid) translated++;
  });
  return { compared, translated };
}

function withVm(fn: (vm: Vm, vcpu: Vcpu) => void): void {
  const vm = Vm.create({ memSize: MEM, irqchip: false });
  try {
    fn(vm, vm.createVcpu());
  } finally {
    vm.close();
  }
}

test("long mode, vmtool's own tables: the walk agrees with KVM_TRANSLATE; KVM differs on Accessed bits and non-canonical addresses", () => {
  withVm((vm, vcpu) => {
    const mem = vm.memory;
    mem.write(0x10_0000, assembleBytes(".code64\n hlt", 0x10_0000, 64));
    bootVcpu(vcpu, mem, { mode: "long", entry: 0x10_0000 });
    assert.equal(runPhase(vcpu).end.kind, "hlt");
    const state = vcpuState(vm, vcpu);
    assert.equal(pagingMode(state), "4-level");

    // vmtool maps the low 4 GiB with 2 MiB pages, supervisor, writable, executable (EFER.NXE is off).
    const w = walk(state, 0xc012_3456n, mem);
    assert.ok(w.ok);
    assert.equal(w.gpa, 0xc012_3456n);
    assert.equal(w.page.size, 0x20_0000);
    assert.deepEqual(
      w.entries.map((e) => e.level),
      ["PML4E", "PDPTE", "PDE"],
    );
    assert.deepEqual(w.rights.supervisor, all);
    assert.deepEqual(w.rights.userMode, none);
    assert.equal(w.inRam, false);
    // The guest never touched 3 GiB: that PDPTE and PDE were never used, so Accessed is clear. KVM_TRANSLATE
    // sets it, as a CPU walk would: a debugger that must not change the guest cannot use it.
    assert.equal(w.entries[1].bits.accessed, false);
    assert.equal(w.entries[2].bits.accessed, false);
    assert.equal(vcpu.translate(0xc012_3456n).gpa, 0xc012_3456n);
    const after = walk(state, 0xc012_3456n, mem);
    assert.equal(after.entries[1].bits.accessed, true, "KVM_TRANSLATE left PDPTE.A clear");
    assert.equal(after.entries[2].bits.accessed, true, "KVM_TRANSLATE left PDE.A clear");
    assert.equal(after.entries[2].raw, w.entries[2].raw | A);

    const next = prng(0x9e3779b97f4a7c15n);
    const vas: bigint[] = [0n, 0xfffn, 0x1000n, 0xffff_ffffn, 0x1_0000_0000n, 0x7fff_ffff_ffffn];
    vas.push(
      0xffff_8000_0000_0000n,
      0xffff_ffff_ffff_ffffn,
      BigInt(LAYOUT.PAGE_TABLES),
      BigInt(LAYOUT.MMIO_BASE),
    );
    for (let i = 0n; i < 2048n + 32n; i += 5n) vas.push(i * 0x20_0000n + (next() & 0x1f_ffffn));
    for (let i = 0; i < 300; i++) vas.push(next() & 0xffff_ffffn);
    for (let i = 0; i < 100; i++) vas.push(canon48(next()));
    const { compared, translated } = compareWithKvm(state, vcpu, mem, vas);
    assert.ok(
      translated > 700 && compared - translated > 100,
      `${compared} compared, ${translated} translated`,
    );

    // Non-canonical addresses: the SDM says #GP, no translation; KVM_TRANSLATE ignores bits 63:48.
    for (const va of [0x0000_8000_0000_1234n, 0x8000_0000_8000_1234n, 0x1234_0000_0010_1234n]) {
      const nc = walk(state, va, mem);
      assert.ok(!nc.ok && nc.reason === "non-canonical");
      const k = vcpu.translate(va);
      assert.deepEqual(k, vcpu.translate(canon48(va)), `KVM_TRANSLATE(${hexs(va)})`);
      assert.equal(k.valid, canon48(va) < 0x1_0000_0000n);
    }
  });
});

// The long-mode guest's own tables (it writes them, then loads CR3): a non-identity map with 4 KiB, 2 MiB and
// 1 GiB pages, a recursive entry, reserved bits, and the low 64 MiB identity-mapped for its code and stack.
const L = {
  PML4: 0x20_0000,
  PDPT_LOW: 0x20_1000,
  PD_LOW: 0x20_2000,
  PDPT_K: 0x20_3000,
  PD_K: 0x20_4000,
  PT_K: 0x20_5000,
  PDPT_U: 0x20_6000,
  PD_U: 0x20_7000,
  PDPT_G: 0x20_8000,
  IDT: 0x21_0000,
  /** 4 KiB pages: 0x300000.. (the pattern), and three pages of RET bytes for execute probes. */
  RET_PAGES: [0x31_0000, 0x31_1000, 0x31_2000],
} as const;
const VA_K = 0xffff_8000_0000_0000n; // PML4[256]: 4 KiB pages
const VA_U = 0x0000_7f00_0000_0000n; // PML4[254]: 2 MiB pages
const VA_G = 0xffff_ff80_0000_0000n; // PML4[511]: 1 GiB pages, and a PD shared with the identity map
const VA_RECURSIVE = 0xffff_ff7f_bfdf_e000n; // PML4[510] four times: the PML4 itself
const VA_PS_PML4E = 0x0000_0080_0000_0000n; // PML4[1] with PS set (reserved)
const VA_BIT8_PML4E = 0x0000_0100_0000_0000n; // PML4[2] with bit 8 set (ignored by Intel, reserved by AMD)

/** PT_K[i]: the 4 KiB page VA_K + i * 4 KiB, shuffled over 0x300000.. with a different set of bits each. */
function ptK(i: number): bigint {
  const pa = BigInt(0x30_0000 + ((i * 5) % 16) * 0x1000);
  const flags: bigint[] = [
    P | RW,
    P, // read-only
    P | RW | US,
    P | US, // user, read-only
    P | RW | G,
    0n, // not present
    P | RW | bit(51), // reserved with MAXPHYADDR 48
    P | RW | XD,
    P | RW,
    P | RW | US,
    P | RW | bit(52), // ignored bit
    P | RW | 0x18n, // PWT, PCD
  ];
  if (i === 7) return BigInt(L.RET_PAGES[1]) | flags[7];
  if (i === 8) return BigInt(L.RET_PAGES[0]) | flags[8];
  if (i === 9) return BigInt(L.RET_PAGES[2]) | flags[9];
  return pa | (flags[i] ?? P | RW);
}

function longGuestTables(): [number, bigint][] {
  const e: [number, bigint][] = [];
  const at = (table: number, index: number, v: bigint) => e.push([table + index * 8, v]);
  at(L.PML4, 0, BigInt(L.PDPT_LOW) | P | RW);
  at(L.PML4, 1, BigInt(L.PDPT_LOW) | P | RW | PS);
  at(L.PML4, 2, BigInt(L.PDPT_LOW) | P | RW | G);
  at(L.PML4, 254, BigInt(L.PDPT_U) | P | RW | US);
  at(L.PML4, 256, BigInt(L.PDPT_K) | P | RW | US);
  at(L.PML4, 510, BigInt(L.PML4) | P | RW);
  at(L.PML4, 511, BigInt(L.PDPT_G) | P | RW);
  at(L.PDPT_LOW, 0, BigInt(L.PD_LOW) | P | RW);
  at(L.PDPT_K, 0, BigInt(L.PD_K) | P | RW | US);
  at(L.PD_K, 0, BigInt(L.PT_K) | P | RW | US);
  at(L.PD_K, 1, 0x60_0000n | P | RW | PS | bit(13)); // reserved bit of a 2 MiB page
  at(L.PD_K, 3, 0xa0_0000n | P | PS); // read-only 2 MiB page
  for (let i = 0; i < 16; i++) at(L.PT_K, i, ptK(i));
  at(L.PDPT_U, 0, BigInt(L.PD_U) | P | RW | US);
  for (let k = 0; k < 4; k++) at(L.PD_U, k, BigInt(0x40_0000 + ((k * 3) % 4) * 0x20_0000) | P | RW | PS | US);
  at(L.PDPT_G, 0, 0n | P | RW | PS); // 1 GiB page at 0
  at(L.PDPT_G, 1, 0x4000_0000n | P | PS | bit(13)); // reserved bit of a 1 GiB page
  at(L.PDPT_G, 2, BigInt(L.PD_LOW) | P | RW); // the identity map's PD again
  return e;
}

const LONG_PHASES: { setup: string; probes: Probe[] }[] = [
  {
    // As vmtool starts long mode: CR0.WP = 1, EFER.NXE = 0 (so XD is a reserved bit).
    setup: "",
    probes: [
      ...Array.from({ length: 12 }, (_, i): Probe => ({
        va: VA_K + BigInt(i * 0x1000 + 0x10 + 4 * i),
        access: "read",
      })),
      { va: VA_K + 0x20_0000n, access: "read" },
      { va: VA_K + 0x40_0000n, access: "read" },
      { va: VA_K + 0x60_1234n, access: "read" },
      ...Array.from({ length: 4 }, (_, k): Probe => ({
        va: VA_U + BigInt(k * 0x20_0000 + 0x40 + k * 4),
        access: "read",
      })),
      { va: VA_G + 0x30_0020n, access: "read" },
      { va: VA_G + 0x4000_0000n, access: "read" },
      { va: VA_G + 0x8030_0024n, access: "read" },
      { va: VA_RECURSIVE + 256n * 8n, access: "read" },
      { va: VA_PS_PML4E + 0x30_0000n, access: "read" },
      { va: VA_BIT8_PML4E + 0x30_0028n, access: "read" },
      { va: VA_K + 0x0100n, access: "write", value: 0x1111 },
      { va: VA_K + 0x1100n, access: "write", value: 0x2222 }, // read-only, CR0.WP = 1
      { va: VA_K + 0x2100n, access: "write", value: 0x3333 }, // a user page (no SMAP)
      { va: VA_K + 0x60_2000n, access: "write", value: 0x4444 }, // read-only 2 MiB page
      { va: VA_K + 0x8000n, access: "exec" },
      { va: VA_K + 0x7000n, access: "exec" }, // XD without NXE: reserved
    ],
  },
  {
    setup: "mov $0xc0000080, %ecx\n rdmsr\n or $0x800, %eax\n wrmsr", // EFER.NXE
    probes: [
      { va: VA_K + 0x7010n, access: "read" },
      { va: VA_K + 0x7000n, access: "exec" },
      { va: VA_K + 0x8000n, access: "exec" },
      { va: VA_K + 0x9000n, access: "exec" },
    ],
  },
  {
    setup: "mov %cr0, %rax\n and $~0x10000, %rax\n mov %rax, %cr0", // CR0.WP = 0
    probes: [
      { va: VA_K + 0x1104n, access: "write", value: 0x5555 },
      { va: VA_K + 0x3104n, access: "write", value: 0x6666 },
    ],
  },
  {
    setup:
      "mov %cr0, %rax\n or $0x10000, %rax\n mov %rax, %cr0\n mov %cr4, %rax\n or $0x100000, %rax\n mov %rax, %cr4", // WP, SMEP
    probes: [
      { va: VA_K + 0x9000n, access: "exec" }, // a user page
      { va: VA_K + 0x8000n, access: "exec" },
      { va: VA_K + 0x2010n, access: "read" },
    ],
  },
  {
    setup: "mov %cr4, %rax\n and $~0x100000, %rax\n or $0x200000, %rax\n mov %rax, %cr4", // SMAP, no SMEP
    probes: [
      { va: VA_K + 0x2014n, access: "read" },
      { va: VA_K + 0x2018n, access: "read", ac: true },
      { va: VA_K + 0x2200n, access: "write", value: 0x7777 },
      { va: VA_K + 0x2204n, access: "write", value: 0x8888, ac: true },
      { va: VA_K + 0x0018n, access: "read" },
      { va: VA_K + 0x9000n, access: "exec" },
    ],
  },
];

/** Addresses to compare with KVM_TRANSLATE: every probe, each region's pages, and random ones. */
function longSampleVas(): bigint[] {
  const vas = LONG_PHASES.flatMap((ph) => ph.probes.map((p) => p.va));
  const next = prng(0x5851f42d4c957f2dn);
  for (let i = 0n; i < 24n; i++) vas.push(VA_K + i * 0x1000n + 0x123n, VA_K + i * 0x20_0000n);
  for (let k = 0n; k < 8n; k++) vas.push(VA_U + k * 0x20_0000n + 0x2_3456n);
  for (let g = 0n; g < 4n; g++) vas.push(VA_G + g * 0x4000_0000n + (next() & 0x3fff_ffffn));
  for (let i = 0; i < 64; i++) vas.push(VA_G + 0x8000_0000n + (next() & 0x3ff_ffffn));
  for (let i = 0n; i < 4n; i++) vas.push(VA_RECURSIVE + i * 8n, VA_RECURSIVE - 0x20_0000n * i);
  for (let i = 0; i < 64; i++) vas.push(canon48(next()));
  for (let i = 0; i < 64; i++) vas.push(next() & 0x3ff_ffffn);
  vas.push(VA_PS_PML4E, VA_BIT8_PML4E, VA_BIT8_PML4E + 0x1234n);
  return vas;
}

test("long mode with the guest's own non-identity tables: each access the guest makes, and KVM_TRANSLATE, agree with the walk", (t) => {
  withVm((vm, vcpu) => {
    const mem = vm.memory;
    fillPattern(mem, 0x30_0000, 0xc0_0000);
    for (const p of L.RET_PAGES) mem.fill(p, 0x1000, 0xc3); // RET
    const { setup, handlers } = idtAndHandlers(64, L.IDT);
    let n = 0;
    const phases = LONG_PHASES.map((ph) => {
      const first = n;
      const code = ph.probes.map((p) => probe64(p, n++)).join("\n");
      return { first, code: `${ph.setup}\n${code}\n hlt` };
    });
    const source = `.code64
  ${setup}
  mov $${L.PD_LOW}, %rdi
  mov $0x83, %eax
  mov $32, %ecx
1: mov %rax, (%rdi)
  add $0x200000, %rax
  add $8, %rdi
  loop 1b
  ${stores64(longGuestTables())}
  mov $${L.PML4}, %rax
  mov %rax, %cr3
  ${phases.map((p) => p.code).join("\n")}
  ${handlers}`;
    mem.write(0x10_0000, assembleBytes(source, 0x10_0000, 64));
    bootVcpu(vcpu, mem, { mode: "long", entry: 0x10_0000 });
    const features = pagingFeatures(vm.kvm.cpuid());
    t.diagnostic(`features: ${JSON.stringify(features)}`);
    LONG_PHASES.forEach((ph, i) => {
      const { outs, end } = runPhase(vcpu);
      assert.deepEqual(end, { kind: "hlt" }, `phase ${i}: ${JSON.stringify(outs.slice(-4))}`);
      const state = vcpuState(vm, vcpu);
      assert.equal(state.cr3, BigInt(L.PML4));
      const results = probeResults(outs, ph.probes, phases[i].first);
      if (i === 0) {
        // Before any KVM_TRANSLATE: the guest's own accesses set the Accessed and Dirty bits the walk reports.
        const written = new Set(
          results.filter((r) => r.probe.access === "write" && !r.fault).map((r) => r.probe.va >> 12n),
        );
        for (const r of results) {
          const w = walk(state, r.probe.va, mem);
          if (!w.ok || r.fault) continue;
          assert.ok(
            w.entries.every((e) => e.bits.accessed !== false),
            `${hexs(r.probe.va)}: an entry without A`,
          );
          const leaf = w.entries[w.entries.length - 1];
          if (r.probe.access === "write") assert.equal(leaf.bits.dirty, true, `${hexs(r.probe.va)}: D`);
          else if (w.page.size === 0x1000 && !written.has(r.probe.va >> 12n) && r.probe.va >= VA_K)
            assert.equal(leaf.bits.dirty, false, `${hexs(r.probe.va)}: D after a read`);
        }
        const untouched = walk(state, VA_K + 0xe000n, mem);
        assert.ok(untouched.ok && untouched.entries[3].bits.accessed === false);
      }
      const faults = checkProbes(state, results, mem);
      // Where KVM_TRANSLATE differs from the SDM: non-canonical addresses (none here) and AMD's bit 8 (the walk
      // already applies the vendor's rule, so no exception is needed).
      const { compared, translated } = compareWithKvm(state, vcpu, mem, longSampleVas());
      t.diagnostic(
        `phase ${i}: ${results.length} probes (${faults} faulted as the walk said), ${compared} addresses compared with KVM_TRANSLATE (${translated} translated)`,
      );
    });
  });
});

// Protected-mode guests that turn on 32-bit or PAE paging themselves, with their own tables.
const PM = {
  TABLE0: 0x20_0000,
  TABLE1: 0x20_1000,
  TABLE2: 0x20_2000,
  TABLE3: 0x20_3000,
  IDT: 0x21_0000,
} as const;

/** The 16 4 KiB pages both guests map at a non-identity place: frames shuffled over 0x300000.., bits varied. */
function pmPage(i: number, xdOn7: boolean): bigint {
  if (i === 7) return BigInt(L.RET_PAGES[1]) | P | RW | (xdOn7 ? XD : 0n);
  if (i === 8) return BigInt(L.RET_PAGES[0]) | P | RW;
  const flags = [P | RW, P, P | RW | US, P | US, P | RW | G, 0n, P | RW | PS /* PAT */];
  return BigInt(0x30_0000 + ((i * 5) % 16) * 0x1000) | (flags[i] ?? P | RW);
}

interface PmGuest {
  /** Entries the guest writes before it turns paging on: (address, value, size). */
  tables: [number, bigint, 4 | 8][];
  /** 32-bit paging: write the identity page table of the low 4 MiB (TABLE1) with a loop. */
  identity: boolean;
  enable: string;
  phases: { setup: string; probes: Probe[] }[];
  /** Sample addresses for KVM_TRANSLATE. */
  vas: bigint[];
}

function guest32(): PmGuest {
  const t: [number, bigint, 4 | 8][] = [];
  const pde = (i: number, v: bigint) => t.push([PM.TABLE0 + 4 * i, v, 4]);
  pde(0, BigInt(PM.TABLE1) | P | RW); // identity for the low 4 MiB (the page table is written by a loop)
  pde(0x200, BigInt(PM.TABLE2) | P | RW | US); // 0x80000000: 4 KiB pages
  pde(0x201, 0x40_0000n | P | RW | PS); // 0x80400000: a 4 MiB page with CR4.PSE, else a page table at 0x400000
  pde(0x202, 0x40_0000n | P | PS | bit(13)); // PSE-36: physical 0x1_0040_0000
  pde(0x203, 0x40_0000n | P | PS | bit(17)); // PSE-36 bit 36 (MAXPHYADDR 48 gives M = 40)
  pde(0x204, 0x40_0000n | P | PS | bit(21)); // reserved
  pde(0x206, 0x80_0000n | P | RW | US | PS | G); // 0x81800000
  for (let i = 0; i < 16; i++) t.push([PM.TABLE2 + 4 * i, pmPage(i, false), 4]);
  const pages = (n: number, off: number): Probe[] =>
    Array.from({ length: n }, (_, i) => ({
      va: 0x8000_0000n + BigInt(i * 0x1000 + off + 4 * i),
      access: "read",
    }));
  const vas: bigint[] = [];
  for (let i = 0n; i < 0x208n; i += 1n) vas.push(i * 0x40_0000n + 0x12_3456n);
  for (let i = 0n; i < 20n; i++) vas.push(0x8000_0000n + i * 0x1000n + 0x10n);
  for (let i = 0n; i < 0x400n; i += 37n) vas.push(i * 0x1000n + 0x20n);
  return {
    tables: t,
    identity: true,
    enable: `mov $${PM.TABLE0}, %eax\n mov %eax, %cr3\n mov %cr0, %eax\n or $0x80000000, %eax\n mov %eax, %cr0`,
    phases: [
      {
        setup: "", // CR4.PSE = 0, CR0.WP = 0 (as vmtool starts protected mode)
        probes: [
          ...pages(7, 0x10),
          { va: 0x8040_0020n, access: "read" },
          { va: 0x8180_0024n, access: "read" },
          { va: 0x8000_1100n, access: "write", value: 0x1111 },
          { va: 0x8000_7000n, access: "exec" },
        ],
      },
      {
        setup:
          "mov %cr4, %eax\n or $0x10, %eax\n mov %eax, %cr4\n mov %cr0, %eax\n or $0x10000, %eax\n mov %eax, %cr0",
        probes: [
          { va: 0x8040_0020n, access: "read" },
          { va: 0x8180_0024n, access: "read" },
          { va: 0x8000_1104n, access: "write", value: 0x2222 },
          { va: 0x8180_0100n, access: "write", value: 0x3333 },
          { va: 0x8140_0000n, access: "read" },
          { va: 0x8100_0000n, access: "read" },
          ...pages(5, 0x30),
        ],
      },
    ],
    vas,
  };
}

function guestPae(): PmGuest {
  const t: [number, bigint, 4 | 8][] = [];
  const e = (table: number, i: number, v: bigint) => t.push([table + 8 * i, v, 8]);
  e(PM.TABLE0, 0, BigInt(PM.TABLE1) | P); // PDPT
  e(PM.TABLE0, 1, BigInt(PM.TABLE1) | P);
  e(PM.TABLE0, 2, BigInt(PM.TABLE2) | P);
  e(PM.TABLE1, 0, 0n | P | RW | PS); // identity 0..4 MiB with 2 MiB pages
  e(PM.TABLE1, 1, 0x20_0000n | P | RW | PS);
  e(PM.TABLE1, 2, BigInt(PM.TABLE3) | P | RW | US); // 0x400000: 4 KiB pages
  for (let i = 0; i < 16; i++) e(PM.TABLE3, i, pmPage(i, true));
  e(PM.TABLE2, 0, 0x60_0000n | P | RW | PS); // 0x80000000
  e(PM.TABLE2, 1, 0x80_0000n | P | RW | PS | XD);
  e(PM.TABLE2, 2, 0x80_0000n | P | PS | bit(47)); // address bit 47 with MAXPHYADDR 48
  e(PM.TABLE2, 3, 0x80_0000n | P | PS | bit(50)); // reserved
  e(PM.TABLE2, 4, 0xa0_0000n | P | PS | bit(13)); // reserved
  const vas: bigint[] = [];
  for (let i = 0n; i < 0x800n; i += 3n) vas.push(i * 0x20_0000n + 0x1_2345n);
  for (let i = 0n; i < 20n; i++) vas.push(0x40_0000n + i * 0x1000n + 0x10n);
  return {
    tables: t,
    identity: false,
    enable: `mov %cr4, %eax\n or $0x20, %eax\n mov %eax, %cr4\n mov $${PM.TABLE0}, %eax\n mov %eax, %cr3\n mov %cr0, %eax\n or $0x80000000, %eax\n mov %eax, %cr0`,
    phases: [
      {
        setup: "", // EFER.NXE = 0: XD is reserved
        probes: [
          ...Array.from({ length: 9 }, (_, i): Probe => ({
            va: 0x40_0000n + BigInt(i * 0x1000 + 0x10 + 4 * i),
            access: "read",
          })),
          { va: 0x8000_0030n, access: "read" },
          { va: 0x8020_0000n, access: "read" },
          { va: 0x8060_0000n, access: "read" },
          { va: 0x8080_0000n, access: "read" },
          { va: 0x80a0_0000n, access: "read" },
          { va: 0x4030_0040n, access: "read" },
          { va: 0xc000_0000n, access: "read" },
          { va: 0x40_7000n, access: "exec" },
          { va: 0x40_8000n, access: "exec" },
          { va: 0x40_1100n, access: "write", value: 0x1111 }, // read-only, CR0.WP = 0
        ],
      },
      {
        setup: "mov $0xc0000080, %ecx\n rdmsr\n or $0x800, %eax\n wrmsr", // EFER.NXE
        probes: [
          { va: 0x40_7000n, access: "exec" },
          { va: 0x40_7010n, access: "read" },
          { va: 0x8020_0010n, access: "read" },
        ],
      },
      {
        // The PDPT changes in memory, CR3 is not reloaded: the CPU keeps using the PDPTE registers it loaded.
        setup: `movl $0, ${PM.TABLE0 + 8}\n movl $${PM.TABLE2 | 1}, ${PM.TABLE0 + 24}`,
        probes: [
          { va: 0x4030_0044n, access: "read" },
          { va: 0xc000_0034n, access: "read" },
        ],
      },
      {
        setup: "mov %cr3, %eax\n mov %eax, %cr3", // reload: now the registers are the new PDPTEs
        probes: [
          { va: 0x4030_0048n, access: "read" },
          { va: 0xc000_0038n, access: "read" },
        ],
      },
    ],
    vas,
  };
}

/** Build and boot a protected-mode guest that writes `g.tables`, loads its IDT, then runs `g.enable`. */
function bootPmGuest(vm: Vm, vcpu: Vcpu, g: PmGuest): { first: number[] } {
  const mem = vm.memory;
  fillPattern(mem, 0x30_0000, 0xc0_0000);
  for (const p of L.RET_PAGES) mem.fill(p, 0x1000, 0xc3);
  const { setup, handlers } = idtAndHandlers(32, PM.IDT);
  let n = 0;
  const first: number[] = [];
  const phases = g.phases.map((ph) => {
    first.push(n);
    return `${ph.setup}\n${ph.probes.map((p) => probe32(p, n++)).join("\n")}\n hlt`;
  });
  const by = (size: 4 | 8) => g.tables.filter((x) => x[2] === size).map(([a, v]): [number, bigint] => [a, v]);
  const identity = `mov $${PM.TABLE1}, %edi
  mov $3, %eax
  mov $1024, %ecx
1: mov %eax, (%edi)
  add $0x1000, %eax
  add $4, %edi
  loop 1b`;
  const source = `.code32
  ${setup}
  ${g.identity ? identity : ""}
  ${stores32(by(4), 4)}
  ${stores32(by(8), 8)}
  ${g.enable}
  hlt
  ${phases.join("\n")}
  ${handlers}`;
  mem.write(0x10_0000, assembleBytes(source, 0x10_0000, 32));
  bootVcpu(vcpu, mem, { mode: "protected", entry: 0x10_0000 });
  return { first };
}

for (const kind of ["32-bit", "pae"] as const) {
  const name = kind === "pae" ? "PAE" : "32-bit";
  test(
    `${name} paging on kvm_pvm: the guest's MOV to CR0 that sets PG takes #GP(0); KVM_SET_SREGS drops PG and the next run shuts down`,
    { skip: !onKvmPvm() && "the backend is not kvm_pvm" },
    () => {
      withVm((vm, vcpu) => {
        const g = kind === "pae" ? guestPae() : guest32();
        bootPmGuest(vm, vcpu, g);
        const { outs, end } = runPhase(vcpu);
        assert.deepEqual(end, { kind: "hlt" });
        assert.deepEqual(outs, [
          { port: 0x2f, value: 13 },
          { port: 0x2f, value: 0 },
        ]);
        const s = vcpu.getSregs();
        assert.equal(s.cr0 & CR0_PG, 0n);
        assert.equal(s.cr4 & (kind === "pae" ? CR4_PAE : CR4_PSE), kind === "pae" ? CR4_PAE : 0n);
        // With paging off the walk and KVM_TRANSLATE both give the identity.
        const state = vcpuState(vm, vcpu);
        assert.equal(pagingMode(state), "none");
        assert.equal(compareWithKvm(state, vcpu, vm.memory, [0x8000_0000n, 0x40_0000n]).translated, 2);
        // Set from outside: accepted, but PG reads back clear and the vCPU cannot run.
        vcpu.setSregs({ ...s, cr0: s.cr0 | CR0_PG, cr3: BigInt(PM.TABLE0) });
        assert.equal(vcpu.getSregs().cr0 & CR0_PG, 0n);
        assert.deepEqual(runPhase(vcpu).end, { kind: "shutdown" });
      });
    },
  );

  test(
    `${name} paging set up by the guest: each access it makes, and KVM_TRANSLATE, agree with the walk`,
    { skip: onKvmPvm() && `kvm_pvm cannot run a guest with ${name} paging (the test above)` },
    (t) => {
      withVm((vm, vcpu) => {
        const mem = vm.memory;
        const g = kind === "pae" ? guestPae() : guest32();
        const { first } = bootPmGuest(vm, vcpu, g);
        const on = runPhase(vcpu);
        assert.deepEqual(on, { outs: [], end: { kind: "hlt" } }, "turning paging on");
        g.phases.forEach((ph, i) => {
          const { outs, end } = runPhase(vcpu);
          assert.deepEqual(end, { kind: "hlt" }, `phase ${i}: ${JSON.stringify(outs.slice(-4))}`);
          const state = vcpuState(vm, vcpu);
          assert.equal(pagingMode(state), kind);
          const results = probeResults(outs, ph.probes, first[i]);
          // A PDPT changed in memory while CR3 was not reloaded (PAE phases 2 and 3): Intel's CPUs use the
          // PDPTE registers (SDM 4.4.1), AMD's under nested paging read the PDPT on every walk. QEMU's TCG reads
          // memory too and sets bit 5 (reserved by both) of the PDPTEs it used, so KVM's reload fails and
          // KVM_GET_SREGS2 keeps the old registers (seen under kvm_amd): only KVM_TRANSLATE is compared then.
          const stalePdpt = kind === "pae" && i >= 2;
          const cpuView = stalePdpt && state.vendor === "amd" ? vcpuState(vm, vcpu, false) : state;
          if (stalePdpt && onQemuTcg())
            t.diagnostic(`phase ${i}: QEMU's TCG: the probes are not compared (see above)`);
          const faults = stalePdpt && onQemuTcg() ? 0 : checkProbes(cpuView, results, mem);
          // KVM's 32-bit walker takes PSE-36 as 36 bits (bits 21:17 reserved) where the SDM has
          // M = min(40, MAXPHYADDR): that PDE (0x80C00000) is checked on its own below.
          const pse36Bit36 = (va: bigint) =>
            kind === "32-bit" && va >> 22n === 0x203n && (state.cr4 & CR4_PSE) !== 0n;
          const { compared, translated } = compareWithKvm(
            state,
            vcpu,
            mem,
            [...g.vas, ...ph.probes.map((p) => p.va)],
            pse36Bit36,
          );
          if (kind === "32-bit" && (state.cr4 & CR4_PSE) !== 0n) {
            const w = walk(state, 0x80c0_1234n, mem);
            assert.ok(w.ok && w.gpa === 0x10_0040_1234n, JSON.stringify(w, big));
            assert.equal(
              vcpu.translate(0x80c0_1234n).valid,
              false,
              "KVM_TRANSLATE now follows the SDM for PSE-36 bit 36",
            );
          }
          const memoryWalk = kind === "pae" ? vcpuState(vm, vcpu, false) : state;
          const differ = g.vas.filter(
            (va) => translate(memoryWalk, va, mem).ok !== translate(state, va, mem).ok,
          ).length;
          t.diagnostic(
            `phase ${i}: ${results.length} probes (${faults} faulted as the walk said), ${compared} addresses compared with KVM_TRANSLATE (${translated} translated)${kind === "pae" ? `; PDPTEs from KVM_GET_SREGS2 ${state.pdptes ? "valid" : "not valid"}, ${differ} addresses translate differently from the PDPT in memory` : ""}`,
          );
        });
      });
    },
  );
}

/** KVM offers 5-level paging to guests (CPUID 7.0 ECX[16], LA57, in KVM_GET_SUPPORTED_CPUID). */
function kvmHasLa57(vm: Vm): boolean {
  const l7 = vm.kvm.cpuid().find((e) => e.function === 7 && e.index === 0);
  return l7 !== undefined && ((l7.ecx >>> 16) & 1) === 1;
}

test("5-level paging where KVM offers it: a guest reads through a 5-level map; elsewhere KVM refuses CR4.LA57", (t) => {
  withVm((vm, vcpu) => {
    const mem = vm.memory;
    if (!kvmHasLa57(vm)) {
      // Not even with LA57 forced into the vCPU's CPUID: KVM checks CR4 against what it supports itself.
      vcpu.setCpuid(
        vm.kvm
          .cpuid()
          .map((e) => (e.function === 7 && e.index === 0 ? { ...e, ecx: (e.ecx | (1 << 16)) >>> 0 } : e)),
      );
      mem.write(0x10_0000, assembleBytes(".code64\n hlt", 0x10_0000, 64));
      bootVcpu(vcpu, mem, { mode: "long", entry: 0x10_0000 });
      const s = vcpu.getSregs();
      assert.throws(() => vcpu.setSregs({ ...s, cr4: s.cr4 | CR4_LA57 }), /KVM_SET_SREGS.*EINVAL/);
      t.diagnostic(
        "KVM here does not offer LA57: no guest can run with 5-level paging (the walk is tested on tables in memory)",
      );
      return;
    }
    // Tables written by the test (a guest cannot switch LA57 with paging on): PML5 -> PML4 -> PDPT -> PD.
    const [PML5, PML4, PDPT, PD, PML4_HI, PDPT_HI, PD_HI, PT_HI] = [
      0x20_0000, 0x20_1000, 0x20_2000, 0x20_3000, 0x20_4000, 0x20_5000, 0x20_6000, 0x20_7000,
    ];
    for (let j = 0; j < 32; j++) mem.writeU64(PD + 8 * j, BigInt(j * 0x20_0000) | P | RW | PS);
    mem.writeU64(PDPT, BigInt(PD) | P | RW);
    mem.writeU64(PML4, BigInt(PDPT) | P | RW);
    mem.writeU64(PML4 + 8 * 256, BigInt(PDPT) | P | RW); // 0x0000800000000000: canonical only with 57 bits
    mem.writeU64(PML5, BigInt(PML4) | P | RW);
    mem.writeU64(PML5 + 8 * 0x100, BigInt(PML4_HI) | P | RW); // 0xff00000000000000
    mem.writeU64(PML5 + 8 * 0x1ff, BigInt(PML5) | P | RW); // recursive
    mem.writeU64(PML5 + 8 * 3, BigInt(PML4) | P | PS); // reserved
    mem.writeU64(PML4_HI, BigInt(PDPT_HI) | P | RW);
    mem.writeU64(PDPT_HI, BigInt(PD_HI) | P | RW);
    mem.writeU64(PD_HI, BigInt(PT_HI) | P | RW);
    for (let i = 0; i < 16; i++) mem.writeU64(PT_HI + 8 * i, ptK(i) & ~XD);
    fillPattern(mem, 0x30_0000, 0xc0_0000);
    const probes: Probe[] = [
      ...Array.from({ length: 5 }, (_, i): Probe => ({
        va: 0xff00_0000_0000_0000n + BigInt(i * 0x1000 + 0x10),
        access: "read",
      })),
      { va: 0x0000_8000_0030_0020n, access: "read" },
      { va: 0x0003_0000_0000_0000n, access: "read" },
      { va: 0x00ff_0000_0000_0000n, access: "read" },
    ];
    const { setup, handlers } = idtAndHandlers(64, 0x21_0000);
    mem.write(
      0x10_0000,
      assembleBytes(
        `.code64\n ${setup}\n ${probes.map((p, n) => probe64(p, n)).join("\n")}\n hlt\n ${handlers}`,
        0x10_0000,
        64,
      ),
    );
    bootVcpu(vcpu, mem, { mode: "long", entry: 0x10_0000 });
    const s = vcpu.getSregs();
    vcpu.setSregs({ ...s, cr3: BigInt(PML5), cr4: s.cr4 | CR4_LA57 });
    const { outs, end } = runPhase(vcpu);
    assert.deepEqual(end, { kind: "hlt" });
    const state = vcpuState(vm, vcpu);
    assert.equal(pagingMode(state), "5-level");
    const faults = checkProbes(state, probeResults(outs, probes, 0), mem);
    const vas = [
      ...probes.map((p) => p.va),
      0x0100_0000_0000_0000n,
      0xfeff_ffff_ffff_f000n,
      0xffff_ffff_ffff_f000n,
    ];
    for (let i = 0n; i < 32n; i++) vas.push(i * 0x20_0000n + 0x123n, 0xff00_0000_0000_0000n + i * 0x1000n);
    const { compared, translated } = compareWithKvm(
      state,
      vcpu,
      mem,
      vas,
      (va, w) => !w.ok && w.reason === "non-canonical",
    );
    t.diagnostic(
      `5-level: ${probes.length} probes (${faults} faulted as the walk said), ${compared} addresses compared with KVM_TRANSLATE (${translated} translated)`,
    );
  });
});
