// Halt detection on the main thread. With the in-kernel irqchip KVM keeps a guest's HLT inside the kernel, so
// no exit says "halted": the main thread watches each vCPU thread's state in /proc/self/task/TID/stat, and when
// a thread sleeps it asks it (a request plus a kick) to check KVM_GET_MP_STATE, RFLAGS.IF and pending events
// (docs/run.md, "Halt"). One vCPU ends the run itself when the check finds it halted for good; with several,
// the run is over when every vCPU is halted for good (or never started), seen in two check rounds in a row
// with no exit in between (a vCPU may wake another with an IPI).
import { closeSync, openSync, readSync } from "node:fs";
import { CTL, HaltVerdict, REQ, VcpuState, type VcpuControl } from "../vm/vcpu-control.js";
import { startupMark } from "./startup-marks.js";

/**
 * Polling: start fast (a guest that halts at once ends in ~1 ms), back off while busy or halted wakeable. A run
 * busy past its first second (a booting kernel) is looked at every 100 ms at most: each look reads /proc, which
 * costs a guest sharing its CPU (a nested or single-CPU host) more than a later end costs anyone.
 */
const POLL_MIN_MS = 1;
const POLL_BUSY_MAX_MS = 20;
const POLL_BUSY_LATER_MAX_MS = 100;
const BUSY_FAST_FOR_MS = 1000;
const POLL_HALTED_MAX_MS = 100;
/** Check rounds in a row that must find every vCPU halted for good before a multi-vCPU run ends. */
const CONFIRMATIONS = 2;

/**
 * Reads of /proc/self/task/TID/stat through a descriptor kept per path: one pread per poll instead of open,
 * fstat, read and close (the poll runs all along a run; on a host where the guest shares its CPU, each system
 * call takes from it). A failed read (the thread is gone) closes the descriptor and throws, as a fresh read would.
 */
class StatReader {
  private readonly fds = new Map<string, number>();
  private readonly buf = Buffer.alloc(1024);

  read = (path: string): string => {
    let fd = this.fds.get(path);
    if (fd === undefined) {
      fd = openSync(path, "r");
      this.fds.set(path, fd);
    }
    try {
      const n = readSync(fd, this.buf, 0, this.buf.length, 0);
      return this.buf.toString("latin1", 0, n);
    } catch (err) {
      this.fds.delete(path);
      closeSync(fd);
      throw err;
    }
  };

  close(): void {
    for (const fd of this.fds.values()) closeSync(fd);
    this.fds.clear();
  }
}

export class HaltDetector {
  private delay = POLL_MIN_MS;
  private timer: NodeJS.Timeout | undefined;
  private round = 0;
  private seqs: number[] = [];
  private confirmations = 0;
  private stopped = false;
  private readonly startedAt = performance.now();
  private readonly stats = new StatReader();

  /** `onHalted` is called once, when every vCPU of a multi-vCPU machine is halted for good. */
  constructor(
    private readonly controls: readonly VcpuControl[],
    private readonly onHalted: () => void,
  ) {}

  start(): void {
    this.timer = setTimeout(() => this.poll(), POLL_MIN_MS);
  }

  /** Something happened that may end a halt (host input): look again soon. */
  hurry(): void {
    this.delay = POLL_MIN_MS;
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.stats.close();
  }

  private poll(): void {
    if (this.stopped) return;
    if (this.controls.length > 1) this.pollSmp();
    else this.pollOne();
    if (!this.stopped) this.timer = setTimeout(() => this.poll(), this.delay);
  }

  private pollOne(): void {
    const control = this.controls[0];
    if (control.state !== VcpuState.RUNNING) return;
    // A check still unanswered: the thread sleeps outside KVM_RUN (waiting for the I/O worker, a device
    // access forwarded), where it cannot look. Asking again would only signal it; wait as for a busy guest.
    if (Atomics.load(control.ctl, CTL.REQUEST) & REQ.HALT_CHECK) {
      return this.busy();
    }
    if (!control.threadSleeping(this.stats.read)) return this.busy();
    control.request(REQ.HALT_CHECK);
    startupMark("vCPU thread seen asleep: halt check asked");
    // Back off either way: a halt for good ends the run from the vCPU thread itself, and a thread that wakes,
    // exits and sleeps again (an idle kernel between its interrupts) needs no check every millisecond.
    this.delay = Math.min(this.delay * 2, POLL_HALTED_MAX_MS);
  }

  private pollSmp(): void {
    const cs = this.controls;
    if (cs.some((c) => c.state !== VcpuState.RUNNING)) return;
    if (!cs.every((c) => c.threadSleeping(this.stats.read))) {
      this.confirmations = 0;
      this.round = 0;
      return this.busy();
    }
    if (this.round > 0 && cs.every((c, i) => Atomics.load(c.ctl, CTL.HALT_SEQ) !== this.seqs[i])) {
      const verdicts = cs.map((c) => Atomics.load(c.ctl, CTL.HALT_VERDICT));
      this.confirmations = verdicts.every((v) => v === HaltVerdict.FOR_GOOD) ? this.confirmations + 1 : 0;
      this.round = 0;
      if (this.confirmations >= CONFIRMATIONS) {
        this.stop();
        this.onHalted();
        return;
      }
      const wakeable = verdicts.some((v) => v === HaltVerdict.WAKEABLE);
      this.delay = wakeable ? Math.min(this.delay * 2, POLL_HALTED_MAX_MS) : POLL_MIN_MS;
    }
    if (this.round === 0) {
      this.seqs = cs.map((c) => Atomics.load(c.ctl, CTL.HALT_SEQ));
      this.round = 1;
      for (const c of cs) c.request(REQ.HALT_CHECK);
    }
  }

  private busy(): void {
    const max =
      performance.now() - this.startedAt < BUSY_FAST_FOR_MS ? POLL_BUSY_MAX_MS : POLL_BUSY_LATER_MAX_MS;
    this.delay = Math.min(this.delay * 2, max);
  }
}
