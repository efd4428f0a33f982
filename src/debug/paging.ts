// Guest linear-to-physical address translation, done the way the CPU does it (Intel SDM vol. 3A, chapter 4,
// "Paging"), in the stopped vCPU's own paging mode: none, 32-bit, PAE, 4-level or 5-level. The walk reads the
// guest's paging structures from guest RAM through a small reader (GuestMemory is one) and explains itself:
// every entry it used (its name, index, guest-physical address, raw value, decoded bits, reserved bits set),
// why it stopped, and the access rights the levels add up to.
//
// Pure: no KVM call, no I/O, nothing written. KVM_TRANSLATE is no substitute for a debugger: it sets the
// Accessed bits of the entries it walks, translates a non-canonical address as if its bits 63:48 were not
// there, is checked as a supervisor data read (no translation for a user page under SMAP), and takes PSE-36 as
// 36 bits where the SDM has up to 40. A paging-structure address outside guest RAM ends the walk with that
// reason; nothing outside RAM is ever read.
//
// Not modelled: protection keys are reported but not applied (PKRU/PKRS are not part of the state), linear-
// address masking (LAM) and HLAT, shadow-stack pages, the memory type (PWT/PCD/PAT are reported as bits only).
import { VmtoolError } from "../errors.js";
import { hex } from "../format.js";
import type { CpuidEntry } from "../kvm/system.js";
import type { SegmentName } from "../kvm/structs.js";
import type { Segment, Sregs } from "../vm/vcpu.js";

/** A paging state that cannot exist (bad CPU parameters given by the caller). */
export class PagingStateError extends VmtoolError {}

export type PagingMode = "none" | "32-bit" | "pae" | "4-level" | "5-level";

/** What the walk needs to know about the CPU besides its registers (from CPUID). */
export interface PagingFeatures {
  /** MAXPHYADDR, the physical-address width in bits (CPUID 0x80000008 EAX[7:0]), 32..52. */
  maxPhyAddr: number;
  /** 1-GByte pages (CPUID 0x80000001 EDX[26]). Without them, bit 7 of a 4-/5-level PDPTE is reserved. */
  gbPages: boolean;
  /** PSE-36 (CPUID 1 EDX[17]): 4-MByte pages of 32-bit paging reach above 4 GiB. */
  pse36: boolean;
  /**
   * The CPU's vendor where the vendors differ: AMD reserves bit 8 of PML4Es and PML5Es (AMD64 APM vol. 2,
   * 5.3.3, "MBZ"), which Intel ignores. Intel's rules when left out.
   */
  vendor?: "intel" | "amd";
}

/** The registers that decide how a linear address is translated, and the CPU's features. */
export interface PagingState extends PagingFeatures {
  cr0: bigint;
  cr3: bigint;
  cr4: bigint;
  efer: bigint;
  /** Current privilege level, 0..3: decides which of the rights apply now. */
  cpl: number;
  /** RFLAGS.AC: with CR4.SMAP, supervisor data accesses to user pages are allowed only when it is 1. */
  ac: boolean;
  /**
   * PAE paging only: the four PDPTE registers the CPU loaded with CR3 (SDM 4.4.1; KVM_GET_SREGS2), when they
   * are what the CPU walks with: on Intel (VMX). Without them the walk reads the PDPTEs from memory at CR3,
   * which is what AMD CPUs do under nested paging (on every walk), and what an Intel CPU loaded unless the
   * guest has changed the PDPT since it last loaded CR3.
   */
  pdptes?: readonly bigint[];
}

/** Something that reads guest-physical memory: GuestMemory satisfies it. */
export interface PhysicalReader {
  contains(gpa: number, len: number): boolean;
  readU32(gpa: number): number;
  readU64(gpa: number): bigint;
}

// Control-register and EFER bits (SDM vol. 3A, 2.5 and 2.2.1).
export const CR0_PE = 1n;
export const CR0_WP = 1n << 16n;
export const CR0_PG = 1n << 31n;
export const CR4_PSE = 1n << 4n;
export const CR4_PAE = 1n << 5n;
export const CR4_PGE = 1n << 7n;
export const CR4_LA57 = 1n << 12n;
export const CR4_SMEP = 1n << 20n;
export const CR4_SMAP = 1n << 21n;
export const CR4_PKE = 1n << 22n;
export const CR4_PKS = 1n << 24n;
export const EFER_LME = 1n << 8n;
export const EFER_LMA = 1n << 10n;
export const EFER_NXE = 1n << 11n;
const RFLAGS_AC = 1n << 18n;
const RFLAGS_VM = 1n << 17n;

// Paging-structure entry bits (SDM vol. 3A, 4.3-4.5).
const P = 1n;
const RW = 1n << 1n;
const US = 1n << 2n;
const PWT = 1n << 3n;
const PCD = 1n << 4n;
const A = 1n << 5n;
const D = 1n << 6n;
const PS = 1n << 7n;
const G = 1n << 8n;
const PAT_LARGE = 1n << 12n;
const XD = 1n << 63n;

const U64 = (1n << 64n) - 1n;
const U32 = (1n << 32n) - 1n;

/** Bits hi..lo (inclusive) set; none when hi < lo. */
function bits(hi: number, lo: number): bigint {
  if (hi < lo) return 0n;
  return ((1n << BigInt(hi - lo + 1)) - 1n) << BigInt(lo);
}

/** Sign-extend a value of `width` bits to 64 bits. */
function canonical(va: bigint, width: number): bigint {
  const low = va & bits(width - 1, 0);
  return low & (1n << BigInt(width - 1)) ? low | bits(63, width) : low;
}

/** The paging mode the registers select (SDM vol. 3A, 4.1.1), or why they select none that can exist. */
export function pagingMode(s: Pick<PagingState, "cr0" | "cr4" | "efer">): PagingMode | { invalid: string } {
  const pg = (s.cr0 & CR0_PG) !== 0n;
  const lma = (s.efer & EFER_LMA) !== 0n;
  if (!pg) return lma ? { invalid: "EFER.LMA is set while CR0.PG is clear" } : "none";
  if ((s.cr0 & CR0_PE) === 0n) return { invalid: "CR0.PG is set while CR0.PE is clear" };
  if ((s.cr4 & CR4_PAE) === 0n) return lma ? { invalid: "EFER.LMA is set while CR4.PAE is clear" } : "32-bit";
  if (!lma) return "pae";
  return (s.cr4 & CR4_LA57) !== 0n ? "5-level" : "4-level";
}

/** A person's name for a mode. */
export function pagingModeName(mode: PagingMode): string {
  return mode === "none" ? "no paging" : mode === "pae" ? "PAE paging" : `${mode} paging`;
}

/**
 * The features from a CPUID table (what the lead's vCPU was given): MAXPHYADDR from leaf 0x80000008, or as
 * the SDM says when that leaf is missing (36 with PAE, else 32); 1-GByte pages; PSE-36.
 */
export function pagingFeatures(cpuid: readonly CpuidEntry[]): PagingFeatures {
  const leaf = (fn: number) => cpuid.find((e) => e.function === fn && e.index === 0);
  const l1 = leaf(1);
  const ext1 = leaf(0x8000_0001);
  const ext8 = leaf(0x8000_0008);
  const l0 = leaf(0);
  const pae = l1 !== undefined && ((l1.edx >>> 6) & 1) === 1;
  // Leaf 0 spells the vendor in EBX, EDX, ECX: "AuthenticAMD", "HygonGenuine" (AMD's paging rules).
  const vendorId = l0
    ? [l0.ebx, l0.edx, l0.ecx]
        .map((r) => String.fromCharCode(r & 0xff, (r >>> 8) & 0xff, (r >>> 16) & 0xff, r >>> 24))
        .join("")
    : "";
  return {
    maxPhyAddr: ext8 !== undefined ? ext8.eax & 0xff : pae ? 36 : 32,
    gbPages: ext1 !== undefined && ((ext1.edx >>> 26) & 1) === 1,
    pse36: l1 !== undefined && ((l1.edx >>> 17) & 1) === 1,
    vendor: vendorId === "AuthenticAMD" || vendorId === "HygonGenuine" ? "amd" : "intel",
  };
}

/**
 * The paging state of a vCPU from its registers. The CPL is SS.DPL, as KVM reports it: VMX and SVM both keep
 * the CPL there (CS.RPL equals it once CS has been loaded in protected mode); 0 in real mode, 3 in virtual-8086
 * mode.
 */
export function pagingState(
  sregs: Pick<Sregs, "cr0" | "cr3" | "cr4" | "efer" | "ss">,
  rflags: bigint,
  features: PagingFeatures,
  pdptes?: readonly bigint[],
): PagingState {
  const pe = (sregs.cr0 & CR0_PE) !== 0n;
  const vm86 = pe && (rflags & RFLAGS_VM) !== 0n && (sregs.efer & EFER_LMA) === 0n;
  return {
    cr0: sregs.cr0,
    cr3: sregs.cr3,
    cr4: sregs.cr4,
    efer: sregs.efer,
    cpl: !pe ? 0 : vm86 ? 3 : sregs.ss.dpl & 3,
    ac: (rflags & RFLAGS_AC) !== 0n,
    ...features,
    ...(pdptes ? { pdptes } : {}),
  };
}

export type EntryName = "PML5E" | "PML4E" | "PDPTE" | "PDE" | "PTE";

/** The bits an entry has, decoded; a field is there only when the entry's format has that bit. */
export interface EntryBits {
  present: boolean;
  /** R/W (bit 1). */
  writable?: boolean;
  /** U/S (bit 2): user-mode accesses allowed. */
  user?: boolean;
  /** PWT (bit 3). */
  writeThrough?: boolean;
  /** PCD (bit 4). */
  cacheDisable?: boolean;
  /** A (bit 5). */
  accessed?: boolean;
  /** D (bit 6), entries that map a page. */
  dirty?: boolean;
  /** PS (bit 7) where it selects a large page. */
  pageSize?: boolean;
  /** G (bit 8), entries that map a page. */
  global?: boolean;
  /** PAT (bit 7 of a PTE, bit 12 of a large-page entry). */
  pat?: boolean;
  /** XD (bit 63) where EFER.NXE makes it a bit (otherwise it is reserved). */
  executeDisable?: boolean;
  /** Protection key (bits 62:59) of a 4-/5-level entry that maps a page, when CR4.PKE or CR4.PKS is set. */
  protectionKey?: number;
}

export interface WalkEntry {
  level: EntryName;
  /** The entry's index in its table (bits of the linear address). */
  index: number;
  /** Guest-physical address of the entry (a PAE PDPTE register: where it was loaded from, CR3's table). */
  gpa: bigint;
  /** "register": one of PAE's four PDPTE registers, as given in the state; "memory": read from guest RAM. */
  source: "memory" | "register";
  /** 4 (32-bit paging) or 8 bytes. */
  size: 4 | 8;
  raw: bigint;
  bits: EntryBits;
  /** Reserved bits that are set (SDM: the entry is then used neither to reference a table nor to map a page). */
  reserved: bigint;
  /** What the entry does: reference the next table, map a page, or nothing (not present, reserved bit). */
  maps: "table" | "page" | "none";
  /** The next table's or the page frame's guest-physical address (when `maps` is not "none"). */
  target?: bigint;
  /** Bytes of the page the entry maps (when `maps` is "page"). */
  pageSize?: number;
}

export type StopReason =
  "not-present" | "reserved-bit" | "non-canonical" | "outside-ram" | "address-width" | "invalid-state";

/** Which accesses are allowed, for one privilege. */
export interface Access {
  read: boolean;
  write: boolean;
  execute: boolean;
}

/** The access rights the levels add up to (SDM vol. 3A, 4.6). */
export interface AccessRights {
  /** U/S = 1 at every level: a user-mode address (else supervisor-mode). */
  user: boolean;
  /** R/W = 1 at every level. */
  writable: boolean;
  /** No level forbids instruction fetches (XD with EFER.NXE). */
  executable: boolean;
  /** What code at CPL 0-2 may do here (CR0.WP, CR4.SMEP, CR4.SMAP with RFLAGS.AC applied). */
  supervisor: Access;
  /** What code at CPL 3 may do here. */
  userMode: Access;
  /** The one of the two that applies at the state's CPL. */
  now: Access;
  /** A global translation (G in the entry that maps the page, with CR4.PGE). */
  global: boolean;
}

interface WalkBase {
  /** The paging mode, or "invalid" when the registers select none (reason "invalid-state"). */
  mode: PagingMode | "invalid";
  linear: bigint;
  /** The entries used, top level first (empty without paging). */
  entries: WalkEntry[];
  /** Set when there is no paging: what the linear address is then. */
  note?: string;
}

export interface WalkOk extends WalkBase {
  ok: true;
  gpa: bigint;
  /** The page holding the address: its guest-physical base, size and the address's offset in it. */
  page: { base: bigint; size: number; offset: bigint };
  /** Whether the physical address is guest RAM (else it is MMIO or nothing). */
  inRam: boolean;
  rights: AccessRights;
}

export interface WalkStopped extends WalkBase {
  ok: false;
  reason: StopReason;
  /** One line for a person: why there is no translation. */
  message: string;
  /** The level whose entry ended the walk, when one did. */
  level?: EntryName;
}

export type Walk = WalkOk | WalkStopped;

const PAGE_4K = 0x1000;
const PAGE_2M = 0x20_0000;
const PAGE_4M = 0x40_0000;
const PAGE_1G = 0x4000_0000;

function checkFeatures(s: PagingState): void {
  if (!Number.isInteger(s.maxPhyAddr) || s.maxPhyAddr < 32 || s.maxPhyAddr > 52)
    throw new PagingStateError(`MAXPHYADDR ${s.maxPhyAddr} is not a physical-address width of 32..52 bits`);
  if (!Number.isInteger(s.cpl) || s.cpl < 0 || s.cpl > 3)
    throw new PagingStateError(`CPL ${s.cpl} is not 0..3`);
  if (s.pdptes !== undefined && s.pdptes.length !== 4)
    throw new PagingStateError(`${s.pdptes.length} PDPTE registers given, not 4`);
}

/** Reads one entry, or undefined when any of its bytes is outside guest RAM (nothing is read then). */
function readEntry(mem: PhysicalReader, gpa: bigint, size: 4 | 8): bigint | undefined {
  if (gpa > BigInt(Number.MAX_SAFE_INTEGER)) return undefined;
  const at = Number(gpa);
  try {
    if (!mem.contains(at, size)) return undefined;
    return size === 4 ? BigInt(mem.readU32(at) >>> 0) : mem.readU64(at);
  } catch {
    // A reader that throws for its own reasons: the entry is unreadable, the walk stops there.
    return undefined;
  }
}

function inRam(mem: PhysicalReader, gpa: bigint): boolean {
  if (gpa > BigInt(Number.MAX_SAFE_INTEGER)) return false;
  try {
    return mem.contains(Number(gpa), 1);
  } catch {
    return false;
  }
}

/** How the walk is going: the rights so far. */
interface Acc {
  user: boolean;
  writable: boolean;
  xd: boolean;
}

function rightsOf(s: PagingState, acc: Acc, global: boolean): AccessRights {
  const wp = (s.cr0 & CR0_WP) !== 0n;
  const smep = (s.cr4 & CR4_SMEP) !== 0n;
  const smap = (s.cr4 & CR4_SMAP) !== 0n;
  const nx = acc.xd;
  // Supervisor data accesses to a user-mode address: forbidden by SMAP unless RFLAGS.AC (explicit accesses).
  const smapAllows = !acc.user || !smap || s.ac;
  const supervisor: Access = {
    read: smapAllows,
    write: smapAllows && (!wp || acc.writable),
    execute: !nx && !(acc.user && smep),
  };
  const userMode: Access = {
    read: acc.user,
    write: acc.user && acc.writable,
    execute: acc.user && !nx,
  };
  return {
    user: acc.user,
    writable: acc.writable,
    executable: !nx,
    supervisor,
    userMode,
    now: s.cpl === 3 ? userMode : supervisor,
    global,
  };
}

function stopped(base: WalkBase, reason: StopReason, message: string, level?: EntryName): WalkStopped {
  return { ...base, ok: false, reason, message, ...(level ? { level } : {}) };
}

const TABLE_NAMES: Record<EntryName, string> = {
  PML5E: "PML5 table",
  PML4E: "PML4 table",
  PDPTE: "page-directory-pointer table",
  PDE: "page directory",
  PTE: "page table",
};

/** The table an entry of `level` references (the level below it). */
function nextTableName(level: EntryName): string {
  const order: EntryName[] = ["PML5E", "PML4E", "PDPTE", "PDE", "PTE"];
  return TABLE_NAMES[order[order.indexOf(level) + 1]];
}

/** Stop at an entry that is not present or has a reserved bit set, if it is one of those. */
function entryStop(base: WalkBase, e: WalkEntry): WalkStopped | undefined {
  if (!e.bits.present)
    return stopped(
      base,
      "not-present",
      `the ${e.level} is not present (an access would page-fault)`,
      e.level,
    );
  if (e.reserved !== 0n)
    return stopped(
      base,
      "reserved-bit",
      `the ${e.level} sets reserved bit${reservedList(e.reserved)} (an access would page-fault, error code RSVD)`,
      e.level,
    );
  return undefined;
}

/** " 13" or "s 13, 51": the positions of the set bits. */
function reservedList(mask: bigint): string {
  const pos: number[] = [];
  for (let i = 0; i < 64; i++) if (mask & (1n << BigInt(i))) pos.push(i);
  return `${pos.length > 1 ? "s" : ""} ${pos.join(", ")}`;
}

/** Common decoding of bits 0..5 of an entry that has R/W, U/S and A. */
function lowBits(raw: bigint): EntryBits {
  return {
    present: (raw & P) !== 0n,
    writable: (raw & RW) !== 0n,
    user: (raw & US) !== 0n,
    writeThrough: (raw & PWT) !== 0n,
    cacheDisable: (raw & PCD) !== 0n,
    accessed: (raw & A) !== 0n,
  };
}

/**
 * Walk the guest's paging structures for linear address `linear` in the state's mode. Never throws for
 * anything the guest controls (tables, entries, addresses); throws PagingStateError only for CPU parameters
 * that cannot exist (MAXPHYADDR outside 32..52, CPL outside 0..3, not four PDPTE registers).
 */
export function walk(state: PagingState, linear: bigint, mem: PhysicalReader): Walk {
  checkFeatures(state);
  const mode = pagingMode(state);
  const base: WalkBase = { mode: typeof mode === "string" ? mode : "invalid", linear, entries: [] };
  if (typeof mode !== "string") return stopped(base, "invalid-state", `no paging mode: ${mode.invalid}`);
  if (linear < 0n || linear > U64)
    return stopped(base, "address-width", `${linear} is not a 64-bit linear address`);
  switch (mode) {
    case "none":
      return noPaging(state, base, mem);
    case "32-bit":
      return walk32(state, base, mem);
    case "pae":
      return walkPae(state, base, mem);
    case "4-level":
    case "5-level":
      return walkLong(state, base, mem, mode === "5-level" ? 5 : 4);
  }
}

function noPaging(s: PagingState, base: WalkBase, mem: PhysicalReader): Walk {
  const real = (s.cr0 & CR0_PE) === 0n;
  const what = real ? "real mode" : "protected mode without paging";
  if (base.linear > U32)
    return stopped(
      base,
      "address-width",
      `${hex(base.linear)} is wider than the 32-bit linear addresses of ${what}`,
    );
  const all: Access = { read: true, write: true, execute: true };
  return {
    ...base,
    note: `${what}: the linear address is the physical address`,
    ok: true,
    gpa: base.linear,
    page: { base: base.linear & ~0xfffn, size: PAGE_4K, offset: base.linear & 0xfffn },
    inRam: inRam(mem, base.linear),
    rights: {
      user: true,
      writable: true,
      executable: true,
      supervisor: all,
      userMode: all,
      now: all,
      global: false,
    },
  };
}

function finish(
  s: PagingState,
  base: WalkBase,
  mem: PhysicalReader,
  frame: bigint,
  size: number,
  acc: Acc,
  global: boolean,
): WalkOk {
  const offset = base.linear & BigInt(size - 1);
  const gpa = frame | offset;
  return {
    ...base,
    ok: true,
    gpa,
    page: { base: frame, size, offset },
    inRam: inRam(mem, gpa),
    rights: rightsOf(s, acc, global && (s.cr4 & CR4_PGE) !== 0n),
  };
}

function unreadable(base: WalkBase, level: EntryName, gpa: bigint): WalkStopped {
  return stopped(
    base,
    "outside-ram",
    `the ${level} would be read at ${hex(gpa)}, outside guest RAM (the ${TABLE_NAMES[level]} is not in RAM)`,
    level,
  );
}

// 32-bit paging (SDM vol. 3A, 4.3): 4-byte entries, a page directory and page tables; 4-MByte pages with
// CR4.PSE. There are reserved bits only in a PDE that maps a 4-MByte page.
function walk32(s: PagingState, base: WalkBase, mem: PhysicalReader): Walk {
  const va = base.linear;
  if (va > U32)
    return stopped(
      base,
      "address-width",
      `${hex(va)} is wider than the 32-bit linear addresses of 32-bit paging`,
    );
  const pse = (s.cr4 & CR4_PSE) !== 0n;
  const pdIndex = Number((va >> 22n) & 0x3ffn);
  const pdeAddr = (s.cr3 & bits(31, 12)) | BigInt(pdIndex * 4);
  const pde = readEntry(mem, pdeAddr, 4);
  if (pde === undefined) return unreadable(base, "PDE", pdeAddr);
  const large = pse && (pde & PS) !== 0n;
  const pdeBits = lowBits(pde);
  const acc: Acc = { user: pdeBits.user === true, writable: pdeBits.writable === true, xd: false };
  if (large) {
    // Bits 20:13 are physical-address bits 39:32 (PSE-36), up to M = min(MAXPHYADDR, 40); the rest of 21:13 is
    // reserved. Without PSE-36 all of 21:13 is.
    const m = s.pse36 ? Math.min(s.maxPhyAddr, 40) : 32;
    const reserved = (pde & P) !== 0n ? pde & bits(21, m - 19) : 0n;
    const frame = (pde & bits(31, 22)) | ((pde & bits(20, 13)) << 19n);
    const e: WalkEntry = {
      level: "PDE",
      index: pdIndex,
      gpa: pdeAddr,
      source: "memory",
      size: 4,
      raw: pde,
      bits: {
        ...pdeBits,
        dirty: (pde & D) !== 0n,
        pageSize: true,
        global: (pde & G) !== 0n,
        pat: (pde & PAT_LARGE) !== 0n,
      },
      reserved,
      maps: "none",
    };
    base.entries.push(e);
    const stop = entryStop(base, e);
    if (stop) return stop;
    e.maps = "page";
    e.target = frame & bits(m - 1, 0);
    e.pageSize = PAGE_4M;
    return finish(s, base, mem, e.target, PAGE_4M, acc, e.bits.global === true);
  }
  const ptAddr = pde & bits(31, 12);
  const e: WalkEntry = {
    level: "PDE",
    index: pdIndex,
    gpa: pdeAddr,
    source: "memory",
    size: 4,
    raw: pde,
    // PS is a bit only with CR4.PSE (otherwise ignored); it is 0 here when it is one.
    bits: pse ? { ...pdeBits, pageSize: false } : pdeBits,
    reserved: 0n,
    maps: "none",
  };
  base.entries.push(e);
  const stop = entryStop(base, e);
  if (stop) return stop;
  e.maps = "table";
  e.target = ptAddr;
  const ptIndex = Number((va >> 12n) & 0x3ffn);
  const pteAddr = ptAddr | BigInt(ptIndex * 4);
  const pte = readEntry(mem, pteAddr, 4);
  if (pte === undefined) return unreadable(base, "PTE", pteAddr);
  const pteBits = lowBits(pte);
  const t: WalkEntry = {
    level: "PTE",
    index: ptIndex,
    gpa: pteAddr,
    source: "memory",
    size: 4,
    raw: pte,
    bits: { ...pteBits, dirty: (pte & D) !== 0n, global: (pte & G) !== 0n, pat: (pte & PS) !== 0n },
    reserved: 0n,
    maps: "none",
  };
  base.entries.push(t);
  const stop2 = entryStop(base, t);
  if (stop2) return stop2;
  t.maps = "page";
  t.target = pte & bits(31, 12);
  t.pageSize = PAGE_4K;
  acc.user &&= pteBits.user === true;
  acc.writable &&= pteBits.writable === true;
  return finish(s, base, mem, t.target, PAGE_4K, acc, t.bits.global === true);
}

/** How to decode one 8-byte entry (PAE, 4-level, 5-level). */
interface Format64 {
  level: EntryName;
  index: number;
  gpa: bigint;
  raw: bigint;
  /** The bits this format reserves (bit 63 without EFER.NXE is added here). */
  reserved: bigint;
  /** The entry maps a page: a PTE (PAT in bit 7), or a large page (PS set, PAT in bit 12). */
  leaf: boolean;
  /** Bits 62:59 are a protection key (a 4-/5-level entry that maps a page, with CR4.PKE or CR4.PKS). */
  keys: boolean;
}

/** Decoding of an 8-byte entry and the reserved bits it sets. */
function entry64(s: PagingState, f: Format64): WalkEntry {
  const { raw, level } = f;
  const b: EntryBits = lowBits(raw);
  let reserved = raw & f.reserved;
  if ((s.efer & EFER_NXE) !== 0n) b.executeDisable = (raw & XD) !== 0n;
  else reserved |= raw & XD;
  if (f.leaf) {
    const large = level !== "PTE";
    b.dirty = (raw & D) !== 0n;
    if (large) b.pageSize = true;
    b.global = (raw & G) !== 0n;
    b.pat = (raw & (large ? PAT_LARGE : PS)) !== 0n;
    if (f.keys) b.protectionKey = Number((raw >> 59n) & 0xfn);
  } else if (level === "PDPTE" || level === "PDE") {
    b.pageSize = false;
  }
  return {
    level,
    index: f.index,
    gpa: f.gpa,
    source: "memory",
    size: 8,
    raw,
    bits: b,
    reserved: (raw & P) !== 0n ? reserved : 0n,
    maps: "none",
  };
}

// PAE paging (SDM vol. 3A, 4.4): four PDPTEs (registers loaded from CR3's 32-byte-aligned table), then
// 8-byte PDEs and PTEs; 2-MByte pages; XD with EFER.NXE. PDPTEs have no R/W, U/S or A bits.
function walkPae(s: PagingState, base: WalkBase, mem: PhysicalReader): Walk {
  const va = base.linear;
  if (va > U32)
    return stopped(
      base,
      "address-width",
      `${hex(va)} is wider than the 32-bit linear addresses of PAE paging`,
    );
  const m = s.maxPhyAddr;
  const high = bits(62, m);
  const addr = bits(m - 1, 12);
  const i = Number((va >> 30n) & 3n);
  const pdpteAddr = (s.cr3 & bits(31, 5)) | BigInt(i * 8);
  let pdpte: bigint | undefined;
  let source: "memory" | "register" = "memory";
  if (s.pdptes) {
    pdpte = BigInt.asUintN(64, s.pdptes[i]);
    source = "register";
  } else pdpte = readEntry(mem, pdpteAddr, 8);
  if (pdpte === undefined) return unreadable(base, "PDPTE", pdpteAddr);
  const p: WalkEntry = {
    level: "PDPTE",
    index: i,
    gpa: pdpteAddr,
    source,
    size: 8,
    raw: pdpte,
    bits: {
      present: (pdpte & P) !== 0n,
      writeThrough: (pdpte & PWT) !== 0n,
      cacheDisable: (pdpte & PCD) !== 0n,
    },
    reserved: (pdpte & P) !== 0n ? pdpte & (bits(63, m) | bits(8, 5) | bits(2, 1)) : 0n,
    maps: "none",
  };
  base.entries.push(p);
  const stop = entryStop(base, p);
  if (stop) return stop;
  p.maps = "table";
  p.target = pdpte & addr;
  const acc: Acc = { user: true, writable: true, xd: false };
  const pdIndex = Number((va >> 21n) & 0x1ffn);
  const pdeAddr = p.target | BigInt(pdIndex * 8);
  const pde = readEntry(mem, pdeAddr, 8);
  if (pde === undefined) return unreadable(base, "PDE", pdeAddr);
  const large = (pde & PS) !== 0n;
  const e = entry64(s, {
    level: "PDE",
    index: pdIndex,
    gpa: pdeAddr,
    raw: pde,
    reserved: high | (large ? bits(20, 13) : 0n),
    leaf: large,
    keys: false,
  });
  base.entries.push(e);
  const stop2 = entryStop(base, e);
  if (stop2) return stop2;
  addRights(acc, e);
  if (large) {
    e.maps = "page";
    e.target = pde & bits(m - 1, 21);
    e.pageSize = PAGE_2M;
    return finish(s, base, mem, e.target, PAGE_2M, acc, e.bits.global === true);
  }
  e.maps = "table";
  e.target = pde & addr;
  const ptIndex = Number((va >> 12n) & 0x1ffn);
  const pteAddr = e.target | BigInt(ptIndex * 8);
  const pte = readEntry(mem, pteAddr, 8);
  if (pte === undefined) return unreadable(base, "PTE", pteAddr);
  const t = entry64(s, {
    level: "PTE",
    index: ptIndex,
    gpa: pteAddr,
    raw: pte,
    reserved: high,
    leaf: true,
    keys: false,
  });
  base.entries.push(t);
  const stop3 = entryStop(base, t);
  if (stop3) return stop3;
  addRights(acc, t);
  t.maps = "page";
  t.target = pte & addr;
  t.pageSize = PAGE_4K;
  return finish(s, base, mem, t.target, PAGE_4K, acc, t.bits.global === true);
}

function addRights(acc: Acc, e: WalkEntry): void {
  acc.user &&= e.bits.user === true;
  acc.writable &&= e.bits.writable === true;
  acc.xd ||= e.bits.executeDisable === true;
}

// 4-level and 5-level paging (SDM vol. 3A, 4.5): 48- or 57-bit canonical linear addresses; 8-byte entries
// whose bits 51:M are reserved (and bit 63 without EFER.NXE); PS reserved in PML5Es and PML4Es; 1-GByte pages
// where the CPU has them, 2-MByte pages.
function walkLong(s: PagingState, base: WalkBase, mem: PhysicalReader, levels: 4 | 5): Walk {
  const va = base.linear;
  const width = levels === 5 ? 57 : 48;
  if (canonical(va, width) !== va)
    return stopped(
      base,
      "non-canonical",
      `${hex(va)} is not canonical for ${levels}-level paging (bits 63:${width - 1} must all equal bit ${width - 1}; an access would raise #GP or #SS)`,
    );
  const m = s.maxPhyAddr;
  const high = bits(51, m);
  const addr = bits(m - 1, 12);
  const names: EntryName[] =
    levels === 5 ? ["PML5E", "PML4E", "PDPTE", "PDE", "PTE"] : ["PML4E", "PDPTE", "PDE", "PTE"];
  const acc: Acc = { user: true, writable: true, xd: false };
  const keys = (s.cr4 & (CR4_PKE | CR4_PKS)) !== 0n;
  let table = s.cr3 & addr;
  for (const level of names) {
    const shift =
      level === "PML5E" ? 48 : level === "PML4E" ? 39 : level === "PDPTE" ? 30 : level === "PDE" ? 21 : 12;
    const index = Number((va >> BigInt(shift)) & 0x1ffn);
    const at = table | BigInt(index * 8);
    const raw = readEntry(mem, at, 8);
    if (raw === undefined) return unreadable(base, level, at);
    const ps = (raw & PS) !== 0n;
    // PS is reserved in PML5Es and PML4Es, and in PDPTEs without 1-GByte pages; AMD also reserves bit 8 of
    // PML5Es and PML4Es. A large page reserves the bits between PAT (12) and its frame address.
    const top = level === "PML5E" || level === "PML4E";
    const noGb = level === "PDPTE" && !s.gbPages;
    const leaf = level === "PTE" || (ps && (level === "PDE" || (level === "PDPTE" && s.gbPages)));
    let reserved = high;
    if (top || noGb) reserved |= PS;
    if (top && s.vendor === "amd") reserved |= G;
    if (leaf && level === "PDPTE") reserved |= bits(29, 13);
    if (leaf && level === "PDE") reserved |= bits(20, 13);
    const e = entry64(s, { level, index, gpa: at, raw, reserved, leaf, keys: leaf && keys });
    // Without 1-GByte pages bit 7 of a PDPTE is no page-size bit: it shows as a reserved bit.
    if (noGb) delete e.bits.pageSize;
    base.entries.push(e);
    const stop = entryStop(base, e);
    if (stop) return stop;
    addRights(acc, e);
    if (leaf) {
      const size = level === "PTE" ? PAGE_4K : level === "PDE" ? PAGE_2M : PAGE_1G;
      e.maps = "page";
      e.target = raw & bits(m - 1, Math.log2(size));
      e.pageSize = size;
      return finish(s, base, mem, e.target, size, acc, e.bits.global === true);
    }
    e.maps = "table";
    e.target = raw & addr;
    table = e.target;
  }
  // Not reached: the PTE level always maps a page or stops.
  return stopped(base, "invalid-state", "the walk ran past the page table");
}

export type Translation =
  | { ok: true; gpa: bigint; pageSize: number; inRam: boolean }
  | { ok: false; reason: StopReason; message: string };

/** Translate one linear address: the guest-physical address, or why there is none. */
export function translate(state: PagingState, linear: bigint, mem: PhysicalReader): Translation {
  const w = walk(state, linear, mem);
  return w.ok
    ? { ok: true, gpa: w.gpa, pageSize: w.page.size, inRam: w.inRam }
    : { ok: false, reason: w.reason, message: w.message };
}

export type AccessKind = "read" | "write" | "execute";

/** What one access to a linear address would do (SDM vol. 3A, 4.6-4.7). */
export type AccessOutcome =
  | { fault: "none"; gpa: bigint }
  /** A page fault with the error code the CPU pushes: P (bit 0), W/R (1), U/S (2), RSVD (3), I/D (4). */
  | { fault: "page-fault"; errorCode: number; message: string }
  /** A non-canonical address: #GP(0) (#SS(0) for a stack access). */
  | { fault: "general-protection"; message: string }
  /** Nothing the SDM can say: a paging structure outside RAM, or registers that select no mode. */
  | { fault: "unknown"; message: string };

/**
 * What an access of `kind` at the state's CPL would do: go through to a physical address, or fault, with the
 * page-fault error code. Protection keys and shadow stacks are not applied; an access is explicit (SMAP
 * allows it with RFLAGS.AC).
 */
export function accessOutcome(
  state: PagingState,
  linear: bigint,
  kind: AccessKind,
  mem: PhysicalReader,
): AccessOutcome {
  const w = walk(state, linear, mem);
  const write = kind === "write" ? 2 : 0;
  const user = state.cpl === 3 ? 4 : 0;
  // I/D is set for instruction fetches only with SMEP, or with EFER.NXE under PAE, 4- or 5-level paging.
  const idOn =
    (state.cr4 & CR4_SMEP) !== 0n || ((state.cr4 & CR4_PAE) !== 0n && (state.efer & EFER_NXE) !== 0n);
  const fetch = kind === "execute" && idOn ? 0x10 : 0;
  if (!w.ok) {
    if (w.reason === "non-canonical") return { fault: "general-protection", message: w.message };
    if (w.reason === "not-present")
      return { fault: "page-fault", errorCode: write | user | fetch, message: w.message };
    if (w.reason === "reserved-bit")
      return { fault: "page-fault", errorCode: 1 | write | user | 8 | fetch, message: w.message };
    return { fault: "unknown", message: w.message };
  }
  const now = w.rights.now;
  const allowed = kind === "read" ? now.read : kind === "write" ? now.write : now.execute;
  if (allowed) return { fault: "none", gpa: w.gpa };
  return {
    fault: "page-fault",
    errorCode: 1 | write | user | fetch,
    message: `a ${kind} at CPL ${state.cpl} is not allowed by the rights of the page (${w.rights.user ? "user" : "supervisor"}, ${w.rights.writable ? "writable" : "read-only"}, ${w.rights.executable ? "executable" : "not executable"})`,
  };
}

function sizeName(size: number): string {
  return size >= PAGE_1G
    ? `${size / PAGE_1G} GiB`
    : size >= 0x10_0000
      ? `${size / 0x10_0000} MiB`
      : `${size / 1024} KiB`;
}

/** The set bits of an entry as short names: "P RW U A D PS G PAT XD PK=3". */
export function entryFlags(e: WalkEntry): string {
  const b = e.bits;
  const f: string[] = [];
  if (!b.present) return "not present";
  f.push("P");
  if (b.writable !== undefined) f.push(b.writable ? "RW" : "RO");
  if (b.user !== undefined) f.push(b.user ? "U" : "S");
  if (b.writeThrough) f.push("PWT");
  if (b.cacheDisable) f.push("PCD");
  if (b.accessed) f.push("A");
  if (b.dirty) f.push("D");
  if (b.pageSize) f.push("PS");
  if (b.global) f.push("G");
  if (b.pat) f.push("PAT");
  if (b.executeDisable) f.push("XD");
  if (b.protectionKey !== undefined) f.push(`PK=${b.protectionKey}`);
  return f.join(" ");
}

function accessText(a: Access): string {
  const r = [a.read && "read", a.write && "write", a.execute && "execute"].filter((x) => x !== false);
  return r.length ? r.join(", ") : "nothing";
}

/** The walk as lines for a person (`vmtool introspect translate`, GDB's `monitor translate`). */
export function formatWalk(
  w: Walk,
  state?: Pick<PagingState, "cr0" | "cr3" | "cr4" | "efer" | "cpl">,
): string[] {
  const lines: string[] = [];
  const ctx = state
    ? `, CR3 ${hex(state.cr3)}, CPL ${state.cpl}, CR0.WP=${(state.cr0 & CR0_WP) !== 0n ? 1 : 0}, EFER.NXE=${(state.efer & EFER_NXE) !== 0n ? 1 : 0}`
    : "";
  const mode =
    w.mode === "invalid"
      ? "registers that select no paging mode"
      : `${pagingModeName(w.mode)}${w.mode === "none" ? "" : ctx}`;
  lines.push(`linear ${hex(w.linear)}: ${mode}`);
  const labels = w.entries.map((e) => `${e.level}[${e.index}]`);
  const width = Math.max(0, ...labels.map((l) => l.length));
  w.entries.forEach((e, i) => {
    const value = hex(e.raw, e.size * 2);
    const where = e.source === "register" ? `register (from ${hex(e.gpa)})` : `at ${hex(e.gpa)}`;
    let what = "";
    if (e.maps === "table" && e.target !== undefined) what = ` -> ${nextTableName(e.level)} ${hex(e.target)}`;
    else if (e.maps === "page" && e.target !== undefined && e.pageSize !== undefined)
      what = ` -> ${sizeName(e.pageSize)} page ${hex(e.target)}`;
    const rsvd = e.reserved !== 0n ? `  reserved bits set: ${hex(e.reserved)}` : "";
    lines.push(`  ${labels[i].padEnd(width)} ${where} = ${value}  ${entryFlags(e)}${what}${rsvd}`);
  });
  if (w.ok) {
    lines.push(
      `  = physical ${hex(w.gpa)} (${sizeName(w.page.size)} page ${hex(w.page.base)} + ${hex(w.page.offset)}), ${w.inRam ? "in guest RAM" : "outside guest RAM"}`,
    );
    if (w.note) lines.push(`  ${w.note}`);
    else {
      const r = w.rights;
      lines.push(
        `  rights: ${r.user ? "user" : "supervisor"} page, ${r.writable ? "writable" : "read-only"}, ${r.executable ? "executable" : "not executable"}${r.global ? ", global" : ""}`,
      );
      lines.push(`    CPL 0-2 may: ${accessText(r.supervisor)}; CPL 3 may: ${accessText(r.userMode)}`);
    }
  } else {
    lines.push(`  no translation: ${w.message}`);
  }
  return lines;
}

/** A segment-relative address made linear, or why the segment refuses it. */
export type SegmentTranslation = { ok: true; linear: bigint } | { ok: false; message: string };

/**
 * Segmentation (SDM vol. 3A, 3.4-3.5, 5.3): linear = segment base + offset, with the limit check of the
 * segment's cached descriptor as KVM reports it (the limit already in bytes). In 64-bit mode (EFER.LMA and
 * CS.L) there is no limit check and only FS and GS have a base; elsewhere linear addresses are 32 bits.
 * `size` is the access's size in bytes (1 by default): every byte must be within the limit. Type checks
 * (writing a code segment, reading an execute-only one) are not made.
 */
export function segmentToLinear(
  sregs: Pick<Sregs, "cs" | "cr0" | "efer"> & Partial<Record<SegmentName, Segment>>,
  name: "cs" | "ds" | "es" | "fs" | "gs" | "ss",
  offset: bigint,
  size = 1,
): SegmentTranslation {
  const seg = sregs[name];
  if (seg === undefined) return { ok: false, message: `no ${name.toUpperCase()} register given` };
  if (!Number.isSafeInteger(size) || size < 1)
    return { ok: false, message: `access size ${size} is not a positive integer` };
  const long64 = (sregs.efer & EFER_LMA) !== 0n && sregs.cs.l === 1;
  const s = name.toUpperCase();
  if (long64) {
    if (offset < 0n || offset > U64)
      return { ok: false, message: `offset ${offset} is not a 64-bit address` };
    const segBase = name === "fs" || name === "gs" ? seg.base : 0n;
    return { ok: true, linear: (segBase + offset) & U64 };
  }
  if (offset < 0n || offset > U32)
    return {
      ok: false,
      message: `offset ${offset < 0n ? offset : hex(offset)} is wider than 32 bits outside 64-bit mode`,
    };
  // Real mode has no null selectors: every segment register is usable there.
  if (seg.unusable && (sregs.cr0 & CR0_PE) !== 0n)
    return { ok: false, message: `${s} is not usable (a null selector): an access would fault` };
  const last = offset + BigInt(size) - 1n;
  const limit = BigInt(seg.limit >>> 0);
  // An expand-down data segment (S=1, type bit 3 clear, bit 2 set) holds the offsets above its limit.
  const expandDown = seg.s === 1 && (seg.type & 0x8) === 0 && (seg.type & 0x4) !== 0;
  if (expandDown) {
    const top = seg.db ? U32 : 0xffffn;
    if (offset <= limit || last > top)
      return {
        ok: false,
        message: `${hex(offset)}+${size} is outside expand-down ${s} (offsets ${hex(limit + 1n)}..${hex(top)}): an access would fault`,
      };
  } else if (last > limit) {
    return {
      ok: false,
      message: `${hex(offset)}+${size} is beyond ${s}'s limit ${hex(limit)}: an access would fault`,
    };
  }
  return { ok: true, linear: (seg.base + offset) & U32 };
}
