// Planning a Linux boot from an uncompressed vmlinux through PVH, the Xen/x86 direct-boot ABI that Linux
// (CONFIG_PVH), QEMU and Firecracker use: the ELF's PT_LOAD segments at their physical addresses, the entry
// from the Xen ELF note XEN_ELFNOTE_PHYS32_ENTRY, and a `struct hvm_start_info` (version 1: command line,
// memory map in e820 types, the initrd as module 0, the ACPI RSDP) whose address is in EBX at entry, in 32-bit
// protected mode with paging off and flat segments. Everything is checked here, before any VM exists.
import { ImageError, LoadOptionError } from "../errors.js";
import { hex } from "../../format.js";
import type { GuestMemory } from "../../memory/guest-memory.js";
import { LAYOUT } from "../../vm/machine-layout.js";
import { guestRamText } from "../image-file.js";
import {
  elfHeadersEnd,
  elfLayout,
  elfNotes,
  elfSection,
  elfSectionTable,
  elfZeroSections,
  parseElf,
  type ElfLayout,
  type ElfZeroSection,
  type ElfNote,
} from "../elf.js";
import type { InputFile } from "../../files/input-file.js";
import { BIOS_TABLES_BASE, BIOS_TABLES_END, linuxE820, type E820Entry } from "./e820.js";
import type { LinuxBootOptions } from "./bzimage.js";

/** Xen's ELF note owner name and the note type giving the 32-bit physical entry point (xen/elfnote.h). */
export const XEN_NOTE_NAME = "Xen";
export const XEN_ELFNOTE_PHYS32_ENTRY = 18;
/** hvm_start_info.magic (xen/include/public/arch-x86/hvm/start_info.h). */
export const HVM_START_MAGIC = 0x336ec578;
export const HVM_START_VERSION = 1;
/** struct hvm_start_info (version 1), hvm_modlist_entry and hvm_memmap_table_entry sizes and offsets. */
export const START_INFO = {
  MAGIC: 0,
  VERSION: 4,
  FLAGS: 8,
  NR_MODULES: 12,
  MODLIST_PADDR: 16,
  CMDLINE_PADDR: 24,
  RSDP_PADDR: 32,
  MEMMAP_PADDR: 40,
  MEMMAP_ENTRIES: 48,
  RESERVED: 52,
  SIZE: 56,
} as const;
export const MODLIST_ENTRY_SIZE = 32;
export const MEMMAP_ENTRY_SIZE = 24;

/** Where vmtool puts the start info, module list, memory map and command line: its boot data (e820-reserved). */
export const START_INFO_ADDR = LAYOUT.BOOT_INFO;
export const MODLIST_ADDR = START_INFO_ADDR + 0x40;
export const MEMMAP_ADDR = START_INFO_ADDR + 0x80;
const MEMMAP_MAX = Math.floor((0x1000 - 0x80) / MEMMAP_ENTRY_SIZE);
export const PVH_CMDLINE_ADDR = START_INFO_ADDR + 0x1000;
const PVH_CMDLINE_ROOM = LAYOUT.GDT - PVH_CMDLINE_ADDR;
/** x86 Linux's COMMAND_LINE_SIZE (2048, the NUL included): the PVH path copies no more. */
export const PVH_CMDLINE_MAX = 2047;
const PAGE = 0x1000;
const MiB = 1 << 20;

/**
 * What goes into guest RAM at `gpa`: `size` bytes, held in `data` or read at `fileOffset` of the plan's kernel
 * file (straight into guest RAM when the plan is applied), then zeros up to `memSize` (.bss).
 */
export interface PvhSegment {
  gpa: number;
  size: number;
  memSize: number;
  data?: Uint8Array;
  fileOffset?: number;
  /**
   * Parts of a file segment (offsets into it, sorted, apart) that are not read: NOBITS sections (.bss, .brk)
   * that the segment's file bytes cover. Fresh guest RAM is zero there already. Debian's vmlinux has 18 of its
   * 59 MB there.
   */
  zero?: { offset: number; size: number }[];
}

export interface PvhPlan {
  format: "pvh";
  /**
   * The kernel's version string from its banner ("6.1.0-57-amd64 (debian-kernel@...) ..."), if found: from the
   * bytes when planned from bytes, else once the plan is applied (from guest RAM).
   */
  kernelVersion?: string;
  /** The 32-bit physical entry point (XEN_ELFNOTE_PHYS32_ENTRY). */
  entry: number;
  /** The kernel's PT_LOAD segments and the initrd. */
  segments: PvhSegment[];
  /** The kernel's file, open, when segments are read from it at apply (planPvhFile); closed by applyPvhPlan. */
  kernelFile?: InputFile;
  /** First and last byte + 1 of the kernel's segments. */
  kernelStart: number;
  kernelEnd: number;
  initrd?: { gpa: number; size: number };
  e820: E820Entry[];
  startInfo: Uint8Array;
  cmdline: Uint8Array;
  describe: string;
}

/** The PVH entry point from the Xen notes, or undefined when there is none. */
export function pvhEntry(notes: readonly ElfNote[], name: string): number | undefined {
  const note = notes.find((n) => n.name === XEN_NOTE_NAME && n.type === XEN_ELFNOTE_PHYS32_ENTRY);
  if (!note) return undefined;
  const d = new DataView(note.desc.buffer, note.desc.byteOffset, note.desc.byteLength);
  // 32-bit kernels write a .long, 64-bit ones a .quad (_ASM_PTR); either way the entry is 32-bit physical.
  let entry: bigint;
  if (note.desc.length === 4) entry = BigInt(d.getUint32(0, true));
  else if (note.desc.length === 8) entry = d.getBigUint64(0, true);
  else
    throw new ImageError(
      `${name}: the PVH entry note (Xen ELF note 18) has ${note.desc.length} bytes of value, not 4 or 8`,
    );
  if (entry >= 1n << 32n)
    throw new ImageError(`${name}: the PVH entry point ${hex(entry)} is not a 32-bit physical address`);
  return Number(entry);
}

/** The version from the kernel's banner ("Linux version 6.1.0-57-amd64 (...) #1 SMP ..."), if the file has one. */
function bannerVersion(b: Uint8Array): string | undefined {
  const key = Buffer.from("Linux version ");
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  for (let at = buf.indexOf(key); at >= 0; at = buf.indexOf(key, at + 1)) {
    const start = at + key.length;
    const end = buf.indexOf(0, start);
    if (end < 0 || end - start > 256) continue;
    const s = buf.toString("latin1", start, end).trim();
    if (/^\d+\.\d+[\x20-\x7e]*$/.test(s)) return s;
  }
  return undefined;
}

/** The vmtool areas a kernel segment may not touch (the boot data holds the start info; the BIOS area, tables). */
const KEEP_OUT = [
  { base: LAYOUT.STACK_BASE, end: LAYOUT.BOOT_DATA_END, what: "vmtool's boot stack and boot data" },
  { base: BIOS_TABLES_BASE, end: BIOS_TABLES_END, what: "the platform tables' area (ACPI, MP)" },
] as const;

/** Check and lay out a PVH boot from vmlinux bytes; touches no VM. */
export function planPvh(b: Uint8Array, name: string, opts: LinuxBootOptions): PvhPlan {
  const elf = parseElf(b, name);
  const loads = elf.loads.map((l) => ({ l, data: l.data }));
  return planFromLayout(elfNotes(elf, name), loads, bannerVersion(b), name, opts);
}

/** The most program headers and note bytes planPvhFile reads before the segments (a vmlinux has a few KiB). */
const HEADERS_MAX = 1 << 20;
const NOTES_MAX = 1 << 20;

/**
 * Check and lay out a PVH boot from the vmlinux in `file` (a regular file of known size): only its headers and
 * notes are read now; the segments are read straight into guest RAM when the plan is applied (applyPvhPlan),
 * from the file kept open in the plan. Touches no VM.
 */
export function planPvhFile(file: InputFile, name: string, opts: LinuxBootOptions): PvhPlan {
  const size = file.size ?? 0;
  const read = (offset: number, length: number) => {
    const out = new Uint8Array(length);
    const got = file.readAt(out, offset);
    if (got !== length) throw new ImageError(`${name}: the file changed while it was read (it is shorter)`);
    return out;
  };
  let head = read(0, Math.min(size, 64));
  const headersEnd = Math.min(elfHeadersEnd(head), size);
  if (headersEnd > HEADERS_MAX)
    throw new ImageError(
      `${name}: its program headers end at ${hex(headersEnd)}, beyond the first MiB of the file`,
    );
  if (headersEnd > head.length) head = read(0, headersEnd);
  const layout = elfLayout(head, size, name);
  let noteBytes = 0;
  const notes: ElfNote[] = [];
  for (const n of layout.notes) {
    if (!("truncated" in n)) noteBytes += n.fileSize;
    if (noteBytes > NOTES_MAX)
      throw new ImageError(`${name}: more than ${NOTES_MAX} bytes of ELF notes (PT_NOTE segments)`);
    // A truncated note segment is refused by elfNotes, as from bytes.
    const seg =
      "truncated" in n ? n : { index: n.index, align: n.align, data: read(n.fileOffset, n.fileSize) };
    notes.push(...elfNotes({ ...layout, loads: [], notes: [seg] }, name));
  }
  const hints = sectionHints(file, head, layout.cls, size);
  const plan = planFromLayout(
    notes,
    layout.loads.map((l) => ({ l, zero: zeroParts(l, hints.zero) })),
    hints.version,
    name,
    opts,
  );
  plan.kernelFile = file;
  return plan;
}

/** How far into .rodata the banner is looked for (Linux puts linux_banner in its first KiB). */
const RODATA_BANNER_WINDOW = 64 * 1024;

/** Zero parts smaller than this are read anyway: a read more costs more than it saves. */
const ZERO_PART_MIN = 64 * 1024;

/**
 * What the section headers tell the loader, read in a few small reads: the kernel's version from the start of
 * its .rodata section (instead of searching tens of MiB of segments for the banner, applyPvhPlan's fallback),
 * and the address ranges of its NOBITS sections. A missing or damaged table gives no hints.
 */
function sectionHints(
  file: InputFile,
  head: Uint8Array,
  cls: 32 | 64,
  size: number,
): { version?: string; zero: ElfZeroSection[] } {
  const table = elfSectionTable(head);
  if (!table || table.size > HEADERS_MAX || table.offset + table.size > size) return { zero: [] };
  const readHint = (offset: number, length: number) => {
    const out = new Uint8Array(length);
    return file.readAt(out, offset) === length ? out : undefined;
  };
  const bytes = readHint(table.offset, table.size);
  if (!bytes) return { zero: [] };
  const zero = elfZeroSections(cls, bytes);
  const rodata = elfSection(cls, bytes, table.names, size, readHint, ".rodata");
  if (!rodata) return { zero };
  const window = readHint(rodata.fileOffset, Math.min(rodata.size, RODATA_BANNER_WINDOW));
  return { version: window && bannerVersion(window), zero };
}

/** The parts of load `l`'s file bytes that zero sections cover, as offsets into the segment. */
function zeroParts(l: ElfLayout["loads"][number], sections: readonly ElfZeroSection[]): PvhSegment["zero"] {
  const end = l.vaddr + BigInt(l.fileSize);
  const parts = sections
    .map((z) => {
      const from = z.addr > l.vaddr ? z.addr : l.vaddr;
      const to = z.addr + z.size < end ? z.addr + z.size : end;
      return { offset: Number(from - l.vaddr), size: to > from ? Number(to - from) : 0 };
    })
    .filter((p) => p.size >= ZERO_PART_MIN)
    .sort((a, b) => a.offset - b.offset);
  // Overlapping sections (none in a sane file) are merged, so that the reads between them stay in order.
  const merged: { offset: number; size: number }[] = [];
  for (const p of parts) {
    const last = merged.at(-1);
    if (last && p.offset <= last.offset + last.size)
      last.size = Math.max(last.size, p.offset + p.size - last.offset);
    else merged.push({ ...p });
  }
  return merged.length ? merged : undefined;
}

function planFromLayout(
  notes: readonly ElfNote[],
  loads: readonly {
    l: ElfLayout["loads"][number];
    data?: Uint8Array;
    zero?: PvhSegment["zero"];
  }[],
  version: string | undefined,
  name: string,
  opts: LinuxBootOptions,
): PvhPlan {
  const entry = pvhEntry(notes, name);
  if (entry === undefined)
    throw new ImageError(
      `${name}: an ELF file without a PVH entry point (Xen ELF note 18, XEN_ELFNOTE_PHYS32_ENTRY): not a ` +
        "Linux vmlinux built with CONFIG_PVH; boot its bzImage instead",
    );
  const cmdline = new TextEncoder().encode(opts.cmdline);
  if (cmdline.includes(0)) throw new LoadOptionError("--cmdline: contains a NUL character");
  if (cmdline.length > PVH_CMDLINE_MAX)
    throw new LoadOptionError(
      `--cmdline: the kernel's command line would be ${cmdline.length} bytes; Linux takes at most ` +
        `${PVH_CMDLINE_MAX} (COMMAND_LINE_SIZE)`,
    );

  const segments: PvhSegment[] = [];
  let kernelStart = Infinity;
  let kernelEnd = 0;
  for (const { l, data, zero } of loads) {
    const end = l.paddr + l.memSize;
    const what = `segment at ${hex(l.paddr)}..${hex(end)}`;
    if (end > BigInt(LAYOUT.MAX_RAM))
      throw new ImageError(
        `${name}: ${what} lies outside any guest RAM (RAM ends below ${hex(LAYOUT.MAX_RAM)})`,
      );
    const base = Number(l.paddr);
    const top = Number(end);
    for (const k of KEEP_OUT)
      if (base < k.end && top > k.base)
        throw new ImageError(`${name}: ${what} overlaps ${k.what} (${hex(k.base)}..${hex(k.end)})`);
    kernelStart = Math.min(kernelStart, base);
    kernelEnd = Math.max(kernelEnd, top);
    segments.push(
      data
        ? { gpa: base, size: l.fileSize, memSize: Number(l.memSize), data }
        : { gpa: base, size: l.fileSize, memSize: Number(l.memSize), fileOffset: l.fileOffset, zero },
    );
  }
  if (kernelEnd > opts.memSize)
    throw new ImageError(
      `${name}: the kernel's segments reach ${hex(kernelEnd)}, beyond guest RAM (${guestRamText(opts.memSize)}); ` +
        `give --mem ${Math.ceil(kernelEnd / MiB)}M or more`,
    );
  if (!segments.some((s) => entry >= s.gpa && entry < s.gpa + s.size))
    throw new ImageError(`${name}: the PVH entry point ${hex(entry)} is not in a loaded segment`);

  let initrd: PvhPlan["initrd"];
  if (opts.initrd) {
    const size = opts.initrd.bytes.length;
    if (size === 0) throw new ImageError(`${opts.initrd.name}: empty initrd`);
    const gpa = Math.floor((opts.memSize - size) / PAGE) * PAGE;
    if (gpa < kernelEnd) {
      const need = Math.ceil((Math.ceil(kernelEnd / PAGE) * PAGE + size) / MiB);
      throw new ImageError(
        `${opts.initrd.name}: the initrd (${size} bytes) does not fit between the kernel's end ` +
          `(${hex(kernelEnd)}) and the end of guest RAM (${guestRamText(opts.memSize)}); give --mem ${need}M or more`,
      );
    }
    segments.push({ gpa, size, memSize: size, data: opts.initrd.bytes });
    initrd = { gpa, size };
  }
  const e820 = linuxE820(opts.memSize);
  const startInfo = buildStartInfo({ e820, initrd, acpiRsdp: opts.acpiRsdp });
  return {
    format: "pvh",
    kernelVersion: version,
    entry,
    segments,
    kernelStart,
    kernelEnd,
    initrd,
    e820,
    startInfo,
    cmdline,
    describe:
      `Linux vmlinux${version ? ` ${version.split(" ")[0]}` : ""} (PVH), ${loads.length} segments ` +
      `${hex(kernelStart)}..${hex(kernelEnd)}, 32-bit entry ${hex(entry)}, start info at ${hex(START_INFO_ADDR)}` +
      (initrd ? `, initrd ${initrd.size} bytes at ${hex(initrd.gpa)}` : ""),
  };
}

/**
 * One page: struct hvm_start_info, then module 0 (the initrd, when there is one) and the memory map, at the
 * addresses the start info gives (START_INFO_ADDR onwards).
 */
export function buildStartInfo(o: {
  e820: readonly E820Entry[];
  initrd?: { gpa: number; size: number };
  acpiRsdp?: number;
}): Uint8Array {
  if (o.e820.length > MEMMAP_MAX) throw new RangeError(`${o.e820.length} memory map entries`);
  const page = new Uint8Array(PAGE);
  const v = new DataView(page.buffer);
  const u64 = (at: number, n: number) => v.setBigUint64(at, BigInt(n), true);
  v.setUint32(START_INFO.MAGIC, HVM_START_MAGIC, true);
  v.setUint32(START_INFO.VERSION, HVM_START_VERSION, true);
  v.setUint32(START_INFO.FLAGS, 0, true);
  v.setUint32(START_INFO.NR_MODULES, o.initrd ? 1 : 0, true);
  u64(START_INFO.MODLIST_PADDR, o.initrd ? MODLIST_ADDR : 0);
  u64(START_INFO.CMDLINE_PADDR, PVH_CMDLINE_ADDR);
  u64(START_INFO.RSDP_PADDR, o.acpiRsdp ?? 0);
  u64(START_INFO.MEMMAP_PADDR, MEMMAP_ADDR);
  v.setUint32(START_INFO.MEMMAP_ENTRIES, o.e820.length, true);
  if (o.initrd) {
    const m = MODLIST_ADDR - START_INFO_ADDR;
    u64(m, o.initrd.gpa);
    u64(m + 8, o.initrd.size);
    // cmdline_paddr 0 (no module command line), reserved 0
  }
  o.e820.forEach((e, i) => {
    const at = MEMMAP_ADDR - START_INFO_ADDR + i * MEMMAP_ENTRY_SIZE;
    u64(at, e.addr);
    u64(at + 8, e.size);
    v.setUint32(at + 16, e.type, true);
  });
  return page;
}

/**
 * Write the plan into fresh guest RAM; returns the start info's address (EBX at entry). A plan from a file
 * reads its segments straight into guest RAM and closes the file.
 */
export function applyPvhPlan(mem: GuestMemory, plan: PvhPlan): number {
  try {
    for (const s of plan.segments) {
      // Fresh RAM reads as zero: the part of p_memsz past p_filesz (.bss) is already cleared.
      if (s.data) mem.write(s.gpa, s.data);
      else if (s.fileOffset !== undefined && plan.kernelFile) {
        const file = plan.kernelFile;
        const offset = s.fileOffset;
        const read = (from: number, to: number) => {
          if (to > from && file.readAt(mem.slice(s.gpa + from, to - from), offset + from) !== to - from)
            throw new ImageError(`${file.name}: the file changed since it was checked (it is shorter)`);
        };
        let at = 0;
        for (const z of s.zero ?? []) {
          read(at, z.offset);
          at = z.offset + z.size;
        }
        read(at, s.size);
      }
    }
  } finally {
    plan.kernelFile?.close();
  }
  // The banner lies in .rodata, a smaller segment than .text: the smaller ones are looked at first.
  if (plan.kernelFile && plan.kernelVersion === undefined)
    for (const s of [...plan.segments].filter((x) => !x.data).sort((a, b) => a.size - b.size)) {
      plan.kernelVersion = bannerVersion(mem.slice(s.gpa, s.size));
      if (plan.kernelVersion) break;
    }
  mem.write(START_INFO_ADDR, plan.startInfo);
  mem.fill(PVH_CMDLINE_ADDR, PVH_CMDLINE_ROOM, 0);
  mem.write(PVH_CMDLINE_ADDR, plan.cmdline);
  return START_INFO_ADDR;
}
