// Guest physical memory: a set of RAM regions, each a host mapping seen through Uint8Arrays with no copy.
// Every access is bounds-checked against the regions: a guest-supplied address or length that falls outside
// RAM (or wraps around) throws GuestMemoryError instead of touching host memory. This is the only way the
// VMM, loaders and devices reach guest RAM.
//
// A host-mapped region is viewed in windows of GUEST_RAM_WINDOW bytes, each created on first access, and not
// as one view of the whole mapping: V8 counts a view's length as external memory, and a single 64 MiB view
// reaches its limit and makes it collect garbage at once (two scavenges and a mark-compact, 5-10 ms on every
// run; docs/run.md, "Start-up"). A short run touches a few windows only.
import * as libc from "../kvm/libc.js";
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

/**
 * Bytes per window of a host-mapped region (windows start at the region's start). 1 MiB: a short run
 * touches 2 (boot data and page tables below 1 MiB, the image at 1 MiB), each costs 10-20 us to create, and an access that
 * crosses a boundary (rare: devices use aligned structures) gets a view of its own.
 */
export const GUEST_RAM_WINDOW = 1 << 20;

/** What a worker thread needs to rebuild the same GuestMemory: addresses only, no buffers. */
export interface RegionDescriptor {
  gpa: number;
  size: number;
  /** Host virtual address of the mapping (from mmap), or undefined for a test region over a plain buffer. */
  hostAddr?: bigint;
}

/** A region as given to the constructor: a host mapping (gpa, size, hostAddr) or a plain buffer (tests). */
export type RegionSource =
  { gpa: number; size: number; hostAddr: bigint } | { gpa: number; bytes: Uint8Array; hostAddr?: bigint };

export interface Region {
  readonly gpa: number;
  readonly size: number;
  readonly hostAddr?: bigint;
}

/** One contiguous view of part of a region. */
interface Window {
  /** Offset of the window in its region. */
  readonly start: number;
  readonly bytes: Uint8Array;
  readonly view: DataView;
  /** A window of the region's own (false: a one-off view of a range that crosses windows). */
  readonly kept: boolean;
}

function windowOver(start: number, bytes: Uint8Array, kept: boolean): Window {
  return { start, bytes, view: new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), kept };
}

class RegionViews implements Region {
  /** Windows by index; a region over a plain buffer has exactly one, the buffer itself. */
  private readonly windows: (Window | undefined)[];
  private readonly windowSize: number;

  constructor(
    readonly gpa: number,
    readonly size: number,
    readonly hostAddr: bigint | undefined,
    bytes: Uint8Array | undefined,
  ) {
    if (bytes) {
      this.windowSize = Math.max(size, 1);
      this.windows = [windowOver(0, bytes, true)];
    } else {
      this.windowSize = GUEST_RAM_WINDOW;
      this.windows = new Array<Window | undefined>(Math.ceil(size / GUEST_RAM_WINDOW)).fill(undefined);
    }
  }

  /**
   * A window holding all of [off, off+len) (offsets in the region, already checked against its size): the
   * window of `off` when the range ends inside it, else a view of exactly the range, not kept.
   */
  windowFor(off: number, len: number): Window {
    const i = Math.floor(off / this.windowSize);
    const w = this.windows[i] ?? this.open(i);
    if (off - w.start + len <= w.bytes.length) return w;
    // Crosses into the next window(s): only a host-mapped region has more than one.
    return windowOver(off, new Uint8Array(viewOf(this.mapping() + BigInt(off), len)), false);
  }

  /** The host address of the region's mapping (windows exist only over mapped regions). */
  private mapping(): bigint {
    if (this.hostAddr === undefined) throw new Error("a window over a region that is not host-mapped");
    return this.hostAddr;
  }

  private open(i: number): Window {
    const start = i * this.windowSize;
    const len = Math.min(this.windowSize, this.size - start);
    const w = windowOver(start, new Uint8Array(viewOf(this.mapping() + BigInt(start), len)), true);
    this.windows[i] = w;
    return w;
  }
}

export class GuestMemory {
  private readonly views: readonly RegionViews[];

  constructor(regions: readonly RegionSource[]) {
    const built = regions.map((r) => {
      if ("bytes" in r) return new RegionViews(r.gpa, r.bytes.length, r.hostAddr, r.bytes);
      if (!Number.isSafeInteger(r.size) || r.size <= 0)
        throw new Error(`bad guest memory region size ${r.size}`);
      return new RegionViews(r.gpa, r.size, r.hostAddr, undefined);
    });
    const sorted = built.sort((a, b) => a.gpa - b.gpa);
    for (let i = 1; i < sorted.length; i++) {
      if (sorted[i - 1].gpa + sorted[i - 1].size > sorted[i].gpa)
        throw new Error("guest memory regions overlap");
    }
    this.views = sorted;
  }

  /** Rebuild from descriptors in another thread of the same process (views over the same host mappings). */
  static fromDescriptors(descs: readonly RegionDescriptor[]): GuestMemory {
    return new GuestMemory(
      descs.map((d) => {
        if (d.hostAddr === undefined) throw new Error("region descriptor without a host address");
        return { gpa: d.gpa, size: d.size, hostAddr: d.hostAddr };
      }),
    );
  }

  /** The regions, sorted by guest address. */
  get regions(): readonly Region[] {
    return this.views;
  }

  descriptors(): RegionDescriptor[] {
    return this.views.map((r) => ({ gpa: r.gpa, size: r.size, hostAddr: r.hostAddr }));
  }

  /** Total bytes of RAM. */
  get size(): number {
    return this.views.reduce((s, r) => s + r.size, 0);
  }

  /** The region holding all of [gpa, gpa+len), or undefined. Zero-length ranges must still start inside RAM. */
  private find(gpa: number, len: number): RegionViews | undefined {
    if (!Number.isSafeInteger(gpa) || !Number.isSafeInteger(len) || gpa < 0 || len < 0) return undefined;
    for (const r of this.views) {
      const o = gpa - r.gpa;
      if (o >= 0 && o + len <= r.size && (o < r.size || len > 0)) return r;
    }
    return undefined;
  }

  /** Offset of the last at()'s range in the window it returned (a field: no pair allocated per access). */
  private offset = 0;
  /** The window at()'s fast path checks first, and its guest-physical range [lastLo, lastHi). */
  private last: Window = windowOver(0, new Uint8Array(0), false);
  private lastLo = 0;
  private lastHi = 0;

  /** The window holding [gpa, gpa+len), gpa's offset in it left in `offset`; GuestMemoryError outside RAM. */
  private at(gpa: number, len: number): Window {
    // Most accesses fall in the window used last (a virtqueue's rings, one buffer): checked against it alone.
    // An integer gpa inside it and an integer len >= 0 ending inside it are safe integers, so the checks are
    // as strict as find()'s.
    const hit = this.last;
    if (
      gpa >= this.lastLo &&
      gpa < this.lastHi &&
      gpa + len <= this.lastHi &&
      len >= 0 &&
      Number.isInteger(gpa) &&
      Number.isInteger(len)
    ) {
      this.offset = gpa - this.lastLo;
      return hit;
    }
    const r = this.find(gpa, len);
    if (r === undefined) throw new GuestMemoryError(gpa, len);
    const o = gpa - r.gpa;
    const w = r.windowFor(o, len);
    this.offset = o - w.start;
    if (w.kept) {
      this.last = w;
      this.lastLo = r.gpa + w.start;
      this.lastHi = this.lastLo + w.bytes.length;
    }
    return w;
  }

  contains(gpa: number, len: number): boolean {
    return this.find(gpa, len) !== undefined;
  }

  /** A live view (no copy) of [gpa, gpa+len); throws GuestMemoryError if any byte is outside one region. */
  slice(gpa: number, len: number): Uint8Array {
    const w = this.at(gpa, len);
    return w.bytes.subarray(this.offset, this.offset + len);
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

  readU8(gpa: number): number {
    const v = this.at(gpa, 1).view;
    return v.getUint8(this.offset);
  }
  readU16(gpa: number): number {
    const v = this.at(gpa, 2).view;
    return v.getUint16(this.offset, true);
  }
  readU32(gpa: number): number {
    const v = this.at(gpa, 4).view;
    return v.getUint32(this.offset, true);
  }
  readU64(gpa: number): bigint {
    const v = this.at(gpa, 8).view;
    return v.getBigUint64(this.offset, true);
  }
  writeU8(gpa: number, value: number): void {
    const v = this.at(gpa, 1).view;
    v.setUint8(this.offset, value);
  }
  writeU16(gpa: number, value: number): void {
    const v = this.at(gpa, 2).view;
    v.setUint16(this.offset, value, true);
  }
  writeU32(gpa: number, value: number): void {
    const v = this.at(gpa, 4).view;
    v.setUint32(this.offset, value >>> 0, true);
  }
  writeU64(gpa: number, value: bigint): void {
    const v = this.at(gpa, 8).view;
    v.setBigUint64(this.offset, BigInt.asUintN(64, value), true);
  }
}

/** 2 MiB: the x86 huge page, and the alignment of guest RAM's host mapping. */
export const HUGE_PAGE = 2 << 20;

/**
 * Map `size` bytes of guest RAM (anonymous memory, or the memfd `fd` shared) at a 2 MiB-aligned host address,
 * advised MADV_HUGEPAGE, so that the host kernel can back it with transparent huge pages and KVM can map the
 * guest's memory with 2 MiB pages (one nested page fault per 2 MiB instead of 512). Nothing in it is touched:
 * its pages stay unpopulated, reading as zero, until the guest or a loader writes them. MAP_FAILED when the
 * mapping cannot be made.
 */
export function mapGuestRam(size: number, fd?: number): bigint {
  // A reservation one huge page larger, then the RAM mapped over its first aligned address.
  const span = size + HUGE_PAGE;
  const reserve = libc.mmap(
    null,
    span,
    libc.PROT_NONE,
    libc.MAP_PRIVATE | libc.MAP_ANONYMOUS | libc.MAP_NORESERVE,
    -1,
    0,
  );
  if (reserve === libc.MAP_FAILED) return libc.MAP_FAILED;
  const mask = BigInt(HUGE_PAGE - 1);
  const addr = (reserve + mask) & ~mask;
  const flags =
    fd === undefined
      ? libc.MAP_PRIVATE | libc.MAP_ANONYMOUS | libc.MAP_NORESERVE
      : libc.MAP_SHARED | libc.MAP_NORESERVE;
  const got = libc.mmapAt(addr, size, libc.PROT_READ | libc.PROT_WRITE, flags | libc.MAP_FIXED, fd ?? -1, 0);
  if (got !== addr) {
    libc.munmap(reserve, span);
    return libc.MAP_FAILED;
  }
  const head = Number(addr - reserve);
  if (head > 0) libc.munmap(reserve, head);
  const tail = span - head - size;
  if (tail > 0) libc.munmap(addr + BigInt(size), tail);
  // Advice only: where transparent huge pages are off (or not for shared memory), RAM works as before.
  libc.madvise(addr, size, libc.MADV_HUGEPAGE);
  return addr;
}
