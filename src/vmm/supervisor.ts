// Thread supervision for one run: it hears how each vCPU thread and the I/O worker end, decides how the run
// ends (the first end that was not asked for decides: a fault, the exit port, a halt, a signal, output that
// could not be written...), stops every vCPU once it has decided, and at the end stops the threads in the order
// that loses nothing: the vCPUs first, then the I/O worker, which serves what they left behind.
import type { Worker } from "node:worker_threads";
import { signalEventfd } from "../vm/eventfds.js";
import { VcpuState, type VcpuControl } from "../vm/vcpu-control.js";
import { IO_CTL, IoState, SLOT, slotView, type DeviceReport, type IoWorkerMessage } from "./io-protocol.js";
import type { IoThread } from "./io-thread.js";
import type { VcpuThread } from "./vcpu-thread.js";
import type { WorkerMessage } from "./worker-protocol.js";
import { mergeStats, type StatsSummary } from "./exit-stats.js";
import type { RunEnd } from "./run-end.js";
import { startupMark } from "./startup-marks.js";

/** How long a thread asked to stop may take before it is terminated. */
const STOP_TIMEOUT_MS = 2000;

export interface RunOutcome {
  /** What the I/O worker's devices counted, once it has ended (filled in by shutdown()). */
  devices?: DeviceReport[];
  end: RunEnd;
  /** The vCPU whose end decided, when one did. */
  cpu?: number;
  /** Every vCPU's exit statistics, merged (with --stats). */
  stats?: StatsSummary;
}

export interface SupervisorEvents {
  /** vCPU `index` parked itself in the paused state, for `kind` (StopKind of debug-block.ts). */
  onPaused?: (index: number, kind: number) => void;
  /** A vCPU touched a device of the I/O worker, which is dormant: start it. */
  onIoWanted?: () => void;
  /** The guest touched the vCPU thread's own COM1 for the first time (machine.ts: one vCPU, no virtio). */
  onCom1Used?: () => void;
}

export class RunSupervisor {
  private decided: { end: RunEnd; cpu?: number } | undefined;
  private stopping = false;
  private remaining: number;
  private last: RunEnd | undefined;
  private readonly seen: boolean[];
  private readonly stats: StatsSummary[] = [];
  private resolve!: (o: RunOutcome) => void;
  /** The I/O worker's device counters, from its last message. */
  devices: DeviceReport[] | undefined;
  /** Resolves when the I/O worker's last message (done or failed) has arrived. */
  private ioReported: Promise<void> = Promise.resolve();
  /** Resolves once every vCPU thread has ended (the threads themselves may still be tearing down). */
  readonly outcome: Promise<RunOutcome>;

  constructor(
    private readonly threads: readonly VcpuThread[],
    private readonly controls: readonly VcpuControl[],
    private readonly ioBuffer: SharedArrayBuffer,
    events: SupervisorEvents = {},
  ) {
    this.remaining = threads.length;
    this.seen = threads.map(() => false);
    this.outcome = new Promise((r) => (this.resolve = r));
    threads.forEach(({ worker }, i) => {
      worker.on("message", (m: WorkerMessage) => {
        if (m.type === "done") {
          startupMark("vCPU thread's result received");
          this.threadEnded(i, m.end, m.stats);
        } else if (m.type === "paused") events.onPaused?.(i, m.kind);
        else if (m.type === "io-wanted") events.onIoWanted?.();
        else if (m.type === "com1-used") events.onCom1Used?.();
      });
      worker.on("error", (e) =>
        this.threadEnded(i, { kind: "internal", reason: `vCPU thread failed: ${e.stack ?? String(e)}` }),
      );
      worker.on("exit", (code) =>
        this.threadEnded(i, { kind: "internal", reason: `vCPU thread ended early (code ${code})` }),
      );
    });
  }

  /** Whether the run's end is decided (every vCPU has been asked to stop). */
  get ending(): boolean {
    return this.stopping;
  }

  /** End the run for this reason (unless it is already decided) and stop every vCPU. */
  end(end: RunEnd, cpu?: number): void {
    this.decided ??= { end, cpu };
    this.stopAll();
  }

  /** Hear how the I/O worker ends: its failure or an output it could not write ends the run. */
  watchIo(io: IoThread): void {
    const ioCtl = new Int32Array(this.ioBuffer, 0, 8);
    let reported = () => {};
    this.ioReported = new Promise((resolve) => (reported = resolve));
    io.worker.on("message", (m: IoWorkerMessage) => {
      if (m.type === "failed") {
        this.end({ kind: "internal", reason: m.reason });
        reported();
      } else if (m.type === "output") this.end(m.end);
      else if (m.type === "done") {
        this.devices = m.devices;
        reported();
      }
    });
    io.worker.on("error", (e) => {
      // Failed before its loop (a device it could not build): a vCPU waiting for a reply must give up.
      Atomics.store(ioCtl, IO_CTL.STATE, IoState.FAILED);
      Atomics.notify(ioCtl, IO_CTL.STATE);
      this.end({ kind: "internal", reason: `I/O worker failed: ${e.stack ?? String(e)}` });
    });
  }

  private stopAll(): void {
    this.stopping = true;
    for (const c of this.controls) c.stop();
  }

  private threadEnded(i: number, end: RunEnd, stats?: StatsSummary): void {
    if (this.seen[i]) return;
    this.seen[i] = true;
    this.last = end;
    if (stats) this.stats.push(stats);
    // A vCPU that stopped because it was asked to does not decide; the first one to end on its own does.
    if (!(this.stopping && end.kind === "stopped")) this.decided ??= { end, cpu: i };
    if (!this.stopping) this.stopAll();
    if (--this.remaining === 0) {
      const d = this.decided ?? { end: this.last };
      this.resolve({ ...d, stats: mergeStats(this.stats) });
    }
  }

  /**
   * Stop every thread, the vCPUs first, then the I/O worker (it serves what they left behind). `join`: wait
   * until each thread has really ended; otherwise a thread that said it stopped (its output flushed, it will
   * not touch the VM again) is left to end on its own while the caller goes on.
   */
  async shutdown(io: IoThread | undefined, doorbell: number, join: boolean): Promise<void> {
    const ioCtl = new Int32Array(this.ioBuffer, 0, 8);
    // An I/O worker never started: a vCPU waiting for it (the run ended meanwhile) must give up.
    if (!io) {
      Atomics.store(ioCtl, IO_CTL.STATE, IoState.STOPPED);
      for (let i = 0; i < this.threads.length; i++) Atomics.notify(slotView(this.ioBuffer, i), SLOT.STATE);
    }
    await Promise.all(this.threads.map((t, i) => stopVcpuThread(t, this.controls[i], join)));
    startupMark("vCPU threads stopped");
    if (io) {
      Atomics.store(ioCtl, IO_CTL.STOP, 1);
      signalEventfd(doorbell);
      // Not terminate() at once, even for an I/O worker still starting: a worker ended while it initialises
      // koffi aborts the whole process (koffi's native init throws into a terminating isolate). It leaves its
      // loop at its first wake-up, serves what is left, flushes and says STOPPED.
      await stopIoThread(io, ioCtl, join);
      // Its last message (the devices' counters) is posted before it says STOPPED: let it arrive. The worker
      // is still ref'd meanwhile, so the process waits for the message (an unref'd worker and an unref'd
      // timer would let Node exit in the middle of this await).
      await Promise.race([this.ioReported, io.exited, timeout(STOP_TIMEOUT_MS)]);
      if (!join) io.worker.unref();
      startupMark("I/O worker stopped");
    }
  }
}

/** Resolve with "timeout" after `ms` (the timer does not keep the process alive). */
function timeout(ms: number): Promise<"timeout"> {
  return new Promise((resolve) => setTimeout(() => resolve("timeout"), ms).unref());
}

async function endedOrTerminated(worker: Worker, exited: Promise<void>, kick?: () => void): Promise<void> {
  if ((await Promise.race([exited, timeout(STOP_TIMEOUT_MS)])) === "timeout") {
    kick?.(); // a worker still inside KVM_RUN would hang terminate()
    await worker.terminate();
  }
}

/**
 * Stop a vCPU thread. One that already said STOPPED has flushed its output and will not touch the VM again;
 * without `join` it is not waited for (its isolate's teardown overlaps the VM's close). Any other is asked to
 * stop, then kicked and terminated if it does not end in time.
 */
async function stopVcpuThread(t: VcpuThread, control: VcpuControl, join: boolean): Promise<void> {
  if (control.state === VcpuState.STOPPED && !join) {
    t.worker.unref();
    return;
  }
  control.stop();
  await endedOrTerminated(t.worker, t.exited, () => control.kick());
}

/**
 * Wait until the I/O worker has left its loop (STOPPED or FAILED: output flushed); with `join`, or when it
 * failed, until it has ended too (terminated if it does not in time).
 */
async function stopIoThread(io: IoThread, ioCtl: Int32Array, join: boolean): Promise<void> {
  const deadline = Date.now() + STOP_TIMEOUT_MS;
  for (;;) {
    const st = Atomics.load(ioCtl, IO_CTL.STATE);
    if (st === IoState.STOPPED && !join) return; // it ends on its own, its output flushed
    if (st === IoState.STOPPED || st === IoState.FAILED) break; // FAILED: its message must still arrive
    const left = deadline - Date.now();
    if (left <= 0) break;
    const w = Atomics.waitAsync(ioCtl, IO_CTL.STATE, st, left);
    if (w.async && (await Promise.race([w.value, io.exited.then(() => "exited" as const)])) === "exited")
      return;
  }
  await endedOrTerminated(io.worker, io.exited);
}
