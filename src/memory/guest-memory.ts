// Guest physical memory: a set of RAM regions, each a host mapping seen through a Uint8Array with no copy.
// Every access is bounds-checked against the regions: a guest-supplied address or length that falls outside
// RAM (or wraps around) throws GuestMemoryError instead of touching host memory. This is the only way the
// VMM, loaders and devices reach guest RAM.
import { viewOf } from "../kvm/libc.js";

export class GuestMemoryError extends Error {
  constructor(
    readonly gpa: number,
    readonly length: number,
  ) {
    super(`guest physical range 0x${gpa.toString(16)}+0x${length.toString(16)} is outside guest RAM`);
    this.name = "GuestMemoryError";
  }
}

/** What a worker thread needs to rebuild the same GuestMemory: addresses only, no buffers. */
export interface RegionDescriptor {
  gpa: number;
  size: number;
  /** Host virtual address of the mapping (from mmap), or undefined for a test region over a plain buffer. */
  hostAddr?: bigint;
}

export interface Region {
  readonly gpa: number;
  readonly size: number;
  readonly hostAddr?: bigint;
  readonly bytes: Uint8Array;
  readonly view: DataView;
}

export class GuestMemory {
  readonly regions: readonly Region[];

  constructor(regions: readonly { gpa: number; bytes: Uint8Array; hostAddr?: bigint }[]) {
    const sorted = [...regions].sort((a, b) => a.gpa - b.gpa);
    for (let i = 1; i < sorted.length; i++) {
      if (sorted[i - 1].gpa + sorted[i - 1].bytes.length > sorted[i].gpa)
        throw new Error("guest memory regions overlap");
    }
    this.regions = sorted.map((r) => ({
      gpa: r.gpa,
      size: r.bytes.length,
      hostAddr: r.hostAddr,
      bytes: r.bytes,
      view: new DataView(r.bytes.buffer, r.bytes.byteOffset, r.bytes.byteLength),
    }));
  }

  /** Rebuild from descriptors in another thread of the same process (views over the same host mappings). */
  static fromDescriptors(descs: readonly RegionDescriptor[]): GuestMemory {
    return new GuestMemory(
      descs.map((d) => {
        if (d.hostAddr === undefined) throw new Error("region descriptor without a host address");
        return { gpa: d.gpa, hostAddr: d.hostAddr, bytes: new Uint8Array(viewOf(d.hostAddr, d.size)) };
      }),
    );
  }

  descriptors(): RegionDescriptor[] {
    return this.regions.map((r) => ({ gpa: r.gpa, size: r.size, hostAddr: r.hostAddr }));
  }

  /** Total bytes of RAM. */
  get size(): number {
    return this.regions.reduce((s, r) => s + r.size, 0);
  }

  /** The region holding all of [gpa, gpa+len), or undefined. Zero-length ranges must still start inside RAM. */
  private find(gpa: number, len: number): Region | undefined {
    if (!Number.isSafeInteger(gpa) || !Number.isSafeInteger(len) || gpa < 0 || len < 0) return undefined;
    for (const r of this.regions) {
      if (gpa >= r.gpa && gpa - r.gpa <= r.size && gpa - r.gpa + len <= r.size) {
        if (len === 0 && gpa - r.gpa === r.size) continue;
        return r;
      }
    }
    return undefined;
  }

  contains(gpa: number, len: number): boolean {
    return this.find(gpa, len) !== undefined;
  }

  /** A live view (no copy) of [gpa, gpa+len); throws GuestMemoryError if any byte is outside one region. */
  slice(gpa: number, len: number): Uint8Array {
    const r = this.find(gpa, len);
    if (!r) throw new GuestMemoryError(gpa, len);
    const o = gpa - r.gpa;
    return r.bytes.subarray(o, o + len);
  }

  /** A copy of [gpa, gpa+len). */
  read(gpa: number, len: number): Uint8Array {
    return this.slice(gpa, len).slice();
  }

  write(gpa: number, data: Uint8Array): void {
    this.slice(gpa, data.length).set(data);
  }

  fill(gpa: number, len: number, value = 0): void {
    this.slice(gpa, len).fill(value);
  }

  private at(gpa: number, len: number): [DataView, number] {
    const r = this.find(gpa, len);
    if (!r) throw new GuestMemoryError(gpa, len);
    return [r.view, gpa - r.gpa];
  }

  readU8(gpa: number): number {
    const [v, o] = this.at(gpa, 1);
    return v.getUint8(o);
  }
  readU16(gpa: number): number {
    const [v, o] = this.at(gpa, 2);
    return v.getUint16(o, true);
  }
  readU32(gpa: number): number {
    const [v, o] = this.at(gpa, 4);
    return v.getUint32(o, true);
  }
  readU64(gpa: number): bigint {
    const [v, o] = this.at(gpa, 8);
    return v.getBigUint64(o, true);
  }
  writeU8(gpa: number, value: number): void {
    const [v, o] = this.at(gpa, 1);
    v.setUint8(o, value);
  }
  writeU16(gpa: number, value: number): void {
    const [v, o] = this.at(gpa, 2);
    v.setUint16(o, value, true);
  }
  writeU32(gpa: number, value: number): void {
    const [v, o] = this.at(gpa, 4);
    v.setUint32(o, value >>> 0, true);
  }
  writeU64(gpa: number, value: bigint): void {
    const [v, o] = this.at(gpa, 8);
    v.setBigUint64(o, BigInt.asUintN(64, value), true);
  }
}
