// Partial lines from the vCPU threads (a prompt, dots of progress) reach standard output within a bounded time,
// whatever the guest does meanwhile. A vCPU thread buffers its guest output until a newline and sets its
// OUTPUT_PENDING word while bytes wait; it cannot watch the clock itself without a cost on every exit. So the
// main thread sleeps on that word (Atomics.waitAsync: the vCPU thread's Output notifies when the word goes
// from 0 to 1), and FLUSH_AFTER_MS after it went up asks a vCPU whose bytes still wait to flush (a request
// plus a kick: one extra exit per flush, however many exits the guest makes). A partial line thus waits about
// FLUSH_AFTER_MS, and a guest that prints nothing costs the main thread no wake-up at all (a fixed tick did,
// 40 times a second, taking the CPU from a guest that shares it).
import { CTL, REQ, type VcpuControl } from "../vm/vcpu-control.js";

export const FLUSH_AFTER_MS = 25;

export class OutputFlusher {
  private stopped = true;
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(private readonly controls: readonly Pick<VcpuControl, "ctl" | "request">[]) {}

  start(): void {
    this.stopped = false;
    this.controls.forEach((c) => this.watch(c));
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    // Wake this thread's own waits, so that none is left behind (each then sees `stopped`).
    for (const c of this.controls) Atomics.notify(c.ctl, CTL.OUTPUT_PENDING);
  }

  /** Sleep until vCPU `c`'s output is pending (at once if it is), then look again FLUSH_AFTER_MS later. */
  private watch(c: Pick<VcpuControl, "ctl" | "request">): void {
    if (this.stopped) return;
    const wait = Atomics.waitAsync(c.ctl, CTL.OUTPUT_PENDING, 0);
    if (wait.async) void wait.value.then(() => this.later(c));
    else this.later(c);
  }

  private later(c: Pick<VcpuControl, "ctl" | "request">): void {
    if (this.stopped) return;
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      if (this.stopped) return;
      // Still pending: this line (or a newer one) has waited up to FLUSH_AFTER_MS.
      if (Atomics.load(c.ctl, CTL.OUTPUT_PENDING) !== 0) c.request(REQ.FLUSH);
      this.watch(c);
    }, FLUSH_AFTER_MS);
    timer.unref();
    this.timers.add(timer);
  }
}
