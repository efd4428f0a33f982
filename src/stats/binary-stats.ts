// KVM's binary statistics file (KVM_GET_STATS_FD; Documentation/virt/kvm/api.rst, "KVM_GET_STATS_FD"): a
// header, an id string, self-describing descriptors and a data block of u64 values. Everything is read from
// the file; no name, type, unit or offset is assumed. The header and descriptors are read once per file, the
// data block once per poll (one pread).
import { readSync } from "node:fs";
import { StatsFormatError } from "./errors.js";
import type { StatType, StatUnit } from "./types.js";

const HEADER_BYTES = 24;
/** Limits far above what any KVM has (48-byte names, ~60 stats): a file past them is refused, not read. */
const MAX_NAME_SIZE = 1024;
const MAX_DESCRIPTORS = 4096;
const MAX_DATA_BYTES = 1 << 20;

const TYPES: readonly StatType[] = ["cumulative", "instant", "peak", "linear-hist", "log-hist"];
const UNITS: readonly StatUnit[] = ["none", "bytes", "seconds", "cycles", "boolean"];

/** One descriptor, decoded (struct kvm_stats_desc). */
export interface BinaryStatDesc {
  name: string;
  type: StatType;
  unit: StatUnit;
  base: 10 | 2;
  exponent: number;
  /** Number of u64 values: 1, or the bucket count of a histogram. */
  size: number;
  /** Byte offset in the data block. */
  offset: number;
  /** Width of a linear histogram's buckets. */
  bucketSize: number;
  /** The raw flags word, for what a newer KVM may add. */
  flags: number;
}

function readExact(fd: number, buf: Buffer, position: number, what: string): void {
  const n = readSync(fd, buf, 0, buf.length, position);
  if (n !== buf.length) throw new StatsFormatError(`KVM stats file: short read of the ${what} (${n} bytes)`);
}

/** A stats fd whose layout has been read. The fd is the caller's: it is not closed here. */
export class BinaryStatsFile {
  private readonly data: Buffer;
  /** The same bytes as u32 words (offsets are 8-byte aligned): faster than Buffer's readers. */
  private readonly words: Uint32Array;

  private constructor(
    readonly fd: number,
    /** `kvm-<pid>` for a VM, `kvm-<pid>/vcpu-<id>` for a vCPU. */
    readonly id: string,
    readonly descs: readonly BinaryStatDesc[],
    private readonly dataOffset: number,
    dataBytes: number,
  ) {
    this.data = Buffer.alloc(dataBytes);
    this.words = new Uint32Array(this.data.buffer, this.data.byteOffset, dataBytes / 4);
  }

  /** Read the header, id and descriptors of stats fd `fd`. Throws StatsFormatError on anything malformed. */
  static open(fd: number): BinaryStatsFile {
    const h = Buffer.alloc(HEADER_BYTES);
    readExact(fd, h, 0, "header");
    const nameSize = h.readUInt32LE(4);
    const numDesc = h.readUInt32LE(8);
    const idOffset = h.readUInt32LE(12);
    const descOffset = h.readUInt32LE(16);
    const dataOffset = h.readUInt32LE(20);
    if (nameSize === 0 || nameSize > MAX_NAME_SIZE || numDesc > MAX_DESCRIPTORS)
      throw new StatsFormatError(
        `KVM stats file: implausible header (name size ${nameSize}, ${numDesc} stats)`,
      );
    const idBuf = Buffer.alloc(nameSize);
    readExact(fd, idBuf, idOffset, "id");
    const id = cString(idBuf, 0, nameSize);
    const descBytes = 16 + nameSize;
    const d = Buffer.alloc(descBytes * numDesc);
    if (numDesc > 0) readExact(fd, d, descOffset, "descriptors");
    const descs: BinaryStatDesc[] = [];
    let dataBytes = 0;
    for (let i = 0; i < numDesc; i++) {
      const at = i * descBytes;
      const flags = d.readUInt32LE(at);
      const size = d.readUInt16LE(at + 6);
      const offset = d.readUInt32LE(at + 8);
      const end = offset + 8 * size;
      if (size === 0 || offset % 8 !== 0 || end > MAX_DATA_BYTES)
        throw new StatsFormatError(`KVM stats file: stat ${i} lies outside the data block`);
      dataBytes = Math.max(dataBytes, end);
      descs.push({
        name: cString(d, at + 16, nameSize),
        type: TYPES[flags & 0xf] ?? "instant",
        unit: UNITS[(flags >> 4) & 0xf] ?? "none",
        base: ((flags >> 8) & 0xf) === 1 ? 2 : 10,
        exponent: d.readInt16LE(at + 4),
        size,
        offset,
        bucketSize: d.readUInt32LE(at + 12),
        flags,
      });
    }
    return new BinaryStatsFile(fd, id, descs, dataOffset, dataBytes);
  }

  /** Read the data block now (one pread); then value()/values() give what it held. */
  refresh(): void {
    if (this.data.length > 0) readExact(this.fd, this.data, this.dataOffset, "data block");
  }

  /** Value `i` of descriptor `d` from the last refresh(), as a Number (exact below 2^53). */
  value(d: BinaryStatDesc, i = 0): number {
    const w = (d.offset >> 2) + 2 * i;
    return this.words[w] + this.words[w + 1] * 0x1_0000_0000;
  }

  /** Every value of `d` (histogram buckets). */
  values(d: BinaryStatDesc): number[] {
    const out = new Array<number>(d.size);
    for (let i = 0; i < d.size; i++) out[i] = this.value(d, i);
    return out;
  }
}

function cString(b: Buffer, at: number, max: number): string {
  const end = b.indexOf(0, at);
  return b.toString("latin1", at, end < 0 || end > at + max ? at + max : end);
}

/** The vCPU id in a vCPU stats file's id (`kvm-<pid>/vcpu-<id>`), or undefined for a VM's. */
export function vcpuOfStatsId(id: string): number | undefined {
  const m = /\/vcpu-(\d+)$/.exec(id);
  return m ? Number(m[1]) : undefined;
}
