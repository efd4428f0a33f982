// ELF32 (i386) and ELF64 (x86-64) executables: the headers are read with every offset and size checked
// against the file, so a truncated or hostile file is refused with one line instead of being half-loaded.
// Only PT_LOAD program headers matter; each is loaded at its physical address (p_paddr), as QEMU does.
import { ImageError } from "./errors.js";
import { hex } from "../format.js";
import type { Segment } from "./types.js";

export const ELF_MAGIC = [0x7f, 0x45, 0x4c, 0x46] as const;
const ELFCLASS32 = 1;
const ELFCLASS64 = 2;
const ELFDATA2LSB = 1;
const ELFDATA2MSB = 2;
const ET_EXEC = 2;
const ET_DYN = 3;
export const EM_386 = 3;
export const EM_X86_64 = 62;
const PT_LOAD = 1;
const PT_INTERP = 3;
const PT_NOTE = 4;
const PN_XNUM = 0xffff;

const MACHINE_NAMES: Record<number, string> = {
  2: "SPARC",
  3: "i386",
  8: "MIPS",
  20: "PowerPC",
  21: "PowerPC64",
  22: "S390",
  40: "ARM",
  50: "IA-64",
  62: "x86-64",
  183: "AArch64",
  243: "RISC-V",
  258: "LoongArch",
};

export function isElf(b: Uint8Array): boolean {
  return b.length >= 4 && ELF_MAGIC.every((v, i) => b[i] === v);
}

export interface ElfImage {
  cls: 32 | 64;
  machine: number;
  /** e_entry translated to a physical address when it lies in a segment whose p_vaddr differs from p_paddr. */
  entry: bigint;
  /** PT_LOAD segments with a non-zero p_memsz, addresses as BigInt (validated: no wrap-around). */
  loads: (ElfLayout["loads"][number] & { data: Uint8Array })[];
  /** The PT_NOTE segments' bytes (read with elfNotes: guests that do not need their notes never check them). */
  notes: ({ index: number; data: Uint8Array; align: 4 | 8 } | { index: number; truncated: bigint })[];
}

/** One ELF note: its owner's name (without the NUL), its type and its descriptor bytes. */
export interface ElfNote {
  name: string;
  type: number;
  desc: Uint8Array;
}

/** Where an ELF file's loadable segments and notes are in the file (elfLayout): offsets checked against its size. */
export interface ElfLayout {
  cls: 32 | 64;
  machine: number;
  entry: bigint;
  loads: { paddr: bigint; vaddr: bigint; memSize: bigint; fileOffset: number; fileSize: number }[];
  notes: (
    | { index: number; fileOffset: number; fileSize: number; align: 4 | 8 }
    | { index: number; truncated: bigint }
  )[];
}

/** Parse and validate an x86 ELF executable (ELF32 for i386 or ELF64 for x86-64, little-endian, ET_EXEC). */
export function parseElf(b: Uint8Array, name: string): ElfImage {
  const l = elfLayout(b, b.length, name);
  return {
    ...l,
    loads: l.loads.map((x) => ({ ...x, data: b.subarray(x.fileOffset, x.fileOffset + x.fileSize) })),
    notes: l.notes.map((n) =>
      "truncated" in n
        ? n
        : { index: n.index, align: n.align, data: b.subarray(n.fileOffset, n.fileOffset + n.fileSize) },
    ),
  };
}

/** The first bytes of an ELF file that hold its header and program headers (what elfLayout reads). */
export function elfHeadersEnd(head: Uint8Array): number {
  if (head.length < 64 || !isElf(head)) return 64;
  const v = new DataView(head.buffer, head.byteOffset, head.byteLength);
  const is64 = head[4] === ELFCLASS64;
  const phoff = is64 ? Number(v.getBigUint64(32, true)) : v.getUint32(28, true);
  const phentsize = v.getUint16(is64 ? 54 : 42, true);
  const phnum = v.getUint16(is64 ? 56 : 44, true);
  return Math.max(is64 ? 64 : 52, phoff + phentsize * phnum);
}

/**
 * The layout of an x86 ELF executable of `fileSize` bytes from its first bytes `b` (at least its header and
 * program headers: elfHeadersEnd), every offset and size checked against the whole file, as parseElf does.
 */
export function elfLayout(b: Uint8Array, fileSize: number, name: string): ElfLayout {
  const bad = (what: string) => new ImageError(`${name}: ${what}`);
  if (fileSize < 16) throw bad(`truncated ELF file (${fileSize} bytes, the ELF identification alone is 16)`);
  const cls = b[4];
  if (cls !== ELFCLASS32 && cls !== ELFCLASS64)
    throw bad(`unknown ELF class ${cls} (neither ELF32 nor ELF64)`);
  if (b[5] === ELFDATA2MSB) throw bad("big-endian ELF file: x86 guests are little-endian");
  if (b[5] !== ELFDATA2LSB) throw bad(`unknown ELF data encoding ${b[5]}`);
  if (b[6] !== 1) throw bad(`unknown ELF version ${b[6]}`);
  const is64 = cls === ELFCLASS64;
  const ehsize = is64 ? 64 : 52;
  if (fileSize < ehsize) throw bad(`truncated ELF header (${fileSize} bytes of ${ehsize})`);
  if (b.length < ehsize) throw new RangeError(`elfLayout: ${b.length} bytes read, the header has ${ehsize}`);
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const u16 = (o: number) => v.getUint16(o, true);
  const u32 = (o: number) => v.getUint32(o, true);
  const addr = (o: number) => (is64 ? v.getBigUint64(o, true) : BigInt(v.getUint32(o, true)));

  const type = u16(16);
  const machine = u16(18);
  const want = is64 ? EM_X86_64 : EM_386;
  if (machine !== want) {
    const mname = MACHINE_NAMES[machine] ?? `machine ${machine}`;
    if (machine === EM_X86_64 || machine === EM_386)
      throw bad(`ELF${is64 ? 64 : 32} file for ${mname}: vmtool runs ELF32 for i386 or ELF64 for x86-64`);
    throw bad(`ELF file for ${mname}, not x86: vmtool runs i386 (ELF32) and x86-64 (ELF64) guests`);
  }
  if (type === ET_DYN)
    throw bad("position-independent ELF (ET_DYN): link the guest as a static, non-PIE executable");
  if (type !== ET_EXEC) throw bad(`ELF type ${type} is not an executable (ET_EXEC)`);

  const entryV = addr(24);
  const phoff = addr(is64 ? 32 : 28);
  const phentsize = u16(is64 ? 54 : 42);
  const phnum = u16(is64 ? 56 : 44);
  const wantEnt = is64 ? 56 : 32;
  if (phnum === 0) throw bad("ELF file without program headers: nothing to load");
  if (phnum === PN_XNUM)
    throw bad("ELF file with more than 65534 program headers (PN_XNUM) is not supported");
  if (phentsize !== wantEnt) throw bad(`ELF program header size ${phentsize}, expected ${wantEnt}`);
  const phEnd = phoff + BigInt(phnum * phentsize);
  if (phEnd > BigInt(fileSize))
    throw bad(
      `truncated ELF file: program headers end at ${hex(phEnd)}, the file has ${hex(fileSize)} bytes`,
    );
  if (phEnd > BigInt(b.length))
    throw new RangeError(`elfLayout: ${b.length} bytes read, the program headers end at ${phEnd}`);

  const top = is64 ? 1n << 64n : 1n << 32n;
  const loads: ElfLayout["loads"] = [];
  const notes: ElfLayout["notes"] = [];
  for (let i = 0; i < phnum; i++) {
    const o = Number(phoff) + i * phentsize;
    const ptype = u32(o);
    if (ptype === PT_INTERP) throw bad("dynamically linked ELF (PT_INTERP): link the guest statically");
    if (ptype === PT_NOTE) {
      const offset = addr(is64 ? o + 8 : o + 4);
      const filesz = addr(is64 ? o + 32 : o + 16);
      const align = addr(is64 ? o + 48 : o + 28);
      if (offset + filesz <= BigInt(fileSize))
        notes.push({
          index: i,
          fileOffset: Number(offset),
          fileSize: Number(filesz),
          align: align === 8n ? 8 : 4,
        });
      else notes.push({ index: i, truncated: offset + filesz });
      continue;
    }
    if (ptype !== PT_LOAD) continue;
    const offset = addr(is64 ? o + 8 : o + 4);
    const vaddr = addr(is64 ? o + 16 : o + 8);
    const paddr = addr(is64 ? o + 24 : o + 12);
    const filesz = addr(is64 ? o + 32 : o + 16);
    const memsz = addr(is64 ? o + 40 : o + 20);
    const what = `segment ${i} (p_paddr ${hex(paddr)})`;
    if (filesz > memsz) throw bad(`${what}: p_filesz ${hex(filesz)} is larger than p_memsz ${hex(memsz)}`);
    if (offset + filesz > BigInt(fileSize))
      throw bad(
        `truncated ELF file: ${what} needs bytes up to ${hex(offset + filesz)}, the file has ${hex(fileSize)}`,
      );
    if (paddr + memsz > top || vaddr + memsz > top)
      throw bad(`${what}: address + size ${hex(memsz)} wraps around the ${is64 ? 64 : 32}-bit address space`);
    if (memsz === 0n) continue;
    loads.push({ paddr, vaddr, memSize: memsz, fileOffset: Number(offset), fileSize: Number(filesz) });
  }
  if (loads.length === 0) throw bad("ELF file without a loadable segment (PT_LOAD): nothing to load");

  // A higher-half kernel's entry is virtual; it runs before paging is set, so translate it.
  let entry = entryV;
  const inV = loads.find((l) => entryV >= l.vaddr && entryV < l.vaddr + l.memSize);
  const inP = loads.find((l) => entryV >= l.paddr && entryV < l.paddr + l.memSize);
  if (!inP && inV) entry = inV.paddr + (entryV - inV.vaddr);
  return { cls: is64 ? 64 : 32, machine, entry, loads, notes };
}

/** The notes of an ELF image's PT_NOTE segments, in file order, each checked against its segment. */
export function elfNotes(img: ElfImage, name: string): ElfNote[] {
  const bad = (what: string) => new ImageError(`${name}: ${what}`);
  const notes: ElfNote[] = [];
  for (const seg of img.notes) {
    if ("truncated" in seg)
      throw bad(`truncated ELF file: note segment ${seg.index} needs bytes up to ${hex(seg.truncated)}`);
    notes.push(...readNotes(seg.data, seg.align, bad));
  }
  return notes;
}

/** The notes in one PT_NOTE segment's bytes: namesz, descsz, type, then name and desc, each padded to `align`. */
function readNotes(seg: Uint8Array, align: 4 | 8, bad: (what: string) => ImageError): ElfNote[] {
  const v = new DataView(seg.buffer, seg.byteOffset, seg.byteLength);
  const up = (n: number) => Math.ceil(n / align) * align;
  const notes: ElfNote[] = [];
  let at = 0;
  while (at + 12 <= seg.length) {
    const namesz = v.getUint32(at, true);
    const descsz = v.getUint32(at + 4, true);
    const type = v.getUint32(at + 8, true);
    const nameAt = at + 12;
    const descAt = nameAt + up(namesz);
    if (descAt > seg.length || descAt + descsz > seg.length)
      throw bad(`ELF note of type ${type} at ${hex(at)} in its segment runs past the segment's end`);
    const nameBytes = seg.subarray(nameAt, nameAt + namesz);
    const nul = nameBytes.indexOf(0);
    const name = new TextDecoder("latin1").decode(nul < 0 ? nameBytes : nameBytes.subarray(0, nul));
    notes.push({ name, type, desc: seg.subarray(descAt, descAt + descsz) });
    at = descAt + up(descsz);
  }
  return notes;
}

/** ELF loads as plan segments (addresses proven to fit in 64 bits; range checks come later). */
export function elfSegments(img: ElfImage): { segments: Segment[]; tooHigh?: bigint } {
  const segments: Segment[] = [];
  for (const l of img.loads) {
    // Beyond 2^53 a Number would be rounded: such a segment is outside any guest RAM anyway.
    if (l.paddr + l.memSize > BigInt(Number.MAX_SAFE_INTEGER)) return { segments, tooHigh: l.paddr };
    segments.push({ gpa: Number(l.paddr), data: l.data, memSize: Number(l.memSize) });
  }
  return { segments };
}

/**
 * Where an ELF file's section header table is (its file offset and byte size) and which entry holds the section
 * names, from its header (e_shoff, e_shentsize, e_shnum, e_shstrndx).
 */
export function elfSectionTable(
  head: Uint8Array,
): { offset: number; size: number; names: number } | undefined {
  if (head.length < 64 || !isElf(head)) return undefined;
  const v = new DataView(head.buffer, head.byteOffset, head.byteLength);
  const is64 = head[4] === ELFCLASS64;
  const offset = is64 ? Number(v.getBigUint64(40, true)) : v.getUint32(32, true);
  const entrySize = v.getUint16(is64 ? 58 : 46, true);
  const count = v.getUint16(is64 ? 60 : 48, true);
  const names = v.getUint16(is64 ? 62 : 50, true);
  // No table, or one with more sections than e_shnum holds (SHN_XINDEX, extended numbering): none used.
  if (offset === 0 || count === 0 || names >= count || entrySize !== (is64 ? 64 : 40)) return undefined;
  return { offset, size: count * entrySize, names };
}

/**
 * The file range of the section called `name` (one with file contents: SHT_PROGBITS), from the bytes of the
 * section header table (`table`, as elfSectionTable places it) and `read(offset, length)` for the section names.
 * Undefined when there is none or anything is out of the file's `fileSize` bytes: sections are a hint here
 * (the loader itself goes by program headers), so a damaged table is not an error.
 */
export function elfSection(
  cls: 32 | 64,
  table: Uint8Array,
  names: number,
  fileSize: number,
  read: (offset: number, length: number) => Uint8Array | undefined,
  name: string,
): { fileOffset: number; size: number } | undefined {
  const SHT_PROGBITS = 1;
  const ent = cls === 64 ? 64 : 40;
  const v = new DataView(table.buffer, table.byteOffset, table.byteLength);
  const field = (i: number, o64: number, o32: number) =>
    cls === 64 ? Number(v.getBigUint64(i * ent + o64, true)) : v.getUint32(i * ent + o32, true);
  const count = Math.floor(table.length / ent);
  if (names >= count) return undefined;
  const strOffset = field(names, 24, 16);
  const strSize = field(names, 32, 20);
  if (strOffset + strSize > fileSize) return undefined;
  const want = new TextEncoder().encode(name + "\0");
  const strtab = read(strOffset, Math.min(strSize, 1 << 20));
  if (!strtab) return undefined;
  for (let i = 0; i < count; i++) {
    const nameAt = v.getUint32(i * ent, true);
    if (v.getUint32(i * ent + 4, true) !== SHT_PROGBITS || nameAt + want.length > strtab.length) continue;
    if (!want.every((c, k) => strtab[nameAt + k] === c)) continue;
    const fileOffset = field(i, 24, 16);
    const size = field(i, 32, 20);
    return fileOffset + size <= fileSize ? { fileOffset, size } : undefined;
  }
  return undefined;
}

/** A section's guest address range (sh_addr, sh_size). */
export interface ElfZeroSection {
  addr: bigint;
  size: bigint;
}

/**
 * The address ranges (sh_addr, sh_size) of the sections that are zero when loaded: SHT_NOBITS with SHF_ALLOC
 * (.bss, .brk). Their file bytes, where a segment's p_filesz covers them, hold nothing (a vmlinux pads them
 * with zeros because a section with contents follows). From the bytes of the section header table, as for
 * elfSection; a hint only, so nothing here is an error.
 */
export function elfZeroSections(cls: 32 | 64, table: Uint8Array): ElfZeroSection[] {
  const SHT_NOBITS = 8;
  const SHF_ALLOC = 2n;
  const ent = cls === 64 ? 64 : 40;
  const v = new DataView(table.buffer, table.byteOffset, table.byteLength);
  const field = (i: number, o64: number, o32: number) =>
    cls === 64 ? v.getBigUint64(i * ent + o64, true) : BigInt(v.getUint32(i * ent + o32, true));
  const out: ElfZeroSection[] = [];
  for (let i = 0; i < Math.floor(table.length / ent); i++) {
    if (v.getUint32(i * ent + 4, true) !== SHT_NOBITS || (field(i, 8, 8) & SHF_ALLOC) === 0n) continue;
    const size = field(i, 32, 20);
    if (size > 0n) out.push({ addr: field(i, 16, 12), size });
  }
  return out;
}
