// The CPU state a guest starts in, for each boot mode. There is no firmware: vmtool puts the vCPU straight
// into the mode the image expects, with the tables that mode needs written into guest RAM at the addresses
// machine-layout.ts reserves for them.
//
//   real       CS:IP from a linear entry below 1 MiB (CS = entry's 64 KiB page, IP = the rest), DS=ES=FS=GS=CS,
//              SS:SP = LAYOUT.REAL_MODE_SS:REAL_MODE_SP.
//   protected  flat 4 GiB code/data segments from a real GDT at LAYOUT.GDT (selectors 0x08 code, 0x10 data,
//              so the guest may reload them), CR0.PE, paging off, ESP = LAYOUT.STACK_TOP.
//   long       the same GDT (0x18: 64-bit code), 4-level paging identity-mapping the low 4 GiB (all RAM and the
//              MMIO window) with 2 MiB pages at LAYOUT.PAGE_TABLES, EFER.LME/LMA, RSP = LAYOUT.STACK_TOP.
//   Multiboot  protected mode with EAX = 0x2BADB002 and EBX = the Multiboot information, as the spec says.
//   PVH        protected mode with EBX = the hvm_start_info, CR0 = PE|ET and CR4 = 0, as the PVH ABI says.
// Every other guest gets the machine description's address in RSI/ESI.
import type { GuestMemory } from "../memory/guest-memory.js";
import type { BootMode } from "../loader/types.js";
import { LAYOUT } from "./machine-layout.js";
import type { Regs, Segment, Sregs, Vcpu } from "./vcpu.js";

export const MULTIBOOT_BOOTLOADER_MAGIC = 0x2badb002;

/** GDT selectors vmtool's boot GDT provides. */
export const SELECTORS = { CODE32: 0x08, DATA: 0x10, CODE64: 0x18, TSS: 0x20 } as const;
/** A 104-byte TSS for TR (VMX refuses entry with an unusable TR), in the GDT's page. */
export const BOOT_TSS = LAYOUT.GDT + 0x800;
const TSS_LIMIT = 0x67;

const CR0_PE = 1n;
const CR0_MP = 1n << 1n;
const CR0_ET = 1n << 4n;
const CR0_NE = 1n << 5n;
const CR0_WP = 1n << 16n;
const CR0_PG = 1n << 31n;
const CR4_PAE = 1n << 5n;
// SSE on: gcc-built guests use SSE registers (freely so in 64-bit code), which fault without these.
const CR4_OSFXSR = 1n << 9n;
const CR4_OSXMMEXCPT = 1n << 10n;
const EFER_LME = 1n << 8n;
const EFER_LMA = 1n << 10n;
const RFLAGS_RESERVED = 2n;

const PTE_P = 1n;
const PTE_RW = 2n;
const PTE_PS = 1n << 7n;

export interface BootSetup {
  mode: BootMode;
  /** Linear entry address (real mode: below 1 MiB). */
  entry: number;
  /** Multiboot: the information structure's address (EBX); EAX gets the boot loader magic. */
  multibootInfo?: number;
  /** PVH (protected mode): the hvm_start_info's address (EBX). */
  pvhStartInfo?: number;
  /** Otherwise: the machine description's (or Linux zero page's) address, given in RSI/ESI. */
  bootInfo?: number;
}

/** Put `vcpu` in `setup.mode` at `setup.entry`, writing the GDT/page tables it needs into `mem`. */
export function bootVcpu(vcpu: Vcpu, mem: GuestMemory, setup: BootSetup): void {
  const sregs = vcpu.getSregs();
  const regs: Partial<Regs> = {
    rflags: RFLAGS_RESERVED,
    rip: BigInt(setup.entry),
    rsp: BigInt(LAYOUT.STACK_TOP),
    rax: 0n,
    rbx: 0n,
    rsi: 0n,
  };
  if (setup.multibootInfo !== undefined) {
    regs.rax = BigInt(MULTIBOOT_BOOTLOADER_MAGIC);
    regs.rbx = BigInt(setup.multibootInfo);
  } else if (setup.pvhStartInfo !== undefined) {
    if (setup.mode !== "protected") throw new RangeError("a PVH entry is in protected mode");
    regs.rbx = BigInt(setup.pvhStartInfo);
  } else if (setup.bootInfo !== undefined) {
    regs.rsi = BigInt(setup.bootInfo);
  }
  switch (setup.mode) {
    case "real": {
      if (setup.entry < 0 || setup.entry >= LAYOUT.REAL_MODE_LIMIT)
        throw new RangeError(`real-mode entry 0x${setup.entry.toString(16)} is not below 1 MiB`);
      const cs = (setup.entry & 0xf_0000) >>> 4;
      regs.rip = BigInt(setup.entry & 0xffff);
      regs.rsp = BigInt(LAYOUT.REAL_MODE_SP);
      for (const n of ["cs", "ds", "es", "fs", "gs"] as const)
        sregs[n] = realSegment(cs, n === "cs" ? 0xb : 0x3);
      sregs.ss = realSegment(LAYOUT.REAL_MODE_SS, 0x3);
      sregs.cr0 &= ~(CR0_PE | CR0_PG);
      break;
    }
    case "protected":
      writeGdt(mem);
      flatSegments(sregs, false);
      // PVH: only PE (ET is read-only 1); the kernel sets up everything else itself.
      sregs.cr0 = setup.pvhStartInfo !== undefined ? CR0_PE | CR0_ET : CR0_PE | CR0_MP | CR0_ET | CR0_NE;
      sregs.cr4 = setup.pvhStartInfo !== undefined ? 0n : CR4_OSFXSR | CR4_OSXMMEXCPT;
      sregs.efer = 0n;
      break;
    case "long":
      writeGdt(mem);
      sregs.cr3 = BigInt(writePageTables(mem));
      flatSegments(sregs, true);
      sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
      sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
      sregs.efer = EFER_LME | EFER_LMA;
      break;
  }
  vcpu.setSregs(sregs);
  vcpu.setRegs(regs);
}

function realSegment(selector: number, type: number): Segment {
  return {
    base: BigInt(selector << 4),
    limit: 0xffff,
    selector,
    type,
    present: 1,
    dpl: 0,
    db: 0,
    s: 1,
    l: 0,
    g: 0,
    avl: 0,
    unusable: 0,
  };
}

function flatSegment(selector: number, type: number, long: boolean): Segment {
  return {
    base: 0n,
    limit: 0xffff_ffff,
    selector,
    type,
    present: 1,
    dpl: 0,
    db: long && type >= 8 ? 0 : 1, // a 64-bit code segment has L=1, D=0
    s: 1,
    l: long && type >= 8 ? 1 : 0,
    g: 1,
    avl: 0,
    unusable: 0,
  };
}

/** The segment registers as the GDT describes them (what a `mov` to each would load). */
function flatSegments(sregs: Sregs, long: boolean): void {
  sregs.cs = flatSegment(long ? SELECTORS.CODE64 : SELECTORS.CODE32, 0xb, long);
  for (const n of ["ds", "es", "fs", "gs", "ss"] as const) sregs[n] = flatSegment(SELECTORS.DATA, 0x3, long);
  sregs.tr = {
    base: BigInt(BOOT_TSS),
    limit: TSS_LIMIT,
    selector: SELECTORS.TSS,
    type: 0xb, // busy 32/64-bit TSS
    present: 1,
    dpl: 0,
    db: 0,
    s: 0,
    l: 0,
    g: 0,
    avl: 0,
    unusable: 0,
  };
  sregs.gdt = { base: BigInt(LAYOUT.GDT), limit: GDT_ENTRIES.length * 8 - 1 };
  sregs.idt = { base: 0n, limit: 0 };
}

// Descriptors: accessed bit set so the CPU never writes back to the table.
const GDT_ENTRIES: bigint[] = [
  0n, // null
  0x00cf_9b00_0000_ffffn, // 0x08: 32-bit code, base 0, limit 4 GiB
  0x00cf_9300_0000_ffffn, // 0x10: data, base 0, limit 4 GiB
  0x00af_9b00_0000_ffffn, // 0x18: 64-bit code
  tssDescriptorLow(BOOT_TSS, TSS_LIMIT), // 0x20: the TSS (16 bytes in long mode: the next entry is its high half)
  0n, // 0x28: base bits 63..32 of the TSS
];

function tssDescriptorLow(base: number, limit: number): bigint {
  const b = BigInt(base);
  const l = BigInt(limit);
  return (
    (l & 0xffffn) |
    ((b & 0xff_ffffn) << 16n) |
    (0x8bn << 40n) | // present, DPL 0, busy TSS
    (((l >> 16n) & 0xfn) << 48n) |
    (((b >> 24n) & 0xffn) << 56n)
  );
}

/** Writes the boot GDT and its TSS at LAYOUT.GDT. */
export function writeGdt(mem: GuestMemory): void {
  GDT_ENTRIES.forEach((d, i) => mem.writeU64(LAYOUT.GDT + 8 * i, d));
  mem.fill(BOOT_TSS, TSS_LIMIT + 1, 0);
  mem.writeU16(BOOT_TSS + 0x66, TSS_LIMIT + 1); // I/O map base past the limit: no I/O bitmap
}

/** Identity map of the low 4 GiB with 2 MiB pages: PML4, one PDPT, four PDs. Returns CR3. */
export function writePageTables(mem: GuestMemory): number {
  const pml4 = LAYOUT.PAGE_TABLES;
  // One bounds-checked view of the six pages, then plain stores (2,048 entries: start-up time matters).
  const area = mem.slice(pml4, 6 * 0x1000);
  area.fill(0);
  const v = new DataView(area.buffer, area.byteOffset, area.byteLength);
  const PDPT = 0x1000;
  const PD0 = 0x2000;
  v.setBigUint64(0, BigInt(pml4 + PDPT) | PTE_P | PTE_RW, true);
  for (let i = 0; i < 4; i++)
    v.setBigUint64(PDPT + 8 * i, BigInt(pml4 + PD0 + i * 0x1000) | PTE_P | PTE_RW, true);
  // 2,048 consecutive PD entries, one per 2 MiB page: entry k maps k << 21.
  for (let k = 0; k < 2048; k++) {
    const low = ((k & 0x7ff) << 21) >>> 0; // bits 21..31 of the address
    v.setUint32(PD0 + 8 * k, (low | Number(PTE_P | PTE_RW | PTE_PS)) >>> 0, true);
    v.setUint32(PD0 + 8 * k + 4, k >>> 11, true); // bit 32 and up (k >= 2048 never happens: 4 GiB)
  }
  return pml4;
}
