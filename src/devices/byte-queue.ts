// Bounded byte queues: the host side of a device's input (what was typed but has not entered the device yet).
//
// ByteQueue is a plain ring for a device and its feeder in the same thread. SharedByteQueue is the same ring
// over a SharedArrayBuffer for one producer thread and one consumer thread (the main thread reads standard
// input, the vCPU worker that owns the UART consumes): head and tail are published with Atomics, so neither
// side ever locks or waits. Both only ever refuse bytes when full, and say how many they took, so the
// producer can hold the rest back (pause its input) and nothing is lost.

/** The interface a device pulls its input from. */
export interface InputQueue {
  /** Bytes waiting. */
  readonly length: number;
  /** Appends as many of `bytes` as fit; returns how many were taken. */
  push(bytes: Uint8Array): number;
  /** Removes and returns the oldest byte, or -1 when empty. */
  shift(): number;
  /** Drops everything waiting. */
  clear(): void;
}

/** A ring of `capacity` bytes for use within one thread. */
export class ByteQueue implements InputQueue {
  private readonly buf: Uint8Array;
  private head = 0; // next byte to take
  private count = 0;

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 0) throw new RangeError(`bad queue capacity ${capacity}`);
    this.buf = new Uint8Array(Math.max(capacity, 1));
  }

  get length(): number {
    return this.count;
  }

  push(bytes: Uint8Array): number {
    const n = Math.min(bytes.length, this.capacity - this.count);
    for (let i = 0; i < n; i++) this.buf[(this.head + this.count + i) % this.buf.length] = bytes[i];
    this.count += n;
    return n;
  }

  shift(): number {
    if (this.count === 0) return -1;
    const b = this.buf[this.head];
    this.head = (this.head + 1) % this.buf.length;
    this.count--;
    return b;
  }

  clear(): void {
    this.head = 0;
    this.count = 0;
  }
}

// Layout of a SharedByteQueue's buffer: two Int32 counters (total bytes ever written / read, wrapping at 2^32),
// then the data ring. Free-running counters tell full from empty without a spare slot.
const HEADER = 8;

/**
 * A single-producer single-consumer byte ring in shared memory. Create it on one side with `create(capacity)`,
 * send `.buffer` to the other thread (postMessage / workerData) and wrap it there with `new SharedByteQueue(buf)`.
 * The capacity is rounded up to a power of two. `push` belongs to the producer, `shift` and `clear` to the consumer.
 */
export class SharedByteQueue implements InputQueue {
  private readonly counters: Int32Array;
  private readonly data: Uint8Array;
  readonly capacity: number;

  static create(capacity: number): SharedByteQueue {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 1 << 30)
      throw new RangeError(`bad queue capacity ${capacity}`);
    // A power of two, so that the free-running 32-bit counters stay continuous modulo the capacity on wrap.
    let size = 1;
    while (size < capacity) size *= 2;
    return new SharedByteQueue(new SharedArrayBuffer(HEADER + size));
  }

  constructor(readonly buffer: SharedArrayBuffer) {
    if (buffer.byteLength <= HEADER) throw new RangeError("shared queue buffer too small");
    this.counters = new Int32Array(buffer, 0, 2);
    this.data = new Uint8Array(buffer, HEADER);
    this.capacity = this.data.length;
    if ((this.capacity & (this.capacity - 1)) !== 0)
      throw new RangeError("shared queue size is not a power of two");
  }

  get length(): number {
    return (Atomics.load(this.counters, 0) - Atomics.load(this.counters, 1)) >>> 0;
  }

  push(bytes: Uint8Array): number {
    const written = Atomics.load(this.counters, 0);
    const read = Atomics.load(this.counters, 1);
    const n = Math.min(bytes.length, this.capacity - ((written - read) >>> 0));
    for (let i = 0; i < n; i++) this.data[((written >>> 0) + i) % this.capacity] = bytes[i];
    Atomics.store(this.counters, 0, (written + n) | 0); // publish after the bytes are in place
    return n;
  }

  shift(): number {
    const read = Atomics.load(this.counters, 1);
    if (Atomics.load(this.counters, 0) === read) return -1;
    const b = this.data[(read >>> 0) % this.capacity];
    Atomics.store(this.counters, 1, (read + 1) | 0);
    return b;
  }

  clear(): void {
    Atomics.store(this.counters, 1, Atomics.load(this.counters, 0));
  }
}
