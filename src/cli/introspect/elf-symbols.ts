// Symbols of an ELF file (the guest's own executable, with its symbol table), for `vmtool introspect events
// --break SYMBOL`: every offset and size in the file is checked before it is used, so a truncated or hostile
// file is refused with one line.
import { readInputFile } from "../../files/input-file.js";
import { UsageError } from "../errors.js";
import { hex } from "../../format.js";

/** The largest ELF file read for its symbols. */
const MAX_ELF_FILE = 512 * 1024 * 1024;

const SHT_SYMTAB = 2;
const SHT_DYNSYM = 11;
const STB_LOCAL = 0;
const STT_SECTION = 3;
const STT_FILE = 4;

export interface ElfSymbol {
  name: string;
  value: bigint;
  size: bigint;
  global: boolean;
}

export class ElfSymbols {
  private readonly byName = new Map<string, ElfSymbol[]>();

  constructor(
    readonly file: string,
    symbols: readonly ElfSymbol[],
  ) {
    for (const s of symbols) {
      const list = this.byName.get(s.name);
      if (list) list.push(s);
      else this.byName.set(s.name, [s]);
    }
  }

  get count(): number {
    let n = 0;
    for (const l of this.byName.values()) n += l.length;
    return n;
  }

  /** The address of "name" or "name+offset" (offset decimal or 0x hex). */
  resolve(spec: string): bigint {
    const m = /^([A-Za-z_.$][\w.$@]*)(?:\+(0x[0-9a-f]+|\d+))?$/i.exec(spec);
    if (!m) throw new UsageError(`'${spec}' is neither an address nor a symbol (name or name+offset)`);
    const list = this.byName.get(m[1]);
    if (!list) throw new UsageError(`${this.file}: no symbol '${m[1]}'`);
    const globals = list.filter((s) => s.global);
    const pick = globals.length > 0 ? globals : list;
    if (pick.length > 1)
      throw new UsageError(
        `${this.file}: '${m[1]}' names ${pick.length} symbols (${pick.map((s) => hex(s.value)).join(", ")}): give the address`,
      );
    return pick[0].value + BigInt(m[2] ?? 0);
  }
}

/** Read the symbol tables (.symtab and .dynsym) of an ELF32 or ELF64 little-endian file. */
export function readElfSymbols(path: string, label = path): ElfSymbols {
  const b = readInputFile(path, MAX_ELF_FILE, "512 MiB (the largest ELF file read for symbols)", {
    name: label,
    what: "an ELF file",
  });
  const bad = (what: string) => new UsageError(`${label}: ${what}`);
  if (b.length < 16 || b[0] !== 0x7f || b[1] !== 0x45 || b[2] !== 0x4c || b[3] !== 0x46)
    throw bad("not an ELF file (no \\x7fELF magic)");
  const is64 = b[4] === 2;
  if (b[4] !== 1 && !is64) throw bad(`unknown ELF class ${b[4]}`);
  if (b[5] !== 1) throw bad("not a little-endian ELF file");
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const need = (off: number, len: number, what: string) => {
    if (off < 0 || len < 0 || off + len > b.length) throw bad(`truncated: the file ends inside ${what}`);
  };
  const u16 = (o: number) => v.getUint16(o, true);
  const u32 = (o: number) => v.getUint32(o, true);
  const word = (o: number) => (is64 ? v.getBigUint64(o, true) : BigInt(v.getUint32(o, true)));
  const num = (x: bigint, what: string) => {
    if (x > BigInt(b.length)) throw bad(`truncated: the file ends inside ${what}`);
    return Number(x);
  };
  need(0, is64 ? 64 : 52, "the ELF header");
  const shoff = num(word(is64 ? 0x28 : 0x20), "the section headers");
  const shentsize = u16(is64 ? 0x3a : 0x2e);
  const shnum = u16(is64 ? 0x3c : 0x30);
  if (shoff === 0 || shnum === 0) throw bad("no section headers, so no symbol table (was it stripped?)");
  const minEnt = is64 ? 64 : 40;
  if (shentsize < minEnt) throw bad(`section header size ${shentsize} is below ${minEnt}`);
  need(shoff, shnum * shentsize, "the section headers");
  // Offsets and sizes are checked only for the sections read (a .bss lies past the file's end, rightly).
  const section = (i: number) => {
    const o = shoff + i * shentsize;
    return {
      type: u32(o + 4),
      offset: word(o + (is64 ? 0x18 : 0x10)),
      size: word(o + (is64 ? 0x20 : 0x14)),
      link: u32(o + (is64 ? 0x28 : 0x18)),
      entsize: word(o + (is64 ? 0x38 : 0x24)),
    };
  };
  const inFile = (sec: { offset: bigint; size: bigint }, what: string) => {
    if (sec.offset + sec.size > BigInt(b.length)) throw bad(`truncated: the file ends inside ${what}`);
    return { offset: Number(sec.offset), size: Number(sec.size) };
  };
  const symbols: ElfSymbol[] = [];
  let tables = 0;
  for (let i = 0; i < shnum; i++) {
    const s = section(i);
    if (s.type !== SHT_SYMTAB && s.type !== SHT_DYNSYM) continue;
    tables++;
    const entsize = is64 ? 24 : 16;
    if (s.entsize !== 0n && s.entsize < BigInt(entsize))
      throw bad(`symbol table ${i}: entries of ${s.entsize} bytes`);
    const step = Number(s.entsize) || entsize;
    const tab = inFile(s, `symbol table ${i}`);
    if (s.link >= shnum) throw bad(`symbol table ${i}: its string table ${s.link} does not exist`);
    const strtab = inFile(section(s.link), `string table ${s.link}`);
    for (let o = tab.offset; o + entsize <= tab.offset + tab.size; o += step) {
      const nameOff = u32(o);
      const info = b[o + (is64 ? 4 : 12)];
      const shndx = u16(o + (is64 ? 6 : 14));
      const value = is64 ? v.getBigUint64(o + 8, true) : BigInt(u32(o + 4));
      const size = is64 ? v.getBigUint64(o + 16, true) : BigInt(u32(o + 8));
      const type = info & 0xf;
      if (shndx === 0 || nameOff === 0 || type === STT_SECTION || type === STT_FILE) continue;
      if (nameOff >= strtab.size) throw bad(`symbol table ${i}: a name outside its string table`);
      const start = strtab.offset + nameOff;
      let end = start;
      const limit = strtab.offset + strtab.size;
      while (end < limit && b[end] !== 0) end++;
      const name = Buffer.from(b.buffer, b.byteOffset + start, end - start).toString("latin1");
      symbols.push({ name, value, size, global: info >> 4 !== STB_LOCAL });
    }
  }
  if (tables === 0) throw bad("no symbol table (was it stripped?)");
  return new ElfSymbols(label, symbols);
}
