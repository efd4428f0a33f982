// virtio-console (id 3) with one port and no multiport: queue 0 receives (host → guest), queue 1 transmits
// (guest → host). Output goes to a ByteSink; input is pushed in by the run loop (standard input) and waits
// in a bounded buffer until the driver offers receive buffers. VIRTIO_CONSOLE_F_EMERG_WRITE is offered: a
// byte written to emerg_wr (config offset 8) is output at once, before any queue is set up.
import type { ByteSink } from "../types.js";
import { CONSOLE, DEVICE_ID, bit } from "./constants.js";
import type { VirtioContext, VirtioDevice } from "./device.js";
import { gather, scatter } from "./chain-io.js";
import type { SplitQueue } from "./virtqueue.js";

const RECEIVEQ = 0;
const TRANSMITQ = 1;
/** Input kept while the guest has no receive buffer; more is dropped (and traced), never grows unbounded. */
export const CONSOLE_INPUT_LIMIT = 64 * 1024;
/** Config layout: cols u16, rows u16, max_nr_ports u32, emerg_wr u32. */
const EMERG_WR = 8;

export class VirtioConsole implements VirtioDevice {
  readonly type = "virtio-console";
  readonly deviceId = DEVICE_ID.CONSOLE;
  readonly features = bit(CONSOLE.F_EMERG_WRITE);
  readonly queueMaxSizes = [64, 64];
  readonly config = new Uint8Array(12);
  private ctx?: VirtioContext;
  private input: Uint8Array[] = [];
  private inputBytes = 0;
  /** Input bytes dropped because the guest did not read them in time. */
  droppedInput = 0;

  constructor(private readonly output: ByteSink) {}

  writeConfig(offset: number, data: Uint8Array): void {
    if (offset === EMERG_WR) this.output(data.slice(0, 1));
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
      this.droppedInput += bytes.length - Math.max(room, 0);
      this.ctx?.trace(`console input buffer full: ${bytes.length - Math.max(room, 0)} bytes dropped`);
      bytes = bytes.subarray(0, Math.max(room, 0));
    }
    if (bytes.length === 0) return;
    this.input.push(bytes.slice());
    this.inputBytes += bytes.length;
    const rx = this.ctx?.queues[RECEIVEQ];
    if (rx) this.ctx!.kick(rx);
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
      if (chain.readableLength > 0) this.output(gather(ctx.memory, chain.readable, 0, chain.readableLength));
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
        const chain = q.pop(ctx.memory);
        if (!chain) break;
        let written = 0;
        while (this.input.length > 0 && written < chain.writableLength) {
          const first = this.input[0];
          const n = scatter(ctx.memory, chain.writable, written, first);
          written += n;
          this.inputBytes -= n;
          if (n === first.length) this.input.shift();
          else this.input[0] = first.subarray(n);
        }
        q.pushUsed(ctx.memory, chain.head, written);
      }
      // Input left over: ask to be notified when the driver adds receive buffers (and look once more).
      if (this.inputBytes === 0 || !q.enableNotifications()) break;
    }
    ctx.notifyUsed(q);
  }
}
