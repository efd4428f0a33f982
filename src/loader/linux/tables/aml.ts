// A small writer of ACPI Machine Language (ACPI 6.5, chapter 20): the few terms a DSDT that describes fixed
// devices needs (Scope, Device, Name, Package, Buffer, integers, strings, EISA ids) and the resource descriptors
// of their _CRS (chapter 6.4: IO, Memory32Fixed, Extended Interrupt). Each function returns the encoded bytes
// of one term; a term that contains others (Scope, Device, Package, Buffer) is prefixed with its PkgLength.
// Only what vmtool writes is here; nothing is parsed.
import { VmtoolError } from "../../../errors.js";

/** AML opcodes and prefixes (ACPI 6.5, 20.3). */
const OP = {
  ZERO: 0x00,
  ONE: 0x01,
  NAME: 0x08,
  BYTE: 0x0a,
  WORD: 0x0b,
  DWORD: 0x0c,
  STRING: 0x0d,
  QWORD: 0x0e,
  SCOPE: 0x10,
  BUFFER: 0x11,
  PACKAGE: 0x12,
  EXT: 0x5b,
  DEVICE: 0x82, // after EXT
  ROOT: 0x5c,
  PARENT: 0x5e,
  DUAL_NAME: 0x2e,
  MULTI_NAME: 0x2f,
} as const;

/** A term's body is at most this long: PkgLength has 28 bits (its own bytes included). */
export const PKG_LENGTH_MAX = (1 << 28) - 1;

/** An AML term vmtool cannot encode: a bug in what vmtool describes, not a user's input. */
export class AmlError extends VmtoolError {}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * PkgLength for a body of `bodyLength` bytes (20.2.4): the value counts its own bytes too. One byte holds up to
 * 63; longer ones take 1-3 more bytes, the lead byte's bits 7-6 saying how many and its bits 3-0 the low nibble.
 */
export function pkgLength(bodyLength: number): Uint8Array {
  if (!Number.isInteger(bodyLength) || bodyLength < 0) throw new AmlError(`body length ${bodyLength}`);
  if (bodyLength + 1 <= 0x3f) return Uint8Array.of(bodyLength + 1);
  for (let extra = 1; extra <= 3; extra++) {
    const total = bodyLength + 1 + extra;
    if (total < 2 ** (4 + 8 * extra)) {
      const out = new Uint8Array(1 + extra);
      out[0] = (extra << 6) | (total & 0x0f);
      for (let i = 1; i <= extra; i++) out[i] = (total >>> (4 + 8 * (i - 1))) & 0xff;
      return out;
    }
  }
  throw new AmlError(`a body of ${bodyLength} bytes is longer than PkgLength holds (${PKG_LENGTH_MAX})`);
}

/** A term with its PkgLength: opcode bytes, PkgLength, body. */
function withLength(op: readonly number[], body: readonly Uint8Array[]): Uint8Array {
  const b = concat(body);
  return concat([Uint8Array.from(op), pkgLength(b.length), b]);
}

/** One NameSeg: 1-4 characters A-Z, 0-9 or _, not starting with a digit, padded with _ to 4. */
function nameSeg(seg: string): Uint8Array {
  if (!/^[A-Z_][A-Z0-9_]{0,3}$/.test(seg)) throw new AmlError(`"${seg}" is not an ACPI name segment`);
  return new TextEncoder().encode(seg.padEnd(4, "_"));
}

/** A NameString: an optional root (\) or parent (^) prefix, then segments separated by dots ("\_SB_.COM1"). */
export function nameString(path: string): Uint8Array {
  let p = path;
  const prefix: number[] = [];
  if (p.startsWith("\\")) {
    prefix.push(OP.ROOT);
    p = p.slice(1);
  } else
    while (p.startsWith("^")) {
      prefix.push(OP.PARENT);
      p = p.slice(1);
    }
  const segs = p === "" ? [] : p.split(".").map(nameSeg);
  const head =
    segs.length === 0
      ? [OP.ZERO] // NullName
      : segs.length === 1
        ? []
        : segs.length === 2
          ? [OP.DUAL_NAME]
          : [OP.MULTI_NAME, segs.length];
  if (segs.length > 255) throw new AmlError(`${segs.length} name segments`);
  return concat([Uint8Array.from([...prefix, ...head]), ...segs]);
}

/** An integer in the shortest encoding (Zero, One, Byte, Word, DWord or QWord constant). */
export function integer(value: number | bigint): Uint8Array {
  const v = BigInt(value);
  if (v < 0n || v > 0xffff_ffff_ffff_ffffn) throw new AmlError(`${value} is not a 64-bit unsigned integer`);
  if (v === 0n) return Uint8Array.of(OP.ZERO);
  if (v === 1n) return Uint8Array.of(OP.ONE);
  const [op, bytes] =
    v <= 0xffn
      ? [OP.BYTE, 1]
      : v <= 0xffffn
        ? [OP.WORD, 2]
        : v <= 0xffff_ffffn
          ? [OP.DWORD, 4]
          : [OP.QWORD, 8];
  const out = new Uint8Array(1 + bytes);
  out[0] = op;
  for (let i = 0; i < bytes; i++) out[1 + i] = Number((v >> BigInt(8 * i)) & 0xffn);
  return out;
}

/** A string constant: printable ASCII, NUL-terminated. */
export function string(s: string): Uint8Array {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0 || c > 0x7f) throw new AmlError(`string ${JSON.stringify(s)} is not ASCII without NUL`);
  }
  return concat([Uint8Array.of(OP.STRING), new TextEncoder().encode(s), Uint8Array.of(0)]);
}

/**
 * A compressed EISA id ("PNP0501") as the DWord ASL's EisaId() makes: three letters of 5 bits each (A = 1) and
 * four hex digits, stored big-endian.
 */
export function eisaId(id: string): Uint8Array {
  if (!/^[A-Z]{3}[0-9A-F]{4}$/.test(id)) throw new AmlError(`"${id}" is not an EISA id (AAA####)`);
  const c = (i: number) => id.charCodeAt(i) - 0x40;
  const vendor = (c(0) << 10) | (c(1) << 5) | c(2);
  const product = parseInt(id.slice(3), 16);
  return Uint8Array.of(OP.DWORD, vendor >> 8, vendor & 0xff, product >> 8, product & 0xff);
}

/** Name(path, value). */
export function name(path: string, value: Uint8Array): Uint8Array {
  return concat([Uint8Array.of(OP.NAME), nameString(path), value]);
}

/** Scope(path) { terms }. */
export function scope(path: string, terms: readonly Uint8Array[]): Uint8Array {
  return withLength([OP.SCOPE], [nameString(path), ...terms]);
}

/** Device(path) { terms }. */
export function device(path: string, terms: readonly Uint8Array[]): Uint8Array {
  return withLength([OP.EXT, OP.DEVICE], [nameString(path), ...terms]);
}

/** Package() { elements } (at most 255 elements: NumElements is one byte). */
export function pkg(elements: readonly Uint8Array[]): Uint8Array {
  if (elements.length > 255) throw new AmlError(`a package of ${elements.length} elements`);
  return withLength([OP.PACKAGE], [Uint8Array.of(elements.length), ...elements]);
}

/** Buffer() { bytes }. */
export function buffer(bytes: Uint8Array): Uint8Array {
  return withLength([OP.BUFFER], [integer(bytes.length), bytes]);
}

/** ResourceTemplate() { descriptors }: a buffer of the descriptors and an End Tag (checksum 0: "none"). */
export function resourceTemplate(descriptors: readonly Uint8Array[]): Uint8Array {
  return buffer(concat([...descriptors, Uint8Array.of(0x79, 0x00)]));
}

/** IO(Decode16, base, base, 1, length): a fixed range of I/O ports (small descriptor 0x47, 6.4.2.5). */
export function ioPorts(base: number, length: number): Uint8Array {
  if (base < 0 || base + length > 0x1_0000 || length < 1 || length > 0xff)
    throw new AmlError(`I/O range ${base}+${length}`);
  return Uint8Array.of(0x47, 0x01, base & 0xff, base >> 8, base & 0xff, base >> 8, 0x01, length);
}

/** Memory32Fixed(ReadWrite, base, length) (large descriptor 0x86, 6.4.3.4). */
export function memory32Fixed(base: number, length: number): Uint8Array {
  if (base < 0 || length < 0 || base + length > 2 ** 32) throw new AmlError(`memory range ${base}+${length}`);
  const out = new Uint8Array(12);
  const v = new DataView(out.buffer);
  out.set([0x86, 0x09, 0x00, 0x01]);
  v.setUint32(4, base, true);
  v.setUint32(8, length, true);
  return out;
}

export interface InterruptFlags {
  edge: boolean;
  activeLow: boolean;
  shared: boolean;
}

/** Interrupt(ResourceConsumer, Edge|Level, ActiveHigh|ActiveLow, Exclusive|Shared) { gsis } (0x89, 6.4.3.6). */
export function extendedInterrupt(gsis: readonly number[], f: InterruptFlags): Uint8Array {
  if (gsis.length < 1 || gsis.length > 255) throw new AmlError(`${gsis.length} interrupts in one descriptor`);
  const out = new Uint8Array(5 + 4 * gsis.length);
  const v = new DataView(out.buffer);
  out[0] = 0x89;
  v.setUint16(1, 2 + 4 * gsis.length, true);
  out[3] = 0x01 | (f.edge ? 0x02 : 0) | (f.activeLow ? 0x04 : 0) | (f.shared ? 0x08 : 0);
  out[4] = gsis.length;
  gsis.forEach((g, i) => v.setUint32(5 + 4 * i, g, true));
  return out;
}

export { concat as amlConcat };
