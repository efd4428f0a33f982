// Crafted ELF64 files for the PVH loader's tests: PT_LOAD segments at chosen physical addresses and a PT_NOTE
// segment with chosen notes, laid out as a linker would (headers, then each segment's bytes 4 KiB-aligned).

export interface CraftedLoad {
  paddr: number;
  data: Uint8Array;
  /** p_memsz (default: the data's length). */
  memSize?: number;
}

export interface CraftedNote {
  name: string;
  type: number;
  desc: Uint8Array;
}

export interface CraftedElf {
  loads: CraftedLoad[];
  notes?: CraftedNote[];
  /** e_machine (default 62, x86-64). */
  machine?: number;
  /** e_entry (default: the first segment's address; PVH takes its entry from the note instead). */
  entry?: number;
}

/** A PVH entry note: Xen, type 18, a 64-bit value as x86-64 Linux writes it. */
export function pvhNote(entry: number, bytes: 4 | 8 = 8): CraftedNote {
  const desc = Buffer.alloc(bytes);
  if (bytes === 8) desc.writeBigUInt64LE(BigInt(entry));
  else desc.writeUInt32LE(entry);
  return { name: "Xen", type: 18, desc };
}

function noteBytes(notes: readonly CraftedNote[]): Buffer {
  const pad = (b: Buffer) => Buffer.concat([b, Buffer.alloc((4 - (b.length % 4)) % 4)]);
  return Buffer.concat(
    notes.map((n) => {
      const name = Buffer.from(n.name + "\0", "latin1");
      const h = Buffer.alloc(12);
      h.writeUInt32LE(name.length, 0);
      h.writeUInt32LE(n.desc.length, 4);
      h.writeUInt32LE(n.type, 8);
      return Buffer.concat([h, pad(name), pad(Buffer.from(n.desc))]);
    }),
  );
}

export function craftElf(e: CraftedElf): Buffer {
  const notes = e.notes && e.notes.length > 0 ? noteBytes(e.notes) : undefined;
  const phnum = e.loads.length + (notes ? 1 : 0);
  const align = (n: number) => Math.ceil(n / 0x1000) * 0x1000;
  let offset = align(64 + 56 * phnum);
  const parts: { offset: number; bytes: Buffer }[] = [];
  const ph = Buffer.alloc(56 * phnum);
  e.loads.forEach((l, i) => {
    const at = 56 * i;
    ph.writeUInt32LE(1, at); // PT_LOAD
    ph.writeUInt32LE(7, at + 4); // RWX
    ph.writeBigUInt64LE(BigInt(offset), at + 8);
    // A higher-half p_vaddr, as Linux links it (where that stays below 2^64).
    const vaddr = l.paddr < 0x4000_0000 ? BigInt(l.paddr) + 0xffff_ffff_8000_0000n : BigInt(l.paddr);
    ph.writeBigUInt64LE(vaddr, at + 16);
    ph.writeBigUInt64LE(BigInt(l.paddr), at + 24);
    ph.writeBigUInt64LE(BigInt(l.data.length), at + 32);
    ph.writeBigUInt64LE(BigInt(l.memSize ?? l.data.length), at + 40);
    ph.writeBigUInt64LE(0x1000n, at + 48);
    parts.push({ offset, bytes: Buffer.from(l.data) });
    offset = align(offset + l.data.length);
  });
  if (notes) {
    const at = 56 * e.loads.length;
    ph.writeUInt32LE(4, at); // PT_NOTE
    ph.writeUInt32LE(4, at + 4);
    ph.writeBigUInt64LE(BigInt(offset), at + 8);
    ph.writeBigUInt64LE(BigInt(notes.length), at + 32);
    ph.writeBigUInt64LE(BigInt(notes.length), at + 40);
    ph.writeBigUInt64LE(4n, at + 48);
    parts.push({ offset, bytes: notes });
    offset += notes.length;
  }
  const h = Buffer.alloc(64);
  Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]).copy(h);
  h.writeUInt16LE(2, 16); // ET_EXEC
  h.writeUInt16LE(e.machine ?? 62, 18);
  h.writeUInt32LE(1, 20);
  h.writeBigUInt64LE(BigInt(e.entry ?? e.loads[0]?.paddr ?? 0), 24);
  h.writeBigUInt64LE(64n, 32); // e_phoff
  h.writeUInt16LE(64, 52);
  h.writeUInt16LE(56, 54);
  h.writeUInt16LE(phnum, 56);
  const file = Buffer.alloc(offset);
  h.copy(file);
  ph.copy(file, 64);
  for (const p of parts) p.bytes.copy(file, p.offset);
  return file;
}

export interface CraftedSection {
  name: string;
  /** File range the section covers. */
  offset: number;
  size: number;
  /** sh_type (default 1, SHT_PROGBITS). */
  type?: number;
  /** sh_flags (default 0) and sh_addr (default 0). */
  flags?: number;
  addr?: bigint;
}

/**
 * `file` (an ELF64 from craftElf) with a section header table appended: a null section, `sections`, and the
 * section-name string table last (e_shstrndx), as a linker writes them.
 */
export function withSections(file: Buffer, sections: readonly CraftedSection[]): Buffer {
  const names = Buffer.from(["", ...sections.map((s) => s.name), ".shstrtab"].join("\0") + "\0", "latin1");
  const nameAt = (i: number) =>
    ["", ...sections.map((s) => s.name)].slice(0, i).reduce((n, s) => n + s.length + 1, 0);
  const strOffset = file.length;
  const tableOffset = Math.ceil((strOffset + names.length) / 8) * 8;
  const count = sections.length + 2;
  const table = Buffer.alloc(64 * count);
  sections.forEach((s, k) => {
    const at = 64 * (k + 1);
    table.writeUInt32LE(nameAt(k + 1), at);
    table.writeUInt32LE(s.type ?? 1, at + 4);
    table.writeBigUInt64LE(BigInt(s.flags ?? 0), at + 8);
    table.writeBigUInt64LE(s.addr ?? 0n, at + 16);
    table.writeBigUInt64LE(BigInt(s.offset), at + 24);
    table.writeBigUInt64LE(BigInt(s.size), at + 32);
  });
  const str = 64 * (count - 1);
  table.writeUInt32LE(nameAt(count - 1), str);
  table.writeUInt32LE(3, str + 4); // SHT_STRTAB
  table.writeBigUInt64LE(BigInt(strOffset), str + 24);
  table.writeBigUInt64LE(BigInt(names.length), str + 32);
  const out = Buffer.alloc(tableOffset + table.length);
  file.copy(out);
  names.copy(out, strOffset);
  table.copy(out, tableOffset);
  out.writeBigUInt64LE(BigInt(tableOffset), 40); // e_shoff
  out.writeUInt16LE(64, 58); // e_shentsize
  out.writeUInt16LE(count, 60); // e_shnum
  out.writeUInt16LE(count - 1, 62); // e_shstrndx
  return out;
}
