// The control block shared by a vCPU's worker thread and the main thread, and the kick that gets the worker
// out of KVM_RUN.
//
// Why this shape (see docs/run.md, "Threads"): each vCPU runs a synchronous KVM_RUN loop in its own worker and
// handles its own exits there; handing exits to another thread costs 10x. The main thread therefore never
// waits on the worker: it writes a request into the control block (Int32 words in a SharedArrayBuffer), then
// kicks. A kick sets kvm_run.immediate_exit (seen if the worker is about to enter KVM_RUN) and sends SIGUSR2
// to the worker's thread with tgkill (seen if it is inside KVM_RUN). The worker keeps SIGUSR2 blocked except
// inside KVM_RUN (KVM_SET_SIGNAL_MASK), so no handler ever runs: KVM_RUN returns EINTR and the worker takes
// the pending signal with sigtimedwait. A signal left pending would make every later KVM_RUN fail at once.
import * as libc from "../kvm/libc.js";
import type { Vcpu } from "./vcpu.js";

import { CTL, REQ, VcpuState, type VcpuStateValue } from "./control-block.js";

export {
  CTL,
  HaltVerdict,
  REQ,
  VcpuState,
  createControlBuffer,
  type VcpuStateValue,
} from "./control-block.js";

export const KICK_SIGNAL = libc.SIGUSR2;

/** The main thread's handle on one vCPU thread. */
export class VcpuControl {
  readonly ctl: Int32Array;
  private readonly pid = libc.getpid();

  /** `vcpu` is the main thread's view of the same vCPU (for immediate_exit). */
  constructor(
    readonly buffer: SharedArrayBuffer,
    private readonly vcpu: Vcpu,
  ) {
    this.ctl = new Int32Array(buffer);
  }

  get state(): VcpuStateValue {
    return Atomics.load(this.ctl, CTL.STATE) as VcpuStateValue;
  }
  get tid(): number {
    return Atomics.load(this.ctl, CTL.TID);
  }

  /** Get the worker out of KVM_RUN (or keep it from entering) so that it looks at its requests. */
  kick(): void {
    if (this.state === VcpuState.STOPPED) return;
    this.vcpu.immediateExit = true;
    const tid = this.tid;
    if (tid !== 0) libc.tgkill(this.pid, tid, KICK_SIGNAL);
  }

  /** Set request bits, then kick. */
  request(bits: number): void {
    Atomics.or(this.ctl, CTL.REQUEST, bits);
    Atomics.notify(this.ctl, CTL.REQUEST); // wakes a paused worker
    this.kick();
  }

  /** Ask the vCPU to pause; resolves once it is paused (or stopped). Its state may then be read and written. */
  async pause(): Promise<VcpuStateValue> {
    this.request(REQ.PAUSE);
    return this.waitFor((s) => s === VcpuState.PAUSED || s === VcpuState.STOPPED);
  }

  resume(): void {
    Atomics.and(this.ctl, CTL.REQUEST, ~REQ.PAUSE);
    Atomics.notify(this.ctl, CTL.REQUEST);
  }

  stop(): void {
    this.request(REQ.STOP);
  }

  /** Wait (without blocking the event loop) until the state satisfies `ok`. */
  async waitFor(ok: (s: VcpuStateValue) => boolean): Promise<VcpuStateValue> {
    for (;;) {
      const s = this.state;
      if (ok(s)) return s;
      const w = Atomics.waitAsync(this.ctl, CTL.STATE, s, 1000);
      if (w.async) await w.value;
    }
  }

  /** Is the worker's thread asleep in the kernel (e.g. a guest HLT kept inside KVM)? Reads /proc. */
  threadSleeping(readStat: (path: string) => string): boolean {
    const tid = this.tid;
    if (tid === 0) return false;
    let stat: string;
    try {
      stat = readStat(`/proc/self/task/${tid}/stat`);
    } catch {
      return false;
    }
    // "tid (comm) S ...": comm may hold spaces or parentheses, so take the state after the last ')'.
    const st = stat.charAt(stat.lastIndexOf(")") + 2);
    return st === "S" || st === "D";
  }
}

// ---- The worker's side ----

/** Kernel sigset (8 bytes, what KVM_SET_SIGNAL_MASK takes) and glibc sigset_t (128 bytes) helpers. */
function sigBit(set: Uint8Array, sig: number, on: boolean): void {
  const byte = (sig - 1) >> 3;
  const bit = 1 << ((sig - 1) & 7);
  set[byte] = on ? set[byte] | bit : set[byte] & ~bit;
}

/**
 * The worker's half: blocks the kick signal in this thread, lets KVM unblock it only inside KVM_RUN, and
 * consumes kicks. Call `new VcpuKickReceiver(vcpu)` first thing in the worker.
 */
export class VcpuKickReceiver {
  private readonly kickSet = new Uint8Array(128);
  private readonly zeroTimeout = new Uint8Array(16); // struct timespec {0, 0}

  constructor(private readonly vcpu: Vcpu) {
    sigBit(this.kickSet, KICK_SIGNAL, true);
    const old = new Uint8Array(128);
    if (libc.pthread_sigmask(libc.SIG_BLOCK, this.kickSet, old) !== 0)
      throw new Error("pthread_sigmask failed");
    // Inside KVM_RUN: the thread's usual mask, with the kick signal let through.
    const inRun = old.slice(0, 8);
    sigBit(inRun, KICK_SIGNAL, false);
    vcpu.setSignalMask(inRun);
  }

  /**
   * Kick this thread every `periodMs` (a POSIX timer sending it the kick signal): for a vCPU run on the main
   * thread, so that KVM_RUN gives Node's event loop its turn even while the guest neither exits nor is kicked
   * (a guest halted in the in-kernel local APIC). The first kick comes after `firstMs`. Returns the stop function.
   */
  kickEvery(periodMs: number, firstMs = periodMs): () => void {
    return libc.periodicThreadSignal(KICK_SIGNAL, libc.gettid(), periodMs, firstMs);
  }

  /** After KVM_RUN returned EINTR (or any time): clear immediate_exit and drop every pending kick signal. */
  consume(): void {
    this.vcpu.immediateExit = false;
    while (libc.sigtimedwait(this.kickSet, null, this.zeroTimeout) > 0) {
      /* drop it */
    }
  }
}
