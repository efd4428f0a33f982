// The VM-control core's handle on one vCPU: its control block (pause, resume, kick) and its debug block
// (src/vmm/debug-block.ts): why it stopped, and the commands its parked thread runs on its own vCPU fd. A
// command is posted in the block and the vCPU thread is woken; the main thread never issues a vCPU ioctl
// itself, so it never blocks on a vCPU that is inside KVM_RUN.
import { SysError, errnoName } from "../kvm/libc.js";
import { KVM } from "../kvm/ioctls.js";
import { CTL, REQ, VcpuState, type VcpuControl } from "../vm/vcpu-control.js";
import {
  CMD,
  CMD_STATE,
  DBG,
  DETAIL,
  ResumeAction,
  SCRATCH_SIZE,
  SNAPSHOT,
  StopKind,
  debugScratch,
  debugSnapshot,
  debugWords,
  readU64,
  writeU64,
  type StopKindValue,
} from "../vmm/debug-block.js";
import { VmControlError } from "./errors.js";

/** Why a vCPU is parked, with what its exit said. */
export interface StopInfo {
  vcpu: number;
  kind: StopKindValue;
  /** Debug exits: the exception vector (1 #DB, 3 #BP). MSR stops: the MSR index. */
  code: number;
  /** Debug exits: pc (linear). Software breakpoints: their linear address. Page stops: the GPA. */
  addr: bigint;
  /** Debug exits: dr6. MSR stops: the value written or read. */
  value: bigint;
  /** Page stops: a write, its length and data. */
  write: boolean;
  len: number;
  data: Uint8Array;
  /** FAULT: the KVM exit reason and its detail (the internal error's suberror). */
  exitReason: number;
  exitDetail: number;
}

/** How long a command may wait for a parked vCPU thread (it answers in microseconds). */
const COMMAND_TIMEOUT_MS = 5000;
/** vCPU ioctls that change nothing: after any other, the park's snapshot no longer tells the vCPU's state. */
const READ_ONLY_IOCTLS = new Set<number>([
  KVM.GET_REGS,
  KVM.GET_SREGS,
  KVM.GET_FPU,
  KVM.GET_XSAVE,
  KVM.GET_XCRS,
  KVM.GET_MSRS,
  KVM.GET_DEBUGREGS,
  KVM.GET_VCPU_EVENTS,
  KVM.GET_MP_STATE,
  KVM.GET_CPUID2,
  KVM.GET_TSC_KHZ,
  KVM.TRANSLATE,
]);

/** What the vCPU thread read at its park: struct kvm_regs, struct kvm_sregs, and MSRs (an unreadable one: undefined). */
export interface ParkSnapshot {
  regs: Buffer;
  sregs: Buffer;
  msrs: Map<number, bigint | undefined>;
}

export class VcpuLink {
  readonly words: Int32Array;
  private readonly scratch: Uint8Array;
  private readonly snap: Uint8Array;
  /** The STOP_SEQ of a park in which a command changed the vCPU's state (its snapshot is then stale). */
  private changedIn: number | undefined;
  /** Commands run one at a time: each waits for the one before. */
  private queue: Promise<unknown> = Promise.resolve();
  /**
   * Set by resume(): the vCPU may still show PAUSED for a moment, but it is leaving its park; it counts as
   * parked again only after it parks anew (pause(), or an event of its own: parkedAgain()).
   */
  private resumed = false;
  /** The STOP_SEQ of the park resume() let go. */
  private resumedFrom = 0;

  constructor(
    readonly index: number,
    readonly control: VcpuControl,
    block: SharedArrayBuffer,
  ) {
    this.words = debugWords(block);
    this.scratch = debugScratch(block);
    this.snap = debugSnapshot(block);
  }

  /**
   * The registers the vCPU thread read when it parked this time (WANT.SNAPSHOT), while no command has changed
   * its state since; undefined otherwise. Views into the shared block: valid until the vCPU goes on.
   */
  snapshot(): ParkSnapshot | undefined {
    if (!this.parked) return undefined;
    const w = this.words;
    const seq = Atomics.load(w, DBG.STOP_SEQ);
    if (seq === 0 || w[DBG.SNAP_SEQ] !== seq || this.changedIn === seq) return undefined;
    const s = this.snap;
    const bytes = Buffer.from(s.buffer, s.byteOffset, s.byteLength);
    const msrs = new Map<number, bigint | undefined>();
    const n = bytes.readUInt32LE(SNAPSHOT.MSRS);
    for (let i = 0; i < n; i++) {
      const at = SNAPSHOT.MSRS + 8 + 16 * i;
      msrs.set(bytes.readUInt32LE(at), bytes[at + 4] ? bytes.readBigUInt64LE(at + 8) : undefined);
    }
    return {
      regs: bytes.subarray(SNAPSHOT.REGS, SNAPSHOT.SREGS),
      sregs: bytes.subarray(SNAPSHOT.SREGS, SNAPSHOT.MSRS),
      msrs,
    };
  }

  /** Parked (PAUSED) and able to run commands. */
  get parked(): boolean {
    return !this.resumed && this.control.state === VcpuState.PAUSED;
  }

  /**
   * The vCPU parked on its own (an event): it is parked, whatever was resumed before. The word may come late,
   * about the park resume() already let go: that one does not count.
   */
  parkedAgain(): void {
    if (this.resumed && Atomics.load(this.words, DBG.STOP_SEQ) === this.resumedFrom) return;
    this.resumed = false;
  }

  get stopped(): boolean {
    return this.control.state === VcpuState.STOPPED;
  }

  /** Why the vCPU is parked (StopKind.NONE when it is not). */
  get stopKind(): StopKindValue {
    return Atomics.load(this.words, DBG.STOP_KIND) as StopKindValue;
  }

  /** The stop's details, as the vCPU recorded them. */
  stopInfo(): StopInfo {
    const w = this.words;
    const d = DBG.DETAIL;
    return {
      vcpu: this.index,
      kind: this.stopKind,
      code: w[d + DETAIL.CODE] >>> 0,
      addr: readU64(w, d + DETAIL.ADDR_LO),
      value: readU64(w, d + DETAIL.VALUE_LO),
      write: w[d + DETAIL.WRITE] !== 0,
      len: w[d + DETAIL.LEN],
      data: new Uint8Array(w.buffer, w.byteOffset + 4 * (d + DETAIL.DATA), 8).slice(0, w[d + DETAIL.LEN]),
      exitReason: w[d + DETAIL.EXIT_REASON],
      exitDetail: w[d + DETAIL.EXIT_DETAIL],
    };
  }

  /**
   * Ask the vCPU to park; resolves once it is parked (or has stopped for good). The request is made even if
   * it looks parked: after a resume it may be on its way out, and the request keeps it in (or parks it again).
   */
  async pause(): Promise<void> {
    if (this.stopped) return;
    if (this.parked) return;
    // Resumed and maybe still showing PAUSED on its way out: asked to pause now, it could look parked while it
    // leaves (and parks anew a moment later). Let it leave that park first.
    if (this.resumed) await this.leftPark();
    await this.control.pause();
    this.resumed = false;
  }

  /** Wait until the vCPU is out of the park resume() let go (running, stopped, or in a new park). */
  private async leftPark(): Promise<void> {
    const ctl = this.control.ctl;
    for (;;) {
      const state = Atomics.load(ctl, CTL.STATE);
      if (state !== VcpuState.PAUSED || Atomics.load(this.words, DBG.STOP_SEQ) !== this.resumedFrom) return;
      const w = Atomics.waitAsync(ctl, CTL.STATE, state, 100);
      if (w.async) await w.value;
    }
  }

  /** Let the parked vCPU go on, with `action` (ResumeAction) and its argument. */
  resume(action: number = ResumeAction.CONTINUE, arg = 0n): void {
    if (!this.parked) return;
    Atomics.store(this.words, DBG.ACTION, action);
    writeU64(this.words, DBG.ACTION_ARG_LO, arg);
    this.resumedFrom = Atomics.load(this.words, DBG.STOP_SEQ);
    this.resumed = true;
    this.control.resume();
  }

  /** Run ioctl `nr` with `buf` (copied in, and back out) on the parked vCPU's fd; returns its result. */
  ioctl(nr: number, buf: Uint8Array, name: string): Promise<number> {
    if (buf.length > SCRATCH_SIZE)
      throw new VmControlError(`${name}: ${buf.length} bytes, more than the command area`);
    return this.command(CMD.IOCTL, nr, buf, buf.length, name);
  }

  /** Run ioctl `nr` with an integer argument on the parked vCPU's fd. */
  ioctlInt(nr: number, arg: number, name: string): Promise<number> {
    return this.command(CMD.IOCTL_INT, nr, undefined, arg, name);
  }

  private command(
    op: number,
    nr: number,
    buf: Uint8Array | undefined,
    len: number,
    name: string,
  ): Promise<number> {
    const run = async (): Promise<number> => {
      if (!this.parked)
        throw new VmControlError(`vCPU ${this.index} is not stopped: ${name} needs it stopped`);
      const w = this.words;
      if (!READ_ONLY_IOCTLS.has(nr)) this.changedIn = Atomics.load(w, DBG.STOP_SEQ);
      if (buf) this.scratch.set(buf);
      w[DBG.CMD] = op;
      w[DBG.CMD_IOCTL] = nr | 0;
      w[DBG.CMD_LEN] = len;
      Atomics.store(w, DBG.CMD_STATE, CMD_STATE.REQUEST);
      // The parked thread waits on its control block's request word: change it, then wake the thread.
      Atomics.or(this.control.ctl, CTL.REQUEST, REQ.COMMAND);
      Atomics.notify(this.control.ctl, CTL.REQUEST);
      const deadline = Date.now() + COMMAND_TIMEOUT_MS;
      while (Atomics.load(w, DBG.CMD_STATE) !== CMD_STATE.DONE) {
        if (this.stopped) throw new VmControlError(`vCPU ${this.index} has stopped: ${name} was not run`);
        const left = deadline - Date.now();
        if (left <= 0) throw new VmControlError(`vCPU ${this.index} did not answer ${name}`);
        const wait = Atomics.waitAsync(w, DBG.CMD_STATE, CMD_STATE.REQUEST, Math.min(left, 100));
        if (wait.async) await wait.value;
      }
      const rc = w[DBG.CMD_RC];
      Atomics.store(w, DBG.CMD_STATE, CMD_STATE.IDLE);
      if (buf) buf.set(this.scratch.subarray(0, buf.length));
      if (rc < 0) throw new SysError(name, -rc);
      return rc;
    };
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => undefined);
    return p;
  }

  /** Ask the vCPU to apply the guest-debug settings now in its block (it does so at its next look). */
  syncGuestDebug(): void {
    Atomics.add(this.words, DBG.GD_SEQ, 1);
    // A parked vCPU applies them before it runs again; a running one at once (the request kicks it).
    this.control.request(REQ.DEBUG);
  }
}

/** A stop kind's name, for messages and JSON. */
export function stopKindName(kind: number): string {
  const name = Object.entries(StopKind).find(([, v]) => v === kind)?.[0];
  return name ? name.toLowerCase().replace(/_/g, "-") : `kind-${kind}`;
}

/** errno names for messages of failed vCPU commands. */
export { errnoName };
