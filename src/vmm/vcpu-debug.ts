// The vCPU thread's side of the VM-control core (src/debug/): it decides on the spot whether an exit is one
// the core asked to hear about, parks the vCPU with the stop's details in the debug block (debug-block.ts),
// serves the core's commands on its own vCPU fd while parked, and goes on as the core says. With no client
// attached (ARMED = 0) nothing here runs on the exit path: the run loop looks at the block only for the exits
// that would otherwise end the run, and for MMIO exits inside RAM (which only page protection makes).
//
// Rules taken from how KVM guest debugging behaves (docs/introspection.md, "Backends"):
//   - software breakpoints on kvm_pvm: a planted byte (0xCC or 0xF1) comes back as an emulation failure at its
//     address (KVM_EXIT_INTERNAL_ERROR, suberror 1), not as a debug exit; on VMX/SVM, 0xCC with USE_SW_BP comes
//     back as KVM_EXIT_DEBUG with exception 3;
//   - a single step ends at KVM_EXIT_DEBUG; when a port or MMIO exit comes first, the instruction may already
//     be complete (an OUT: RIP is past it), so the vCPU runs once more with immediate_exit set: EINTR (it was
//     complete) or KVM_EXIT_DEBUG (the step finished) both end the step, with no instruction run unseen.
import * as libc from "../kvm/libc.js";
import { KVM, KVM_EXIT, KVM_GUESTDBG } from "../kvm/ioctls.js";
import {
  KVM_RUN_EXIT_UNION,
  RUN,
  kvm_guest_debug,
  kvm_msr_entry,
  kvm_msrs,
  kvm_regs,
  kvm_sregs,
} from "../kvm/structs.js";
import { KVM_CAP } from "../kvm/caps.js";
import type { Vcpu } from "../vm/vcpu.js";
import {
  CMD,
  CMD_STATE,
  DBG,
  DETAIL,
  EXIT_BREAK,
  EXIT_COUNT_SLOTS,
  MAX_SNAPSHOT_MSRS,
  MAX_SW_BREAKPOINTS,
  ResumeAction,
  RUN_SYNC,
  SNAPSHOT,
  STEP,
  StopKind,
  WANT,
  debugScratch,
  debugSnapshot,
  debugWords,
  writeU64,
  readU64,
  type StopKindValue,
} from "./debug-block.js";

/** The ioctls the core may have a parked vCPU run on its own fd (no others: KVM_RUN above all). */
const ALLOWED_IOCTLS = new Set<number>([
  KVM.GET_REGS,
  KVM.SET_REGS,
  KVM.GET_SREGS,
  KVM.SET_SREGS,
  KVM.GET_FPU,
  KVM.SET_FPU,
  KVM.GET_XSAVE,
  KVM.SET_XSAVE,
  KVM.GET_XCRS,
  KVM.SET_XCRS,
  KVM.GET_MSRS,
  KVM.SET_MSRS,
  KVM.GET_DEBUGREGS,
  KVM.SET_DEBUGREGS,
  KVM.GET_VCPU_EVENTS,
  KVM.SET_VCPU_EVENTS,
  KVM.GET_MP_STATE,
  KVM.SET_MP_STATE,
  KVM.TRANSLATE,
  KVM.GET_CPUID2,
  KVM.GET_TSC_KHZ,
  KVM.SET_GUEST_DEBUG,
]);

if (SNAPSHOT.SREGS !== kvm_regs.size || SNAPSHOT.MSRS !== SNAPSHOT.SREGS + kvm_sregs.size)
  throw new Error("debug-block.ts's snapshot layout does not match struct kvm_regs / kvm_sregs");
if (RUN_SYNC.VALID_REGS !== KVM_RUN_EXIT_UNION + 256 || RUN_SYNC.SYNC !== RUN_SYNC.VALID_REGS + 16)
  throw new Error("debug-block.ts's RUN_SYNC does not match struct kvm_run");
/** RFLAGS in the sync area: bit 1 is always set in a real value, so 0 marks the area as not refreshed yet. */
const SYNC_RFLAGS = RUN_SYNC.SYNC + kvm_regs.off.rflags;
/**
 * Most exits between two events for which KVM is kept copying the registers at every exit. Measured on
 * kvm_pvm: the copy costs an exit about 0.9 us (8% of a plain exit), and saves an event KVM_GET_REGS and
 * KVM_GET_SREGS (about 17 us): it pays off when events come within about 19 exits of each other.
 */
const SYNC_REGS_MAX_GAP = 16;

/** What a park ended with. */
export interface Resume {
  action: number;
  arg: bigint;
}

export class VcpuDebugAgent {
  readonly words: Int32Array;
  private readonly scratch: Uint8Array;
  private appliedSeq = 0;
  private readonly gd = Buffer.alloc(kvm_guest_debug.size);
  private readonly msrBuf = Buffer.alloc(kvm_msrs.size + kvm_msr_entry.size);
  private readonly snapshot: Uint8Array;
  private readonly snapMsrs = Buffer.alloc(kvm_msrs.size + MAX_SNAPSHOT_MSRS * kvm_msr_entry.size);
  /** KVM can copy the registers into kvm_run at each exit (KVM_CAP_SYNC_REGS with regs and sregs). */
  private readonly syncRegs: boolean;
  /** The vCPU's exit count at its last park for an event (not a pause). */
  private exitsAtEvent = 0;
  /** A step is under way: the next debug exit (or an I/O exit, then an immediate exit) ends it. */
  stepping = false;

  constructor(
    private readonly vcpu: Vcpu,
    block: SharedArrayBuffer,
  ) {
    this.words = debugWords(block);
    this.scratch = debugScratch(block);
    this.snapshot = debugSnapshot(block);
    const bits = libc.ioctlInt(vcpu.desc.vmFd, KVM.CHECK_EXTENSION, KVM_CAP.SYNC_REGS);
    this.syncRegs = bits > 0 && (bits & RUN_SYNC.VALID_BITS) === RUN_SYNC.VALID_BITS;
  }

  get armed(): boolean {
    return this.words[DBG.ARMED] !== 0;
  }

  get wantsFaults(): boolean {
    return this.armed && (this.words[DBG.WANT] & WANT.FAULT) !== 0;
  }

  get wantsInt3(): boolean {
    return this.armed && (this.words[DBG.WANT] & WANT.INT3) !== 0;
  }

  /** Apply the core's guest-debug settings if they changed (and a step's SINGLESTEP while stepping). */
  applyGuestDebug(force = false): void {
    const seq = Atomics.load(this.words, DBG.GD_SEQ);
    if (!force && seq === this.appliedSeq) return;
    this.appliedSeq = seq;
    this.writeGuestDebug();
  }

  private writeGuestDebug(): void {
    const w = this.words;
    let control = w[DBG.GD_CONTROL] >>> 0;
    if (this.stepping) {
      control |= KVM_GUESTDBG.ENABLE | KVM_GUESTDBG.SINGLESTEP;
      if ((w[DBG.STEP_FLAGS] & STEP.ALLOW_IRQ) === 0) control |= KVM_GUESTDBG.BLOCKIRQ;
    }
    const b = this.gd;
    b.fill(0);
    b.writeUInt32LE(control >>> 0, kvm_guest_debug.off.control);
    for (let i = 0; i < 8; i++)
      b.writeBigUInt64LE(readU64(w, DBG.GD_REGS + 2 * i), kvm_guest_debug.off.debugreg + 8 * i);
    if (libc.ioctlPtr(this.vcpu.fd, KVM.SET_GUEST_DEBUG, b) < 0)
      throw new libc.SysError("KVM_SET_GUEST_DEBUG", libc.errno());
  }

  /** Start a single step (after a STEP resume): SINGLESTEP is set for the next KVM_RUN. */
  beginStep(): void {
    this.stepping = true;
    this.writeGuestDebug();
  }

  /** The step is over: back to the core's own settings. */
  endStep(): void {
    this.stepping = false;
    this.writeGuestDebug();
  }

  /**
   * Count an exit and remember it as the last one; true when it is the exit DBG.EXIT_BREAK asks for (the
   * request is then cleared: it stops once). `at` is the port or GPA of a port or MMIO exit (-1 otherwise).
   */
  noteExit(reason: number, at: number, write: boolean, len: number): boolean {
    const w = this.words;
    w[DBG.EXIT_COUNTS + Math.min(reason, EXIT_COUNT_SLOTS - 1)]++;
    w[DBG.LAST_EXIT] = reason;
    w[DBG.LAST_EXIT_ADDR_LO] = at;
    w[DBG.LAST_EXIT_ADDR_HI] = at < 0 ? -1 : Math.floor(at / 2 ** 32);
    w[DBG.LAST_EXIT_WRITE] = write ? 1 : 0;
    const kind = w[DBG.EXIT_BREAK];
    if (kind === EXIT_BREAK.NONE || !this.armed) return false;
    const arg = readU64(w, DBG.EXIT_BREAK_ARG_LO);
    const hit =
      kind === EXIT_BREAK.REASON
        ? BigInt(reason) === arg
        : kind === EXIT_BREAK.IO
          ? reason === KVM_EXIT.IO && BigInt(at) === arg
          : reason === KVM_EXIT.MMIO && at >= 0 && arg >= BigInt(at) && arg < BigInt(at + Math.max(len, 1));
    if (!hit) return false;
    w[DBG.EXIT_BREAK] = EXIT_BREAK.NONE;
    this.detail({ EXIT_REASON: reason, ADDR_LO: BigInt(Math.max(at, 0)), WRITE: write ? 1 : 0, LEN: len });
    return true;
  }

  /** Exits counted by noteExit since the vCPU started. */
  private exitTotal(): number {
    let n = 0;
    for (let i = 0; i < EXIT_COUNT_SLOTS; i++) n += this.words[DBG.EXIT_COUNTS + i] >>> 0;
    return n;
  }

  /** Whether `linear` is a planted software breakpoint. */
  isPlanted(linear: bigint): boolean {
    const w = this.words;
    const n = Math.min(Atomics.load(w, DBG.BP_COUNT), MAX_SW_BREAKPOINTS);
    for (let i = 0; i < n; i++) if (readU64(w, DBG.BP_TABLE + 2 * i) === linear) return true;
    return false;
  }

  /** Record a stop's details (DETAIL words), before park(). */
  detail(fields: Partial<Record<keyof typeof DETAIL, number | bigint>>): void {
    const w = this.words;
    for (let i = DBG.DETAIL; i < DBG.DETAIL + 32; i++) w[i] = 0;
    for (const [k, v] of Object.entries(fields) as [keyof typeof DETAIL, number | bigint][]) {
      const at = DBG.DETAIL + DETAIL[k];
      if (k === "ADDR_LO" || k === "VALUE_LO") writeU64(w, at, BigInt(v));
      else w[at] = Number(v) | 0;
    }
  }

  /** The access data of an access stop (8 bytes, DETAIL.DATA), for the core. */
  setAccessData(data: Uint8Array): void {
    const bytes = new Uint8Array(
      this.words.buffer,
      this.words.byteOffset + 4 * (DBG.DETAIL + DETAIL.DATA),
      8,
    );
    bytes.fill(0);
    bytes.set(data.subarray(0, 8));
  }

  /**
   * Park the vCPU for `kind`: publish the stop, then serve commands until the core resumes it (clears
   * REQ.PAUSE through `waitResume`, which the run loop provides: it owns the control block). Returns how to go
   * on.
   */
  park(kind: StopKindValue, waitResume: (serve: () => void) => void): Resume {
    const w = this.words;
    const seq = (w[DBG.STOP_SEQ] + 1) | 0;
    // The registers an event carries, read here at once: the core needs no command for them.
    const snap = this.armed && (w[DBG.WANT] & WANT.SNAPSHOT) !== 0;
    w[DBG.SNAP_SEQ] = snap && this.takeSnapshot(kind !== StopKind.REQUESTED) ? seq : 0;
    // The copy is marked as not refreshed: only a KVM_RUN makes it the vCPU's state again.
    if (this.syncRegs) this.vcpu.run.setBigUint64(SYNC_RFLAGS, 0n, true);
    Atomics.store(w, DBG.STOP_KIND, kind);
    Atomics.store(w, DBG.ACTION, ResumeAction.CONTINUE);
    Atomics.store(w, DBG.STOP_SEQ, seq);
    waitResume(() => this.serveCommand());
    const r = { action: Atomics.load(w, DBG.ACTION), arg: readU64(w, DBG.ACTION_ARG_LO) };
    if (this.syncRegs) {
      // KVM copies the registers at the exits to come when an event is likely soon: this resume starts a single
      // step, or events can come (WANT.SYNC_REGS) and this one came within SYNC_REGS_MAX_GAP exits of the last.
      const exits = this.exitTotal();
      const dense = kind !== StopKind.REQUESTED && exits - this.exitsAtEvent <= SYNC_REGS_MAX_GAP;
      if (kind !== StopKind.REQUESTED) this.exitsAtEvent = exits;
      const want =
        this.armed &&
        (w[DBG.WANT] & WANT.SNAPSHOT) !== 0 &&
        (r.action === ResumeAction.STEP || (dense && (w[DBG.WANT] & WANT.SYNC_REGS) !== 0));
      this.vcpu.run.setBigUint64(RUN_SYNC.VALID_REGS, want ? BigInt(RUN_SYNC.VALID_BITS) : 0n, true);
    }
    Atomics.store(w, DBG.STOP_KIND, StopKind.NONE);
    return r;
  }

  /**
   * struct kvm_regs, struct kvm_sregs and the MSRs of DBG.SNAP_MSRS into the snapshot area. KVM_GET_MSRS
   * stops at the first MSR it cannot read: that one is marked unreadable and the rest asked for again.
   * `atExit`: the park comes straight from the exit of the last KVM_RUN (nothing ran in this thread since that
   * could have changed the registers: no exit hook, no command); the registers KVM copied into kvm_run at that
   * exit are then taken, if it did copy them (see park()), instead of two ioctls.
   */
  private takeSnapshot(atExit: boolean): boolean {
    const fd = this.vcpu.fd;
    const s = this.snapshot;
    const run = this.vcpu.run;
    if (this.syncRegs && atExit && (run.getUint32(SYNC_RFLAGS, true) & 2) !== 0)
      s.set(this.vcpu.runBytes.subarray(RUN_SYNC.SYNC, RUN_SYNC.SYNC + SNAPSHOT.MSRS), SNAPSHOT.REGS);
    else {
      if (libc.ioctlPtr(fd, KVM.GET_REGS, s.subarray(SNAPSHOT.REGS, SNAPSHOT.SREGS)) < 0) return false;
      if (libc.ioctlPtr(fd, KVM.GET_SREGS, s.subarray(SNAPSHOT.SREGS, SNAPSHOT.MSRS)) < 0) return false;
    }
    const w = this.words;
    const n = Math.max(0, Math.min(w[DBG.SNAP_MSR_COUNT], MAX_SNAPSHOT_MSRS));
    const out = new DataView(s.buffer, s.byteOffset + SNAPSHOT.MSRS);
    out.setUint32(0, n, true);
    const b = this.snapMsrs;
    const E = kvm_msr_entry.size;
    for (let start = 0; start < n;) {
      b.writeUInt32LE(n - start, kvm_msrs.off.nmsrs);
      for (let i = start; i < n; i++) {
        const at = kvm_msrs.size + (i - start) * E;
        b.writeUInt32LE(w[DBG.SNAP_MSRS + i] >>> 0, at + kvm_msr_entry.off.index);
        b.writeUInt32LE(0, at + kvm_msr_entry.off.reserved);
      }
      const got = Math.max(0, libc.ioctlPtr(fd, KVM.GET_MSRS, b));
      for (let i = 0; i < got; i++) {
        const at = kvm_msrs.size + i * E;
        out.setUint32(8 + (start + i) * 16, b.readUInt32LE(at + kvm_msr_entry.off.index), true);
        out.setUint32(12 + (start + i) * 16, 1, true);
        out.setBigUint64(16 + (start + i) * 16, b.readBigUInt64LE(at + kvm_msr_entry.off.data), true);
      }
      if (start + got < n) {
        out.setUint32(8 + (start + got) * 16, w[DBG.SNAP_MSRS + start + got] >>> 0, true);
        out.setUint32(12 + (start + got) * 16, 0, true); // KVM cannot read it
        out.setBigUint64(16 + (start + got) * 16, 0n, true);
      }
      start += got + 1;
    }
    return true;
  }

  /** Run the command the core posted, if any (called while parked, whenever the block's words change). */
  serveCommand(): void {
    const w = this.words;
    if (Atomics.load(w, DBG.CMD_STATE) !== CMD_STATE.REQUEST) return;
    const op = w[DBG.CMD];
    const nr = w[DBG.CMD_IOCTL] >>> 0;
    const len = w[DBG.CMD_LEN];
    let rc = -libc.EPERM;
    if (ALLOWED_IOCTLS.has(nr) && len >= 0 && len <= this.scratch.length) {
      const r =
        op === CMD.IOCTL_INT
          ? libc.ioctlInt(this.vcpu.fd, nr, len)
          : op === CMD.IOCTL
            ? libc.ioctlPtr(this.vcpu.fd, nr, this.scratch.subarray(0, len))
            : -1;
      rc = r < 0 ? -libc.errno() : r;
      // SET_GUEST_DEBUG issued for the core counts as applied (its settings are in GD_*: keep them in step).
      if (nr === KVM.SET_GUEST_DEBUG && r >= 0) this.appliedSeq = Atomics.load(w, DBG.GD_SEQ);
    }
    w[DBG.CMD_RC] = rc;
    Atomics.store(w, DBG.CMD_STATE, CMD_STATE.DONE);
    Atomics.notify(w, DBG.CMD_STATE);
  }

  /** KVM_GET_MSRS / KVM_SET_MSRS of one MSR on this vCPU (intercepted MSR accesses are completed here). */
  readMsr(index: number): bigint | undefined {
    const b = this.prepareMsr(index, 0n);
    return libc.ioctlPtr(this.vcpu.fd, KVM.GET_MSRS, b) === 1
      ? b.readBigUInt64LE(kvm_msrs.size + kvm_msr_entry.off.data)
      : undefined;
  }

  writeMsr(index: number, value: bigint): boolean {
    return libc.ioctlPtr(this.vcpu.fd, KVM.SET_MSRS, this.prepareMsr(index, value)) === 1;
  }

  private prepareMsr(index: number, value: bigint): Buffer {
    const b = this.msrBuf;
    b.fill(0);
    b.writeUInt32LE(1, kvm_msrs.off.nmsrs);
    b.writeUInt32LE(index >>> 0, kvm_msrs.size + kvm_msr_entry.off.index);
    b.writeBigUInt64LE(BigInt.asUintN(64, value), kvm_msrs.size + kvm_msr_entry.off.data);
    return b;
  }
}

/** kvm_run.msr fields, for the run loop. */
export const RUN_MSR = RUN.msr;
