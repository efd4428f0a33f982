// A thread's output: guest bytes for standard output and diagnostic lines (trace, notes, fault dumps) for standard
// error, written with fs.writeSync so nothing waits on the event loop and order is kept. Guest bytes are
// collected per burst of exits and flushed on a newline, when the buffer fills, before any diagnostic line, and
// whenever the thread is asked to (a partial line, such as a prompt, is flushed within a bounded time: the I/O
// worker checks its age, the main thread asks a vCPU thread to flush through its control block). 200,000
// one-byte console writes then cost a few hundred write() calls instead of 200,000; a large chunk is written
// straight from the caller's bytes, with no copy.
//
// Errors: standard output closed by its reader (EPIPE) or failing (ENOSPC, EIO...) ends the run: the failure is
// kept, reported once through `onFailure`, and every later guest byte is dropped (the run is ending). A full
// non-blocking pipe (EAGAIN) is waited for with poll(), not spun on. Errors writing standard error are
// ignored: there is nowhere left to report them, and they must not change how the run ends.
import { writeSync } from "node:fs";
import * as libc from "../kvm/libc.js";
import type { RunEnd } from "./run-end.js";

const CAPACITY = 64 * 1024;
const POLLOUT = 4;

export interface OutputOptions {
  outFd?: number;
  errFd?: number;
  /** Called once when writing the guest's output failed (the failure is also kept in `failure`). */
  onFailure?: (end: RunEnd) => void;
  /** A shared word set to 1 while guest bytes wait in the buffer, 0 once flushed (the main thread reads it). */
  pending?: { words: Int32Array; index: number };
}

export class Output {
  private readonly buf = new Uint8Array(CAPACITY);
  private len = 0;
  /** When the oldest buffered byte arrived (performance.now()), valid while `buffered` > 0. */
  private since = 0;
  private readonly encoder = new TextEncoder();
  private readonly outFd: number;
  private readonly errFd: number;
  private readonly pollFd = new Uint8Array(8);
  /** Why the guest's output could not be written, once it could not. */
  failure: RunEnd | undefined;

  constructor(private readonly opts: OutputOptions = {}) {
    this.outFd = opts.outFd ?? 1;
    this.errFd = opts.errFd ?? 2;
  }

  /** Bytes of guest output waiting in the buffer. */
  get buffered(): number {
    return this.len;
  }

  /** How long the oldest buffered byte has waited, in milliseconds (0 when nothing waits). */
  age(now = performance.now()): number {
    return this.len === 0 ? 0 : now - this.since;
  }

  /** Guest bytes for standard output (the ByteSink of the consoles and the UART; `bytes` is not kept). */
  readonly write = (bytes: Uint8Array): void => {
    if (this.failure) return;
    const n = bytes.length;
    if (n === 1) {
      // The debug console's one-byte exits: the hot path.
      if (this.len === CAPACITY) this.flush();
      if (this.len === 0) this.started();
      const b = bytes[0];
      this.buf[this.len++] = b;
      if (b === 0x0a) this.flush();
      return;
    }
    if (n === 0) return;
    if (n >= CAPACITY) {
      this.flush();
      this.writeAll(this.outFd, bytes, true);
      return;
    }
    let off = 0;
    while (off < n) {
      if (this.len === CAPACITY) this.flush();
      if (this.len === 0) this.started();
      const take = Math.min(n - off, CAPACITY - this.len);
      this.buf.set(take === n ? bytes : bytes.subarray(off, off + take), this.len);
      this.len += take;
      off += take;
    }
    if (bytes.lastIndexOf(0x0a) >= 0) this.flush();
  };

  flush(): void {
    if (this.len === 0) return;
    const len = this.len;
    this.len = 0;
    if (this.opts.pending) Atomics.store(this.opts.pending.words, this.opts.pending.index, 0);
    if (!this.failure) this.writeAll(this.outFd, this.buf.subarray(0, len), true);
  }

  /** A diagnostic line for standard error, after the guest's output so far. */
  line(text: string): void {
    this.flush();
    this.writeAll(this.errFd, this.encoder.encode(text.endsWith("\n") ? text : text + "\n"), false);
  }

  private started(): void {
    this.since = performance.now();
    const p = this.opts.pending;
    if (p) {
      Atomics.store(p.words, p.index, 1);
      // The main thread's OutputFlusher sleeps on this word until output waits (no waiter: no system call).
      Atomics.notify(p.words, p.index);
    }
  }

  /** Write all of `bytes` to `fd`; for standard output, a failure ends the run (see the top of this file). */
  private writeAll(fd: number, bytes: Uint8Array, guestOutput: boolean): void {
    let off = 0;
    while (off < bytes.length) {
      try {
        off += writeSync(fd, bytes, off, bytes.length - off);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === "EAGAIN") {
          this.waitWritable(fd);
          continue;
        }
        if (code === "EINTR") continue;
        if (guestOutput) this.fail(code ?? "", e as Error);
        return;
      }
    }
  }

  private waitWritable(fd: number): void {
    const v = new DataView(this.pollFd.buffer);
    v.setInt32(0, fd, true);
    v.setInt16(4, POLLOUT, true);
    v.setInt16(6, 0, true);
    libc.poll(this.pollFd, 1, 1000);
  }

  private fail(code: string, e: Error): void {
    if (this.failure) return;
    this.failure =
      code === "EPIPE"
        ? { kind: "output-closed", reason: "standard output was closed by its reader (EPIPE)" }
        : {
            kind: "output-failed",
            reason: `cannot write the guest's output to standard output: ${code || e.message}`,
          };
    this.opts.onFailure?.(this.failure);
  }
}
