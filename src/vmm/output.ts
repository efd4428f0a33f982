// The vCPU thread's output: guest bytes for standard output and trace lines for standard error, written with
// fs.writeSync so nothing waits on the event loop and order is kept. Guest bytes are collected per burst of
// exits and flushed on a newline, when the buffer fills, before any trace/diagnostic line, and whenever the
// run loop leaves the fast path (a kick, a halt, the end): 200,000 one-byte console writes then cost a few
// hundred write() calls instead of 200,000.
import { writeSync } from "node:fs";

const CAPACITY = 64 * 1024;

export class Output {
  private readonly buf = new Uint8Array(CAPACITY);
  private len = 0;
  private readonly encoder = new TextEncoder();

  constructor(
    private readonly outFd = 1,
    private readonly errFd = 2,
  ) {}

  /** Guest bytes for standard output (the ByteSink of the console and the UART). */
  readonly write = (bytes: Uint8Array): void => {
    let newline = false;
    for (let i = 0; i < bytes.length; i++) {
      if (this.len === CAPACITY) this.flush();
      const b = bytes[i];
      this.buf[this.len++] = b;
      if (b === 0x0a) newline = true;
    }
    if (newline) this.flush();
  };

  flush(): void {
    let off = 0;
    while (off < this.len) {
      try {
        off += writeSync(this.outFd, this.buf, off, this.len - off);
      } catch (e) {
        // A non-blocking pipe that is full: try again; a closed one (EPIPE): drop the output, keep running.
        if ((e as NodeJS.ErrnoException).code === "EAGAIN") continue;
        break;
      }
    }
    this.len = 0;
  }

  /** A diagnostic line (trace, notes, fault dump) for standard error, after the guest's output so far. */
  line(text: string): void {
    this.flush();
    const bytes = this.encoder.encode(text.endsWith("\n") ? text : text + "\n");
    let off = 0;
    while (off < bytes.length) {
      try {
        off += writeSync(this.errFd, bytes, off, bytes.length - off);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "EAGAIN") continue;
        break;
      }
    }
  }
}
