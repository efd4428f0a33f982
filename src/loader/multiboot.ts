// Multiboot v1 (GNU Multiboot Specification 0.6.96), as QEMU's -kernel runs it: the kernel carries a header
// in its first 8 KiB; vmtool loads it (from its ELF32 program headers, or from the header's own addresses
// when flag bit 16, the "a.out kludge", is set), starts it in 32-bit protected mode with EAX = 0x2BADB002 and
// EBX = the Multiboot information written here at LAYOUT.MULTIBOOT_INFO.
import { ImageError } from "./errors.js";
import { hex } from "../format.js";
import type { GuestMemory } from "../memory/guest-memory.js";
import { LAYOUT } from "../vm/machine-layout.js";
import { checkCmdline } from "./boot-info.js";
import { EM_386, isElf, parseElf } from "./elf.js";
import { MemUse, buildMemoryMap } from "./memory-map.js";
import type { LoadPlan, Segment } from "./types.js";

export const MULTIBOOT_HEADER_MAGIC = 0x1badb002;
export const MULTIBOOT_BOOTLOADER_MAGIC = 0x2badb002;
/** The header must lie, 4-aligned, entirely within the file's first 8192 bytes. */
export const MULTIBOOT_SEARCH = 8192;

export const MB_HEADER_FLAGS = {
  PAGE_ALIGN: 1 << 0, // modules page-aligned: vmtool loads no modules, so it is trivially honoured
  MEMORY_INFO: 1 << 1, // mem_* and mmap_* wanted: always provided
  VIDEO_MODE: 1 << 2, // a graphics mode wanted: vmtool has no display, so it refuses
  AOUT_KLUDGE: 1 << 16,
} as const;
const SUPPORTED_REQUIRED = MB_HEADER_FLAGS.PAGE_ALIGN | MB_HEADER_FLAGS.MEMORY_INFO;

export const MB_INFO_FLAGS = {
  MEMORY: 1 << 0,
  CMDLINE: 1 << 2,
  MMAP: 1 << 6,
  BOOT_LOADER_NAME: 1 << 9,
} as const;
export const MB_MMAP_AVAILABLE = 1;
export const MB_MMAP_RESERVED = 2;
export const BOOT_LOADER_NAME = "vmtool";

export interface MultibootHeader {
  offset: number;
  flags: number;
  /** Present when flag bit 16 is set. */
  aout?: { headerAddr: number; loadAddr: number; loadEndAddr: number; bssEndAddr: number; entryAddr: number };
}

/**
 * Find a Multiboot v1 header. Returns undefined when there is none; throws when there is one vmtool must
 * refuse (bad checksum, a required feature it cannot honour, a header cut short by the end of the file).
 */
export function findMultibootHeader(b: Uint8Array, name: string): MultibootHeader | undefined {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const limit = Math.min(b.length, MULTIBOOT_SEARCH);
  let badChecksumAt: number | undefined;
  for (let o = 0; o + 4 <= limit; o += 4) {
    if (v.getUint32(o, true) !== MULTIBOOT_HEADER_MAGIC) continue;
    if (o + 12 > b.length)
      throw new ImageError(`${name}: Multiboot header at ${hex(o)} is cut short by the end of the file`);
    const flags = v.getUint32(o + 4, true);
    const checksum = v.getUint32(o + 8, true);
    if (((MULTIBOOT_HEADER_MAGIC + flags + checksum) & 0xffffffff) >>> 0 !== 0) {
      badChecksumAt ??= o;
      continue;
    }
    if (flags & MB_HEADER_FLAGS.VIDEO_MODE)
      throw new ImageError(
        `${name}: the Multiboot kernel requires a video mode (header flag bit 2): vmtool has no display`,
      );
    const unknown = flags & 0xffff & ~SUPPORTED_REQUIRED & ~MB_HEADER_FLAGS.VIDEO_MODE;
    if (unknown)
      throw new ImageError(
        `${name}: the Multiboot kernel requires unknown features (header flag bits ${hex(unknown)})`,
      );
    const h: MultibootHeader = { offset: o, flags };
    if (flags & MB_HEADER_FLAGS.AOUT_KLUDGE) {
      if (o + 32 > b.length)
        throw new ImageError(
          `${name}: Multiboot header at ${hex(o)} with the a.out kludge is cut short by the end of the file`,
        );
      h.aout = {
        headerAddr: v.getUint32(o + 12, true),
        loadAddr: v.getUint32(o + 16, true),
        loadEndAddr: v.getUint32(o + 20, true),
        bssEndAddr: v.getUint32(o + 24, true),
        entryAddr: v.getUint32(o + 28, true),
      };
    }
    return h;
  }
  if (badChecksumAt !== undefined)
    throw new ImageError(`${name}: Multiboot header at offset ${hex(badChecksumAt)} has a bad checksum`);
  return undefined;
}

/** Segments and entry of a Multiboot kernel (range checks against RAM come later, in index.ts). */
export function planMultibootImage(
  b: Uint8Array,
  h: MultibootHeader,
  name: string,
): Pick<LoadPlan, "entry" | "segments" | "describe"> {
  const bad = (what: string) => new ImageError(`${name}: Multiboot a.out kludge: ${what}`);
  if (h.aout) {
    const a = h.aout;
    // The header's file offset and its address name the same byte: that fixes where the file is loaded from.
    if (a.headerAddr < a.loadAddr)
      throw bad(`header_addr ${hex(a.headerAddr)} is below load_addr ${hex(a.loadAddr)}`);
    const fileStart = h.offset - (a.headerAddr - a.loadAddr);
    if (fileStart < 0) throw bad(`load_addr ${hex(a.loadAddr)} lies before the start of the file`);
    const loadEnd = a.loadEndAddr === 0 ? a.loadAddr + (b.length - fileStart) : a.loadEndAddr;
    if (loadEnd < a.loadAddr)
      throw bad(`load_end_addr ${hex(loadEnd)} is below load_addr ${hex(a.loadAddr)}`);
    if (loadEnd > 0x1_0000_0000) throw bad("the image wraps around the 32-bit address space");
    const fileBytes = loadEnd - a.loadAddr;
    if (fileStart + fileBytes > b.length)
      throw bad(
        `truncated file: load_end_addr ${hex(loadEnd)} needs ${fileBytes} bytes from offset ${hex(fileStart)}, the file has ${b.length}`,
      );
    const bssEnd = a.bssEndAddr === 0 ? loadEnd : a.bssEndAddr;
    if (bssEnd < loadEnd) throw bad(`bss_end_addr ${hex(bssEnd)} is below load_end_addr ${hex(loadEnd)}`);
    const segments: Segment[] = [
      { gpa: a.loadAddr, data: b.subarray(fileStart, fileStart + fileBytes), memSize: bssEnd - a.loadAddr },
    ];
    return {
      entry: a.entryAddr,
      segments,
      describe: `Multiboot (a.out kludge), ${hex(a.loadAddr)}-${hex(bssEnd)}, entry ${hex(a.entryAddr)}`,
    };
  }
  if (!isElf(b))
    throw new ImageError(
      `${name}: a Multiboot kernel without the a.out kludge (header flag bit 16) must be an ELF file`,
    );
  const elf = parseElf(b, name);
  if (elf.cls !== 32 || elf.machine !== EM_386)
    throw new ImageError(
      `${name}: a Multiboot ELF kernel must be ELF32 for i386 (use the a.out kludge for other files)`,
    );
  const segments: Segment[] = elf.loads.map((l) => ({
    gpa: Number(l.paddr),
    data: l.data,
    memSize: Number(l.memSize),
  }));
  return {
    entry: Number(elf.entry),
    segments,
    describe: `Multiboot ELF32, ${segments.length} segment(s), entry ${hex(elf.entry)}`,
  };
}

/** Layout of the Multiboot area at LAYOUT.MULTIBOOT_INFO: info struct, memory map, loader name, command line. */
export const MB_INFO_LAYOUT = {
  SIZE: 0x2000,
  INFO_SIZE: 88, // up to vbe_interface_len; no framebuffer fields (flag bit 12 is never set)
  MMAP: 0x80,
  MMAP_ENTRY: 24, // size (4, counts the 20 that follow), base_addr (8), length (8), type (4)
  fields: {
    flags: 0,
    mem_lower: 4,
    mem_upper: 8,
    boot_device: 12,
    cmdline: 16,
    mods_count: 20,
    mods_addr: 24,
    mmap_length: 44,
    mmap_addr: 48,
    boot_loader_name: 64,
  },
} as const;

export interface MultibootInfoInput {
  memSize: number;
  cmdline?: string;
  plan?: Pick<LoadPlan, "segments">;
}

/** Write the Multiboot information into guest RAM; returns its address (for EBX). */
export function writeMultibootInfo(mem: GuestMemory, input: MultibootInfoInput): number {
  const base = LAYOUT.MULTIBOOT_INFO;
  const L = MB_INFO_LAYOUT;
  const f = L.fields;
  const cmd = checkCmdline(input.cmdline ?? "");
  const map = buildMemoryMap(input.memSize, input.plan);
  const nameBytes = new TextEncoder().encode(BOOT_LOADER_NAME);
  const mmapLen = map.length * L.MMAP_ENTRY;
  const nameAt = base + L.MMAP + mmapLen;
  const cmdAt = nameAt + nameBytes.length + 1;
  if (cmdAt + cmd.length + 1 > base + L.SIZE)
    throw new ImageError(
      `Multiboot information does not fit its ${L.SIZE}-byte area (command line too long)`,
    );
  mem.fill(base, L.SIZE, 0);
  // Low memory: 640 KiB as on a PC (vmtool has no hole, but kernels expect the classic value);
  // upper memory: from 1 MiB to the end of RAM, the first hole.
  const lowerKiB = Math.min(640, Math.floor(input.memSize / 1024));
  const upperKiB = Math.max(0, Math.floor((input.memSize - LAYOUT.HIGH_MEM) / 1024));
  mem.writeU32(
    base + f.flags,
    MB_INFO_FLAGS.MEMORY | MB_INFO_FLAGS.CMDLINE | MB_INFO_FLAGS.MMAP | MB_INFO_FLAGS.BOOT_LOADER_NAME,
  );
  mem.writeU32(base + f.mem_lower, lowerKiB);
  mem.writeU32(base + f.mem_upper, upperKiB);
  mem.writeU32(base + f.cmdline, cmdAt);
  mem.writeU32(base + f.mmap_length, mmapLen);
  mem.writeU32(base + f.mmap_addr, base + L.MMAP);
  mem.writeU32(base + f.boot_loader_name, nameAt);
  map.forEach((e, i) => {
    const o = base + L.MMAP + i * L.MMAP_ENTRY;
    mem.writeU32(o, L.MMAP_ENTRY - 4);
    mem.writeU64(o + 4, BigInt(e.base));
    mem.writeU64(o + 12, BigInt(e.size));
    // The image and vmtool's boot data are RAM the kernel may reuse once it has read what it needs.
    mem.writeU32(o + 20, e.use === MemUse.RESERVED ? MB_MMAP_RESERVED : MB_MMAP_AVAILABLE);
  });
  mem.write(nameAt, nameBytes);
  mem.write(cmdAt, cmd);
  return base;
}
