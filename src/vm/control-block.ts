// The layout of a vCPU's control block: Int32 words in a SharedArrayBuffer shared by the vCPU's worker thread
// and the main thread (see vcpu-control.ts for how they use it). No imports on purpose: the main thread
// creates the block before it loads the KVM bindings, so that the vCPU thread can start early.

/** Word indices in the control block. */
export const CTL = {
  /** VcpuState. */
  STATE: 0,
  /** Request bits (REQ), set by the main thread, cleared by the worker as it serves them. */
  REQUEST: 1,
  /** The worker's thread id (0 until it starts), for tgkill and /proc/self/task/TID/stat. */
  TID: 2,
  /** How many kicks the worker has served (tests and stats). */
  KICKS: 3,
  /** Exits since start (low 31 bits), so the main thread sees activity without asking. */
  EXITS: 4,
  /** 1 while the worker holds guest output not written yet (a partial line): the main thread asks for a flush. */
  OUTPUT_PENDING: 5,
  /**
   * The last halt check's verdict (HaltVerdict), reset to UNKNOWN by the worker at its next exit other than a
   * kick: the main thread backs off while a guest sleeps wakeable, and with several vCPUs ends the run once
   * every one is halted for good.
   */
  HALT_VERDICT: 6,
  /** Bumped after each halt check, so the main thread knows a verdict is fresh. */
  HALT_SEQ: 7,
  /** StartSignal: the worker waits on this word for its start message (or to be cancelled before it). */
  START: 8,
} as const;
const CTL_WORDS = 9;

/** Values of CTL.HALT_VERDICT. */
export const HaltVerdict = {
  UNKNOWN: 0,
  /** Halted with nothing left to wake it (or, with several vCPUs, an AP never started). */
  FOR_GOOD: 1,
  /** Halted, but an interrupt can wake it (IF=1 or an event pending). */
  WAKEABLE: 2,
  RUNNING: 3,
} as const;

/** Values of CTL.START. */
export const StartSignal = {
  WAITING: 0,
  /** The main thread has posted VcpuStart: it is in the worker's port. */
  POSTED: 1,
  /** The run failed before starting this vCPU: the worker ends itself. */
  CANCELLED: 2,
} as const;

export const VcpuState = {
  STARTING: 0,
  RUNNING: 1,
  PAUSED: 2,
  STOPPED: 3,
} as const;
export type VcpuStateValue = (typeof VcpuState)[keyof typeof VcpuState];

/** Request bits. */
export const REQ = {
  /** Stop running guest code and wait in the paused state until the bit is cleared. */
  PAUSE: 1,
  /** Leave the run loop for good. */
  STOP: 2,
  /** The thread was seen sleeping: is the guest halted with nothing left to wake it? */
  HALT_CHECK: 4,
  /** Set by the worker itself: writing the guest's output failed, the run must end. */
  OUTPUT_FAILED: 8,
  /** Flush buffered output now. */
  FLUSH: 16,
  /** The VM-control core changed the guest-debug settings in the debug block: apply them. */
  DEBUG: 32,
  /**
   * The VM-control core posted a command in the debug block. It wakes a parked worker: the bit changes the word
   * the worker waits on, so a command posted just before the wait cannot go unseen. No meaning while running.
   */
  COMMAND: 64,
  /** Host input waits in the standard-input ring for the COM1 this thread owns (machine.ts: one vCPU, no virtio). */
  INPUT: 128,
} as const;

export function createControlBuffer(): SharedArrayBuffer {
  return new SharedArrayBuffer(CTL_WORDS * 4);
}
