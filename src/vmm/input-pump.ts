// Standard input → the guest: the main thread reads it and pushes the bytes into a ring shared with the thread
// that owns the console device, then tells that thread (machine.ts: the I/O worker's doorbell, which wakes no
// vCPU: the device raises its interrupt and a halted guest wakes; or, when the one vCPU thread owns COM1, a
// request and a kick). Bytes the ring cannot take wait here with standard input paused: nothing is lost, and
// what vmtool holds is bounded by one chunk of Node's stream.
//
// On a terminal, input is raw by default (each key reaches the guest as typed, Ctrl-C included, with no local
// echo): the guest's serial console behaves like a real one. The escape key leaves, as QEMU's does: Ctrl-A x
// ends the run, Ctrl-A Ctrl-A sends one Ctrl-A, Ctrl-A h prints this help; any other key after Ctrl-A is
// dropped. The terminal's mode is always restored: at the end of the run, and at the process's exit whatever
// ends it.
import * as libc from "../kvm/libc.js";
import type { SharedByteQueue } from "../devices/byte-queue.js";

export const ESCAPE_KEY = 0x01; // Ctrl-A
export const ESCAPE_HELP =
  "vmtool: Ctrl-A x  end the run    Ctrl-A Ctrl-A  send Ctrl-A to the guest    Ctrl-A h  this help";
const RETRY_MS = 5;

export interface InputPumpOptions {
  /** The ring the console device's thread reads. */
  queue: SharedByteQueue;
  /** Tell the console device's thread that bytes wait in the ring. */
  notify: () => void;
  /** Put a terminal on standard input in raw mode (ignored when standard input is not a terminal). */
  raw: boolean;
  /** The person typed Ctrl-A x (raw mode only). */
  onEscape: () => void;
  /** Bytes were handed to the guest. */
  onInput?: () => void;
  /** Where the escape help goes (default: standard error). */
  say?: (line: string) => void;
}

export class InputPump {
  private held: Buffer | undefined;
  private retry: NodeJS.Timeout | undefined;
  private attached = false;
  private closed = false;
  private rawSet = false;
  private afterEscape = false;
  private readonly restore = () => this.restoreTerminal();

  constructor(private readonly opts: InputPumpOptions) {}

  /** Whether standard input is a terminal that this pump puts in raw mode. */
  static wantsRaw(raw: boolean): boolean {
    // Asked of fd 0 itself: touching process.stdin would set up a stream (and load its modules), milliseconds
    // of a short run for nothing.
    return raw && libc.isatty(0) === 1;
  }

  /** Put the terminal in raw mode now (before the guest may print a prompt), if asked and possible. */
  setUpTerminal(): void {
    if (this.rawSet || !InputPump.wantsRaw(this.opts.raw)) return;
    process.stdin.setRawMode(true);
    this.rawSet = true;
    process.on("exit", this.restore);
  }

  /** Start reading standard input. */
  attach(): void {
    if (this.attached || this.closed) return;
    this.attached = true;
    this.setUpTerminal();
    process.stdin.on("data", this.onData);
    process.stdin.on("error", () => {}); // a closed or broken standard input just means no more input
  }

  /** Stop reading, restore the terminal. */
  close(): void {
    this.closed = true;
    if (this.retry) clearTimeout(this.retry);
    if (this.attached) {
      process.stdin.off("data", this.onData);
      process.stdin.pause();
    }
    this.restoreTerminal();
  }

  private restoreTerminal(): void {
    if (!this.rawSet) return;
    this.rawSet = false;
    process.off("exit", this.restore);
    try {
      process.stdin.setRawMode(false);
    } catch {
      // The terminal is gone (hung up): nothing to restore.
    }
  }

  private readonly onData = (chunk: Buffer): void => {
    const bytes = this.rawSet ? this.filterEscapes(chunk) : chunk;
    if (bytes.length === 0) return;
    this.held = this.held ? Buffer.concat([this.held, bytes]) : bytes;
    process.stdin.pause();
    this.feed();
  };

  /** Raw mode: take the escape sequences out of `chunk`, acting on them. */
  private filterEscapes(chunk: Buffer): Buffer {
    if (!this.afterEscape && !chunk.includes(ESCAPE_KEY)) return chunk;
    const out: number[] = [];
    for (const b of chunk) {
      if (this.afterEscape) {
        this.afterEscape = false;
        if (b === 0x78 || b === 0x58) {
          this.opts.onEscape();
          return Buffer.from(out);
        }
        if (b === ESCAPE_KEY) out.push(ESCAPE_KEY);
        else if (b === 0x68 || b === 0x48) (this.opts.say ?? sayOnStderr)(ESCAPE_HELP);
      } else if (b === ESCAPE_KEY) this.afterEscape = true;
      else out.push(b);
    }
    return Buffer.from(out);
  }

  private feed(): void {
    this.retry = undefined;
    if (!this.held || this.closed) return;
    const n = this.opts.queue.push(this.held);
    this.held = n < this.held.length ? this.held.subarray(n) : undefined;
    if (n > 0) {
      this.opts.notify();
      this.opts.onInput?.();
    }
    if (this.held) this.retry = setTimeout(() => this.feed(), RETRY_MS);
    else process.stdin.resume();
  }
}

function sayOnStderr(line: string): void {
  try {
    process.stderr.write(line + "\r\n");
  } catch {
    // Standard error is gone: the help is not essential.
  }
}
