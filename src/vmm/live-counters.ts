// vmtool's own exit counters, live: each vCPU thread counts its exits by KVM exit reason and by port / MMIO
// address into its own block of a shared memory-mapped file (run-dir.ts publishes it), which another process
// (`vmtool stat`, src/stats/run-dirs.ts) reads at any time without asking the run anything.
//
// The exit path pays one Float64Array increment per exit, plus for a port or MMIO exit a probe of a small
// open-addressing index kept in the thread's own memory: no lock, no atomic, no allocation. Each block is
// written by one thread only; a reader may see a count one exit old, never a torn one (aligned 8-byte stores).
//
// Bounded: ADDRESS_ENTRIES distinct (address, direction) pairs per vCPU get an entry of their own, in the order
// they first appear; exits at any other address are added to one "other" count per kind (port, MMIO).
//
// File layout (little-endian), LAYOUT_VERSION 1:
//   header, HEADER_BYTES: u32 words MAGIC, version, header bytes, vCPU count, summary bytes, table bytes,
//     reason slots, address entries, pid; the rest is zero.
//   then one summary of SUMMARY_BYTES per vCPU, in vCPU order (all of them together: a reader takes them in
//   one read):
//     i32 [0] the vCPU thread's id (0 until it starts), i32 [1] entries in use (stored after the entry itself)
//     f64 at 32: exits at ports past the table, f64 at 40: exits at MMIO addresses past the table
//     f64 at 64: REASON_SLOTS counts by KVM exit reason (KVM_EXIT_*; reasons past the last slot count there)
//   then one address table of TABLE_BYTES per vCPU: ADDRESS_ENTRIES pairs {key, count}, filled in order;
//     key = address * 4 + ACCESS + 1 (0: unused)
import { viewOf } from "../kvm/libc.js";

export const LIVE_MAGIC = 0x4c544d56; // "VMTL"
export const LAYOUT_VERSION = 1;
export const HEADER_BYTES = 64;
export const REASON_SLOTS = 64;
export const ADDRESS_ENTRIES = 1024;
const REASONS_AT = 64;
export const SUMMARY_BYTES = REASONS_AT + REASON_SLOTS * 8;
export const TABLE_BYTES = ADDRESS_ENTRIES * 16;
/** Byte offsets inside a vCPU's summary. */
export const SUMMARY = {
  TID_WORD: 0,
  USED_WORD: 1,
  OTHER_PIO: 32,
  OTHER_MMIO: 40,
  REASONS: REASONS_AT,
} as const;
/** Words of the header (u32 index). */
export const HEADER = {
  MAGIC: 0,
  VERSION: 1,
  HEADER_BYTES: 2,
  VCPUS: 3,
  SUMMARY_BYTES: 4,
  TABLE_BYTES: 5,
  REASON_SLOTS: 6,
  ADDRESS_ENTRIES: 7,
  PID: 8,
} as const;

/** What an address entry is about (the low 2 bits of its key, minus one): the same values as exit-stats.ts. */
export const LIVE_ACCESS = { PIO_IN: 0, PIO_OUT: 1, MMIO_READ: 2, MMIO_WRITE: 3 } as const;

/** The file's size for `vcpus` vCPUs. */
export function countersFileBytes(vcpus: number): number {
  return HEADER_BYTES + vcpus * (SUMMARY_BYTES + TABLE_BYTES);
}

/** Where vCPU `index`'s summary and table are in a file of `vcpus` vCPUs. */
export function blockOffsets(vcpus: number, index: number): { summary: number; table: number } {
  return {
    summary: HEADER_BYTES + index * SUMMARY_BYTES,
    table: HEADER_BYTES + vcpus * SUMMARY_BYTES + index * TABLE_BYTES,
  };
}

/** Where one vCPU's counters are: the whole mapping (address and size) and its parts' offsets in it. */
export interface LiveCountersDescriptor {
  addr: bigint;
  size: number;
  summary: number;
  table: number;
}

const INDEX_BITS = 11; // 2048 slots: never more than half full
const INDEX_MASK = (1 << INDEX_BITS) - 1;

/** One vCPU thread's writer. Without a descriptor it counts into memory of its own (nobody reads it). */
export class LiveExitCounters {
  private readonly words: Int32Array;
  private readonly reasons: Float64Array;
  private readonly entries: Float64Array;
  private readonly other: Float64Array;
  /** slot -> entry index + 1 (0: empty); the thread's own memory, never shared. */
  private readonly index = new Int32Array(1 << INDEX_BITS);
  private used = 0;
  /** The last key counted, and where its count is in `entries`. */
  private lastKey = 0;
  private lastCount = 0;

  constructor(desc?: LiveCountersDescriptor) {
    const buffer = desc ? viewOf(desc.addr, desc.size) : new ArrayBuffer(SUMMARY_BYTES + TABLE_BYTES);
    const at = desc ? desc.summary : 0;
    this.words = new Int32Array(buffer, at, 8);
    this.other = new Float64Array(buffer, at + SUMMARY.OTHER_PIO, 2);
    this.reasons = new Float64Array(buffer, at + SUMMARY.REASONS, REASON_SLOTS);
    this.entries = new Float64Array(buffer, desc ? desc.table : SUMMARY_BYTES, 2 * ADDRESS_ENTRIES);
  }

  /** The vCPU thread's id, for readers that match threads to vCPUs (tracepoints per thread). */
  setThread(tid: number): void {
    Atomics.store(this.words, SUMMARY.TID_WORD, tid);
  }

  /** One exit: its reason and, for a port or MMIO exit, the address and the LIVE_ACCESS kind (else -1). */
  add(reason: number, address: number, access: number): void {
    this.reasons[reason < REASON_SLOTS ? reason : REASON_SLOTS - 1]++;
    if (address < 0) return;
    const key = address * 4 + access + 1;
    // Most exits in a row are at the same port or address: their entry is found without hashing.
    if (key === this.lastKey) {
      this.entries[this.lastCount]++;
      return;
    }
    let h = (Math.imul(key | 0, 0x9e3779b1) ^ ((key / 0x1_0000_0000) | 0)) >>> (32 - INDEX_BITS);
    for (;;) {
      const e = this.index[h];
      if (e === 0) break;
      if (this.entries[2 * e - 2] === key) {
        this.entries[2 * e - 1]++;
        this.lastKey = key;
        this.lastCount = 2 * e - 1;
        return;
      }
      h = (h + 1) & INDEX_MASK;
    }
    if (this.used === ADDRESS_ENTRIES) {
      this.other[access >= LIVE_ACCESS.MMIO_READ ? 1 : 0]++;
      return;
    }
    const e = this.used++;
    this.entries[2 * e] = key;
    this.entries[2 * e + 1] = 1;
    this.index[h] = e + 1;
    this.lastKey = key;
    this.lastCount = 2 * e + 1;
    // After the entry: a reader that sees the count of entries in use sees their keys.
    Atomics.store(this.words, SUMMARY.USED_WORD, this.used);
  }
}
