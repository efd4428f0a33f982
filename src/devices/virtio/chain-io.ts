// Streaming through a descriptor chain's buffers: a ChainReader over its device-readable part and a
// ChainWriter over its device-writable part, each a cursor that hands the device live views of guest RAM
// (no copy) up to a byte limit the device chooses. Nothing here allocates in proportion to what the guest
// asks for: a chain's buffer list lives in storage of a fixed size per queue (one entry per descriptor-table
// entry at most), and bytes never leave guest RAM except through the device's own bounded buffers.
//
// The segments were checked against guest RAM when the chain was walked; every view still comes from
// GuestMemory's bounds-checked slice().
import { GUEST_RAM_WINDOW, type GuestMemory } from "../../memory/guest-memory.js";
import type { DescriptorChain } from "./virtqueue.js";

/**
 * Called with consecutive views of a chain's bytes. `at` is the number of bytes of the same call passed
 * before this view. A view is guest RAM itself: use it before returning, do not keep it.
 */
export type ViewVisitor = (view: Uint8Array, at: number) => void;

/**
 * Where one chain's buffers are kept while a device serves it. Each queue owns one, sized for the longest
 * chain its tables allow, and refills it for every chain it takes (SplitQueue.take).
 */
export class ChainBuffers {
  /** The head descriptor's index: what the used element names. */
  head = 0;
  readonly reader: ChainReader;
  readonly writer: ChainWriter;
  /** Segment addresses and lengths (for the cursors): the readable ones first, then the writable ones. */
  readonly gpas: Float64Array;
  readonly lens: Uint32Array;
  memory!: GuestMemory;

  constructor(readonly capacity: number) {
    this.gpas = new Float64Array(capacity);
    this.lens = new Uint32Array(capacity);
    this.reader = new ChainReader(this);
    this.writer = new ChainWriter(this);
  }

  /**
   * Walk all of `chain` (DescriptorChain.next does every check and throws VirtqueueError on the first bad
   * descriptor) and keep its non-empty buffers. Returns this, with the reader and writer at the start.
   */
  load(memory: GuestMemory, chain: DescriptorChain): this {
    this.memory = memory;
    this.head = chain.head;
    let count = 0;
    let firstWritable = -1;
    let readable = 0;
    let writable = 0;
    for (let d = chain.next(); d; d = chain.next()) {
      if (d.writable) {
        if (firstWritable < 0) firstWritable = count;
        writable += d.len;
      } else readable += d.len;
      if (d.len === 0) continue;
      // The walk is bounded by the table it reads, and capacity covers the largest table: a vmtool bug.
      if (count === this.capacity) throw new Error(`chain ${chain.head} has more buffers than ${count}`);
      this.gpas[count] = d.gpa;
      this.lens[count] = d.len;
      count++;
    }
    this.reader.reset(0, readable);
    this.writer.reset(firstWritable < 0 ? count : firstWritable, writable);
    return this;
  }
}

/** A cursor over consecutive segments of a ChainBuffers, `length` bytes from where it starts. */
abstract class ChainCursor {
  private seg = 0;
  private off = 0;
  /** Bytes this cursor covers. */
  length = 0;
  /** Bytes passed so far. */
  consumed = 0;

  constructor(protected readonly buffers: ChainBuffers) {}

  /** Start over at segment `from`, covering `length` bytes. */
  reset(from: number, length: number): void {
    this.seg = from;
    this.off = 0;
    this.length = length;
    this.consumed = 0;
  }

  /** Bytes not passed yet. */
  get remaining(): number {
    return this.length - this.consumed;
  }

  /** Move on by up to `n` bytes without looking at them; returns the bytes skipped. */
  skip(n: number): number {
    return this.visit(n, undefined);
  }

  /**
   * Call `fn` with views of the next bytes, up to `limit` of them, and move past them; returns how many
   * were visited. A view never crosses a segment or a GUEST_RAM_WINDOW boundary, so slicing it costs the
   * same as any small access to RAM.
   */
  protected visit(limit: number, fn: ViewVisitor | undefined): number {
    const b = this.buffers;
    const want = Math.min(limit, this.remaining);
    let done = 0;
    while (done < want) {
      const segLen = b.lens[this.seg];
      const gpa = b.gpas[this.seg] + this.off;
      let n = Math.min(segLen - this.off, want - done);
      if (fn) {
        const toWindowEnd = GUEST_RAM_WINDOW - (gpa % GUEST_RAM_WINDOW);
        if (n > toWindowEnd) n = toWindowEnd;
        fn(b.memory.slice(gpa, n), done);
      }
      done += n;
      this.off += n;
      if (this.off === segLen) {
        this.seg++;
        this.off = 0;
      }
    }
    this.consumed += done;
    return done;
  }

  /** Make `other` cover this cursor's bytes from `offset` (from its start) on; this one ends there. */
  protected splitInto(other: ChainCursor, offset: number): void {
    const cut = Math.min(Math.max(offset - this.consumed, 0), this.remaining);
    other.seg = this.seg;
    other.off = this.off;
    other.length = this.remaining;
    other.consumed = 0;
    other.skip(cut);
    other.length -= cut;
    other.consumed = 0;
    this.length = this.consumed + cut;
  }
}

/** The device-readable bytes of a chain, in order (virtio's "out" buffers: requests, data to transmit). */
export class ChainReader extends ChainCursor {
  /** Copy the next bytes into `into` (as many as fit and remain); returns how many. */
  read(into: Uint8Array): number {
    return this.visit(into.length, (view, at) => into.set(view, at));
  }

  /**
   * Pass views of the next bytes, `limit` at most, to `visit` (a ByteSink, a backend write); returns the
   * bytes passed.
   */
  stream(limit: number, visit: ViewVisitor): number {
    return this.visit(limit, visit);
  }
}

/** The device-writable bytes of a chain, in order (virtio's "in" buffers: replies, data for the guest). */
export class ChainWriter extends ChainCursor {
  private tail?: ChainWriter;

  /** Copy `data` (as much as fits) into the next bytes; returns how many were written. */
  write(data: Uint8Array): number {
    return this.visit(data.length, (view, at) => view.set(data.subarray(at, at + view.length)));
  }

  /**
   * Let `fill` write the next bytes, `limit` at most, through views of guest RAM (entropy, a backend read);
   * returns the bytes offered. `fill` must fill each whole view.
   */
  fill(limit: number, fill: ViewVisitor): number {
    return this.visit(limit, fill);
  }

  /**
   * Split at `offset` bytes from this writer's start: this one keeps the bytes before it, the returned one
   * (reused by the next split) covers the rest, as virtio-blk's data area and its status byte.
   */
  splitAt(offset: number): ChainWriter {
    this.tail ??= new ChainWriter(this.buffers);
    this.splitInto(this.tail, offset);
    return this.tail;
  }
}
