// virtio-console (id 3) with one port and no multiport: queue 0 receives (host → guest), queue 1 transmits
// (guest → host). Output goes to a ByteSink, streamed straight from the guest's buffers; input is pushed in
// by the run loop (standard input) and waits in a fixed-size ring until the driver offers receive buffers.
// VIRTIO_CONSOLE_F_EMERG_WRITE is offered: a byte written to emerg_wr (config offset 8) is output at once,
// before any queue is set up.
import type { ByteSink } from "../types.js";
import { CONSOLE, DEVICE_ID, bit } from "./constants.js";
import type { VirtioContext, VirtioDevice } from "./device.js";
import type { SplitQueue } from "./virtqueue.js";

const RECEIVEQ = 0;
const TRANSMITQ = 1;
/** Input kept while the guest has no receive buffer; more is dropped (and traced), never grows unbounded. */
export const CONSOLE_INPUT_LIMIT = 64 * 1024;
/**
 * Most bytes of one transmit chain passed to the output. Linux sends at most a page per chain from its
 * console (hvc), 32 KiB from a port write() and one pipe's worth (1 MiB at most without CAP_SYS_RESOURCE)
 * from splice(); the rest of a longer chain is dropped, counted in droppedOutput and traced. The chain is
 * completed either way: a transmit request has no status to fail with.
 */
export const CONSOLE_TRANSMIT_LIMIT = 1 << 20;
/** Config layout: cols u16, rows u16, max_nr_ports u32, emerg_wr u32. */
const EMERG_WR = 8;

export class VirtioConsole implements VirtioDevice {
  readonly type = "virtio-console";
  readonly deviceId = DEVICE_ID.CONSOLE;
  readonly features = bit(CONSOLE.F_EMERG_WRITE);
  readonly queueMaxSizes = [64, 64];
  readonly config = new Uint8Array(12);
  private ctx?: VirtioContext;
  /** Input waiting for the guest: a ring of `inputBytes` bytes from `inputStart`. */
  private readonly input = new Uint8Array(CONSOLE_INPUT_LIMIT);
  private inputStart = 0;
  private inputBytes = 0;
  /** Input bytes dropped because the guest did not read them in time. */
  droppedInput = 0;
  /** Transmitted bytes dropped because their chain was longer than CONSOLE_TRANSMIT_LIMIT. */
  droppedOutput = 0;
  /** Bytes written to the output. */
  bytesOut = 0;
  private readonly outputView: (view: Uint8Array) => void;

  constructor(private readonly output: ByteSink) {
    this.outputView = (view) => {
      this.bytesOut += view.length;
      output(view);
    };
  }

  counters(): Record<string, number> {
    return {
      "bytes out": this.bytesOut,
      "output bytes dropped (chain over 1 MiB)": this.droppedOutput,
      "input bytes dropped (buffer full)": this.droppedInput,
    };
  }

  writeConfig(offset: number, data: Uint8Array): void {
    if (offset === EMERG_WR) this.output(data.subarray(0, 1));
  }

  activate(ctx: VirtioContext): void {
    this.ctx = ctx;
  }

  reset(): void {
    this.ctx = undefined;
  }

  /** Bytes typed for the guest; delivered as soon as it has receive buffers. */
  push(bytes: Uint8Array): void {
    const room = CONSOLE_INPUT_LIMIT - this.inputBytes;
    if (bytes.length > room) {
      this.droppedInput += bytes.length - room;
      this.ctx?.trace(`console input buffer full: ${bytes.length - room} bytes dropped`);
      bytes = bytes.subarray(0, room);
    }
    if (bytes.length === 0) return;
    // Copy into the ring: up to its end, then from its start.
    const tail = (this.inputStart + this.inputBytes) % CONSOLE_INPUT_LIMIT;
    const first = Math.min(bytes.length, CONSOLE_INPUT_LIMIT - tail);
    this.input.set(bytes.subarray(0, first), tail);
    this.input.set(bytes.subarray(first), 0);
    this.inputBytes += bytes.length;
    const rx = this.ctx?.queues[RECEIVEQ];
    if (rx) this.ctx?.kick(rx);
  }

  /** Bytes waiting for the guest. */
  get pendingInput(): number {
    return this.inputBytes;
  }

  processQueue(q: SplitQueue): void {
    if (q.index === TRANSMITQ) this.transmit(q);
    else if (q.index === RECEIVEQ) this.receive(q);
  }

  private transmit(q: SplitQueue): void {
    const ctx = this.ctx;
    if (!ctx) return;
    q.serveAll(ctx.memory, (chain) => {
      const r = chain.reader;
      r.stream(CONSOLE_TRANSMIT_LIMIT, this.outputView);
      if (r.remaining > 0) {
        this.droppedOutput += r.remaining;
        ctx.trace(
          `transmit chain ${chain.head}: ${r.length} bytes, the ${r.remaining} past ${CONSOLE_TRANSMIT_LIMIT} dropped`,
        );
      }
      return 0;
    });
    ctx.notifyUsed(q);
  }

  private receive(q: SplitQueue): void {
    const ctx = this.ctx;
    if (!ctx) return;
    for (;;) {
      // Take a receive buffer only when there is something to put in it: a chain cannot be given back.
      while (this.inputBytes > 0 && q.pending() > 0) {
        const chain = q.take(ctx.memory);
        if (!chain) break;
        const w = chain.writer;
        let written = 0;
        // At most two pieces: the ring up to its end, then from its start.
        while (this.inputBytes > 0 && w.remaining > 0) {
          const end = Math.min(this.inputStart + this.inputBytes, CONSOLE_INPUT_LIMIT);
          const n = w.write(this.input.subarray(this.inputStart, end));
          written += n;
          this.inputBytes -= n;
          this.inputStart = (this.inputStart + n) % CONSOLE_INPUT_LIMIT;
        }
        q.pushUsed(ctx.memory, chain.head, written);
      }
      // Input left over: ask to be notified when the driver adds receive buffers (and look once more).
      if (this.inputBytes === 0 || !q.enableNotifications()) break;
    }
    ctx.notifyUsed(q);
  }
}
