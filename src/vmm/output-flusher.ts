// Partial lines from the vCPU threads (a prompt, dots of progress) reach standard output within a bounded time,
// whatever the guest does meanwhile. A vCPU thread buffers its guest output until a newline and sets its
// OUTPUT_PENDING word while bytes wait; it cannot watch the clock itself without a cost on every exit, so the
// main thread looks every TICK_MS and asks a vCPU whose bytes were already waiting at its previous look to
// flush (a request plus a kick: one extra exit per flush, however many exits the guest makes). A partial line
// thus waits at most two ticks.
import { CTL, REQ, type VcpuControl } from "../vm/vcpu-control.js";

export const TICK_MS = 25;

export class OutputFlusher {
  private timer: NodeJS.Timeout | undefined;
  /** Whether each vCPU had output pending at the last look. */
  private readonly seen: boolean[];

  constructor(private readonly controls: readonly VcpuControl[]) {
    this.seen = controls.map(() => false);
  }

  start(): void {
    this.timer = setInterval(() => this.tick(), TICK_MS);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private tick(): void {
    this.controls.forEach((c, i) => {
      const pending = Atomics.load(c.ctl, CTL.OUTPUT_PENDING) !== 0;
      if (pending && this.seen[i]) {
        c.request(REQ.FLUSH);
        this.seen[i] = false;
      } else this.seen[i] = pending;
    });
  }
}
