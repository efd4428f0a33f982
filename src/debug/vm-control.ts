// The VM-control core: everything a debugger or an introspection client needs from a running vmtool VM, in
// one API that the protocols (KVMI in src/introspect/, the GDB stub) share:
//   - stop every vCPU (all-stop) or one, wait until stopped, resume with an action, and why each stopped;
//   - registers of a stopped vCPU (general, segment with hidden parts, control, debug, MSRs, FPU, XSAVE,
//     XCR0, events), read and written by the vCPU's own thread (vcpu-link.ts);
//   - guest memory by physical address, and by virtual address through a stopped vCPU's translation;
//   - software breakpoints (the method of the backend: backend.ts), hardware breakpoints (DR0-DR3), single
//     steps, watchpoints (DR7 where the backend honours it, read-only memory slots where it does not),
//     MSR interception (KVM_X86_SET_MSR_FILTER), page write and read protection (memory slots), exception
//     injection.
// Events (a vCPU that stopped on its own: a breakpoint, a step, an MSR access, a protected page...) come in
// order from nextStop(); the vCPU thread decided on the spot that they are events (no message per ordinary exit).
import * as libc from "../kvm/libc.js";
import { KVM, KVM_GUESTDBG, KVM_MSR_EXIT_REASON, KVM_MSR_FILTER } from "../kvm/ioctls.js";
import { KVM_CAP } from "../kvm/caps.js";
import type { CpuidEntry } from "../kvm/system.js";
import {
  kvm_cpuid2,
  kvm_cpuid_entry2,
  kvm_debugregs,
  kvm_enable_cap,
  kvm_fpu,
  kvm_msr_entry,
  kvm_msr_filter,
  kvm_msr_filter_range,
  kvm_msrs,
  kvm_regs,
  kvm_sregs,
  kvm_vcpu_events,
  kvm_xcrs,
  kvm_xsave,
} from "../kvm/structs.js";
import type { GuestMemory } from "../memory/guest-memory.js";
import {
  decodeEvents,
  decodeRegs,
  decodeSregs,
  encodeEvents,
  encodeRegs,
  encodeSregs,
  type Regs,
  type Sregs,
  type VcpuEvents,
} from "../vm/vcpu-state.js";
import type { Vm } from "../vm/vm.js";
import type { PageAccess } from "../vm/memory-slots.js";
import {
  DBG,
  EXIT_BREAK,
  EXIT_COUNT_SLOTS,
  MAX_SNAPSHOT_MSRS,
  MAX_SW_BREAKPOINTS,
  ResumeAction,
  RUN_SYNC,
  StopKind,
  WANT,
  readU64,
  writeU64,
} from "../vmm/debug-block.js";
import type { RunningMachine } from "../vmm/machine.js";
import { debugMethods, detectBackend, type Backend, type DebugMethods } from "./backend.js";
import { VmControlError, VmControlUnsupported } from "./errors.js";
import { VcpuLink, type StopInfo } from "./vcpu-link.js";
import {
  pagingFeatures,
  pagingState,
  translate as translateLinear,
  walk,
  type PagingFeatures,
  type PagingState,
  type Walk,
} from "./paging.js";

export { ResumeAction, StopKind, type StopInfo };

/** Debug registers of a stopped vCPU as KVM_GET_DEBUGREGS gives them. */
export interface DebugRegs {
  db: bigint[];
  dr6: bigint;
  dr7: bigint;
}

/** A software breakpoint: where it is and the byte it replaced. */
interface SwBreakpoint {
  linear: bigint;
  gpa: number;
  original: number;
}

/** What a hardware breakpoint slot watches. */
export type HwKind = "exec" | "write" | "access";

interface HwBreakpoint {
  linear: bigint;
  kind: HwKind;
  len: 1 | 2 | 4 | 8;
}

/** A watch on guest-physical bytes (the page-protection way), with who asked. */
export interface PageWatch {
  gpa: number;
  len: number;
  access: "write" | "access";
}

/** Most MSRs one filter can intercept (16 ranges of KVM_X86_SET_MSR_FILTER, one MSR each). */
export const MAX_INTERCEPTED_MSRS = 16;
/** Stops that wait to be taken (each vCPU parks at most once at a time, so this is only a safety bound). */
const MAX_QUEUED_STOPS = 1024;

export interface VmControlOptions {
  /** Which KVM backend runs the VM (default: detected from /sys/module). */
  backend?: Backend;
}

export class VmControl {
  readonly vcpus: VcpuLink[];
  readonly vm: Vm;
  readonly memory: GuestMemory;
  readonly backend: Backend;
  readonly methods: DebugMethods;
  private readonly swBreakpoints = new Map<bigint, SwBreakpoint>();
  private readonly pagingFeatures = new Map<number, PagingFeatures>();
  private readonly hw: (HwBreakpoint | undefined)[] = [undefined, undefined, undefined, undefined];
  private readonly msrIntercepts = new Map<number, { read: boolean; write: boolean }>();
  private userSpaceMsrEnabled = false;
  private int3 = false;
  private snapshotExtra: readonly number[] = [];
  private readonly stops: StopInfo[] = [];
  private stopWaiters: ((s: StopInfo | undefined) => void)[] = [];
  private closed = false;
  /**
   * The in-kernel PIT's state taken when every vCPU is parked, loaded back when one goes on: while the guest
   * is stopped the PIT keeps counting, and KVM would re-inject every tick missed meanwhile in a burst (as QEMU
   * does at a VM stop and start).
   */
  private frozenPit: Buffer | undefined;

  /** Each vCPU's struct kvm_run (for its sync-regs request: RUN_SYNC). */
  private readonly runs: DataView[];
  /** KVM can copy registers and segment registers into kvm_run at each exit (KVM_CAP_SYNC_REGS). */
  private readonly syncRegs: boolean;

  constructor(machine: RunningMachine, opts: VmControlOptions = {}) {
    this.vm = machine.vm;
    this.runs = machine.vcpus.map((v) => v.vcpu.run);
    const bits = machine.vm.kvm.checkExtension("SYNC_REGS");
    this.syncRegs = bits > 0 && (bits & RUN_SYNC.VALID_BITS) === RUN_SYNC.VALID_BITS;
    this.memory = machine.vm.memory;
    this.vcpus = machine.vcpus.map((v, i) => new VcpuLink(i, v.control, v.debug));
    this.backend = opts.backend ?? detectBackend();
    this.methods = debugMethods(this.backend);
    for (const v of this.vcpus) {
      Atomics.or(v.words, DBG.WANT, WANT.SNAPSHOT);
      Atomics.store(v.words, DBG.ARMED, 1);
    }
  }

  /**
   * MSRs each vCPU reads at every park, with its registers, before it says it parked (besides the intercepted
   * MSRs, always read): an event's state then costs no command to the parked vCPU.
   */
  set snapshotMsrs(list: readonly number[]) {
    this.snapshotExtra = [...list];
    this.publishSnapshotMsrs();
  }

  private publishSnapshotMsrs(): void {
    const list = [...new Set([...this.snapshotExtra, ...this.msrIntercepts.keys()])].slice(
      0,
      MAX_SNAPSHOT_MSRS,
    );
    for (const v of this.vcpus) {
      // Count 0 first: a vCPU parking meanwhile reads no half-written list.
      Atomics.store(v.words, DBG.SNAP_MSR_COUNT, 0);
      list.forEach((m, i) => (v.words[DBG.SNAP_MSRS + i] = m | 0));
      Atomics.store(v.words, DBG.SNAP_MSR_COUNT, list.length);
    }
  }

  /**
   * Whether anything that makes events is set (MSR interception, software or hardware breakpoints, INT3
   * catching, page protection): while it is, a vCPU whose events come close together has KVM copy its
   * registers into kvm_run at every exit, so that an event's snapshot costs no ioctl for them (RUN_SYNC; the
   * vCPU decides at its parks); when nothing is set, the copying, which costs every exit a little, is stopped
   * here for running vCPUs too.
   */
  private publishEventSources(): void {
    const on =
      this.syncRegs &&
      !this.closed &&
      this.vcpus.some((v) => Atomics.load(v.words, DBG.ARMED) !== 0) &&
      (this.msrIntercepts.size > 0 ||
        this.swBreakpoints.size > 0 ||
        this.int3 ||
        this.hw.some((h) => h !== undefined) ||
        this.vm.slots.anyProtected);
    for (const [i, v] of this.vcpus.entries()) {
      if (on) Atomics.or(v.words, DBG.WANT, WANT.SYNC_REGS);
      else {
        Atomics.and(v.words, DBG.WANT, ~WANT.SYNC_REGS);
        this.runs[i].setBigUint64(RUN_SYNC.VALID_REGS, 0n, true);
      }
    }
  }

  // ---- Events and stops ----

  /**
   * Called for every park of a vCPU (runMachine's onPaused): an event of the vCPU's own (a breakpoint...) is
   * queued for nextStop(); a park asked for by pause() is not an event.
   */
  onPaused(index: number, kind: number): void {
    if (this.closed) return;
    const link = this.vcpus[index];
    link.parkedAgain();
    if (kind === StopKind.REQUESTED) return; // pause() (or a page-access change, which resumes at once)
    this.freezeClocks();
    if (this.stops.length >= MAX_QUEUED_STOPS) return;
    const stop = link.stopInfo();
    const waiter = this.stopWaiters.shift();
    if (waiter) waiter(stop);
    else if (this.stopListener) this.stopListener(stop);
    else this.stops.push(stop);
  }

  private stopListener: ((stop: StopInfo) => void) | undefined;

  /**
   * Hand every event stop to `listener` as the vCPU reports it, with no promise in between (those already
   * queued first); nextStop() callers still take theirs first. undefined stops it: stops are queued again.
   */
  onStop(listener: ((stop: StopInfo) => void) | undefined): void {
    this.stopListener = listener;
    for (let s = this.stops.shift(); s && listener && this.stopListener === listener; s = this.stops.shift())
      listener(s);
  }

  /** The next event stop, in order; undefined once the control is closed (the run ended, or detach). */
  nextStop(): Promise<StopInfo | undefined> {
    const s = this.stops.shift();
    if (s) return Promise.resolve(s);
    if (this.closed) return Promise.resolve(undefined);
    return new Promise((resolve) => this.stopWaiters.push(resolve));
  }

  /** Stops already queued (taken by nextStop only). */
  get pendingStops(): number {
    return this.stops.length;
  }

  /** Stop vCPU `index`, or every vCPU (all-stop); resolves once they are parked. */
  async pause(index?: number): Promise<void> {
    const list = index === undefined ? this.vcpus : [this.link(index)];
    await Promise.all(list.map((v) => v.pause()));
    this.freezeClocks();
  }

  /** Let vCPU `index` (or every parked vCPU) go on. */
  resume(index?: number, action: number = ResumeAction.CONTINUE, arg = 0n): void {
    const list = index === undefined ? this.vcpus : [this.link(index)];
    this.thawClocks();
    for (const v of list) v.resume(action, arg);
  }

  /** Execute one instruction on `index`, which is parked; the SINGLESTEP stop comes through nextStop(). */
  step(index: number, allowInterrupts = false): void {
    const v = this.parkedLink(index, "step");
    v.words[DBG.STEP_FLAGS] = allowInterrupts ? 1 : 0;
    this.thawClocks();
    v.resume(ResumeAction.STEP);
  }

  /** Every vCPU parked: take the PIT's state (once), see frozenPit. */
  private freezeClocks(): void {
    if (!this.vm.pit || this.frozenPit || this.closed || !this.vcpus.every((v) => v.parked)) return;
    try {
      this.frozenPit = this.vm.getPitState();
    } catch {
      // The VM is being torn down: nothing to keep.
    }
  }

  /** A vCPU goes on: the PIT's state from the stop is loaded back, its missed ticks dropped. */
  private thawClocks(): void {
    const state = this.frozenPit;
    this.frozenPit = undefined;
    if (!state) return;
    try {
      this.vm.setPitState(state);
    } catch {
      // The VM is being torn down.
    }
  }

  /**
   * Whether every INT3 the guest runs stops its vCPU (StopKind.INT3), not only the core's planted
   * breakpoints: an introspection tool plants its own 0xCC bytes.
   */
  set catchInt3(on: boolean) {
    this.int3 = on;
    for (const v of this.vcpus) {
      if (on) Atomics.or(v.words, DBG.WANT, WANT.INT3);
      else Atomics.and(v.words, DBG.WANT, ~WANT.INT3);
    }
    this.updateGuestDebug();
  }

  get catchInt3(): boolean {
    return this.int3;
  }

  /**
   * Park the vCPU that makes the next exit of a kind (StopKind.EXIT, once; the first vCPU to make it): a port
   * exit at port `arg`, an MMIO exit that covers GPA `arg`, or an exit with KVM exit reason `arg`. A port or
   * MMIO instruction has completed when the vCPU parks. EXIT_BREAK.NONE cancels.
   */
  breakOnExit(kind: (typeof EXIT_BREAK)[keyof typeof EXIT_BREAK], arg = 0n): void {
    for (const v of this.vcpus) {
      Atomics.store(v.words, DBG.EXIT_BREAK, EXIT_BREAK.NONE);
      writeU64(v.words, DBG.EXIT_BREAK_ARG_LO, arg);
      Atomics.store(v.words, DBG.EXIT_BREAK, kind);
    }
  }

  /** Cancel the request of breakOnExit on every vCPU once one of them made that exit. */
  exitBreakTaken(): void {
    this.breakOnExit(EXIT_BREAK.NONE);
  }

  /**
   * A vCPU's exits by KVM exit reason since it started (reasons of EXIT_COUNT_SLOTS - 1 and higher counted
   * together), and its last exit. Exact while the vCPU is parked; a running vCPU's counts move on.
   */
  exitCounts(index: number): {
    counts: Map<number, number>;
    last: { reason: number; addr: bigint | undefined; write: boolean } | undefined;
  } {
    const w = this.link(index).words;
    const counts = new Map<number, number>();
    for (let r = 0; r < EXIT_COUNT_SLOTS; r++) {
      const n = w[DBG.EXIT_COUNTS + r] >>> 0;
      if (n) counts.set(r, n);
    }
    const total = [...counts.values()].reduce((a, b) => a + b, 0);
    const hi = w[DBG.LAST_EXIT_ADDR_HI];
    const last =
      total === 0
        ? undefined
        : {
            reason: w[DBG.LAST_EXIT],
            addr: hi === -1 ? undefined : readU64(w, DBG.LAST_EXIT_ADDR_LO),
            write: w[DBG.LAST_EXIT_WRITE] !== 0,
          };
    return { counts, last };
  }

  /** Whether a fault (triple fault, emulation failure) parks the vCPU for inspection instead of ending the run. */
  set stopOnFault(on: boolean) {
    for (const v of this.vcpus) {
      if (on) Atomics.or(v.words, DBG.WANT, WANT.FAULT);
      else Atomics.and(v.words, DBG.WANT, ~WANT.FAULT);
    }
  }

  link(index: number): VcpuLink {
    const v = this.vcpus[index] as VcpuLink | undefined;
    if (!v) throw new VmControlError(`no vCPU ${index} (the VM has ${this.vcpus.length})`);
    return v;
  }

  private parkedLink(index: number, what: string): VcpuLink {
    const v = this.link(index);
    if (!v.parked) throw new VmControlError(`vCPU ${index} is not stopped: ${what} needs it stopped`);
    return v;
  }

  // ---- Registers ----

  async regs(index: number): Promise<Regs> {
    const snap = this.link(index).snapshot();
    if (snap) return decodeRegs(snap.regs);
    const b = Buffer.alloc(kvm_regs.size);
    await this.parkedLink(index, "reading registers").ioctl(KVM.GET_REGS, b, "KVM_GET_REGS");
    return decodeRegs(b);
  }

  async setRegs(index: number, regs: Partial<Regs>): Promise<void> {
    const b = Buffer.alloc(kvm_regs.size);
    encodeRegs({ ...(await this.regs(index)), ...regs }, b);
    await this.link(index).ioctl(KVM.SET_REGS, b, "KVM_SET_REGS");
  }

  /** struct kvm_regs and struct kvm_sregs as KVM gives them (protocols that carry the kernel's structs). */
  async rawRegs(index: number): Promise<{ regs: Buffer; sregs: Buffer }> {
    const v = this.parkedLink(index, "reading registers");
    const snap = v.snapshot();
    if (snap) return { regs: Buffer.from(snap.regs), sregs: Buffer.from(snap.sregs) };
    const regs = Buffer.alloc(kvm_regs.size);
    const sregs = Buffer.alloc(kvm_sregs.size);
    await v.ioctl(KVM.GET_REGS, regs, "KVM_GET_REGS");
    await v.ioctl(KVM.GET_SREGS, sregs, "KVM_GET_SREGS");
    return { regs, sregs };
  }

  /** Set struct kvm_regs as given. */
  async setRawRegs(index: number, regs: Uint8Array): Promise<void> {
    if (regs.length !== kvm_regs.size)
      throw new VmControlError(`kvm_regs is ${kvm_regs.size} bytes, not ${regs.length}`);
    await this.parkedLink(index, "writing registers").ioctl(KVM.SET_REGS, Buffer.from(regs), "KVM_SET_REGS");
  }

  /** The vCPU's CPUID table (KVM_GET_CPUID2). */
  async cpuid(index: number): Promise<CpuidEntry[]> {
    const max = 256;
    const b = Buffer.alloc(kvm_cpuid2.size + max * kvm_cpuid_entry2.size);
    b.writeUInt32LE(max, kvm_cpuid2.off.nent);
    await this.parkedLink(index, "reading CPUID").ioctl(KVM.GET_CPUID2, b, "KVM_GET_CPUID2");
    const n = b.readUInt32LE(kvm_cpuid2.off.nent);
    const o = kvm_cpuid_entry2.off;
    return Array.from({ length: n }, (_, i) => {
      const at = kvm_cpuid2.size + i * kvm_cpuid_entry2.size;
      return {
        function: b.readUInt32LE(at + o.function),
        index: b.readUInt32LE(at + o.index),
        flags: b.readUInt32LE(at + o.flags),
        eax: b.readUInt32LE(at + o.eax),
        ebx: b.readUInt32LE(at + o.ebx),
        ecx: b.readUInt32LE(at + o.ecx),
        edx: b.readUInt32LE(at + o.edx),
      };
    });
  }

  async sregs(index: number): Promise<Sregs> {
    const snap = this.link(index).snapshot();
    if (snap) return decodeSregs(snap.sregs);
    const b = Buffer.alloc(kvm_sregs.size);
    await this.parkedLink(index, "reading segment registers").ioctl(KVM.GET_SREGS, b, "KVM_GET_SREGS");
    return decodeSregs(b);
  }

  async setSregs(index: number, s: Sregs): Promise<void> {
    const b = Buffer.alloc(kvm_sregs.size);
    encodeSregs(s, b);
    await this.parkedLink(index, "writing segment registers").ioctl(KVM.SET_SREGS, b, "KVM_SET_SREGS");
  }

  async vcpuEvents(index: number): Promise<VcpuEvents> {
    const b = Buffer.alloc(kvm_vcpu_events.size);
    await this.parkedLink(index, "reading events").ioctl(KVM.GET_VCPU_EVENTS, b, "KVM_GET_VCPU_EVENTS");
    return decodeEvents(b);
  }

  async setVcpuEvents(index: number, ev: VcpuEvents): Promise<void> {
    const b = Buffer.alloc(kvm_vcpu_events.size);
    encodeEvents(ev, b);
    await this.parkedLink(index, "writing events").ioctl(KVM.SET_VCPU_EVENTS, b, "KVM_SET_VCPU_EVENTS");
  }

  async debugRegs(index: number): Promise<DebugRegs> {
    const b = Buffer.alloc(kvm_debugregs.size);
    await this.parkedLink(index, "reading debug registers").ioctl(KVM.GET_DEBUGREGS, b, "KVM_GET_DEBUGREGS");
    const o = kvm_debugregs.off;
    return {
      db: [0, 1, 2, 3].map((i) => b.readBigUInt64LE(o.db + 8 * i)),
      dr6: b.readBigUInt64LE(o.dr6),
      dr7: b.readBigUInt64LE(o.dr7),
    };
  }

  /** Write the debug registers of a stopped vCPU (the guest's own DR0-DR3, DR6, DR7). */
  async setDebugRegs(index: number, d: DebugRegs): Promise<void> {
    const b = Buffer.alloc(kvm_debugregs.size);
    const o = kvm_debugregs.off;
    d.db.forEach((v, i) => b.writeBigUInt64LE(BigInt.asUintN(64, v), o.db + 8 * i));
    b.writeBigUInt64LE(BigInt.asUintN(64, d.dr6), o.dr6);
    b.writeBigUInt64LE(BigInt.asUintN(64, d.dr7), o.dr7);
    await this.parkedLink(index, "writing debug registers").ioctl(KVM.SET_DEBUGREGS, b, "KVM_SET_DEBUGREGS");
  }

  /** MSR values (an MSR KVM does not know is left out of the result). */
  async msrs(index: number, indices: readonly number[]): Promise<Map<number, bigint>> {
    const out = new Map<number, bigint>();
    if (indices.length === 0) return out;
    const snap = this.link(index).snapshot();
    if (snap && indices.every((i) => snap.msrs.has(i))) {
      for (const i of indices) {
        const v = snap.msrs.get(i);
        if (v !== undefined) out.set(i, v);
      }
      return out;
    }
    const b = Buffer.alloc(kvm_msrs.size + indices.length * kvm_msr_entry.size);
    b.writeUInt32LE(indices.length, kvm_msrs.off.nmsrs);
    indices.forEach((idx, i) => b.writeUInt32LE(idx >>> 0, kvm_msrs.size + i * kvm_msr_entry.size));
    // KVM_GET_MSRS stops at the first MSR it cannot read and returns how many it read: ask again past it.
    let start = 0;
    while (start < indices.length) {
      const part = Buffer.alloc(kvm_msrs.size + (indices.length - start) * kvm_msr_entry.size);
      part.writeUInt32LE(indices.length - start, kvm_msrs.off.nmsrs);
      b.copy(part, kvm_msrs.size, kvm_msrs.size + start * kvm_msr_entry.size);
      const n = await this.parkedLink(index, "reading MSRs").ioctl(KVM.GET_MSRS, part, "KVM_GET_MSRS");
      for (let i = 0; i < n; i++) {
        const at = kvm_msrs.size + i * kvm_msr_entry.size;
        out.set(
          part.readUInt32LE(at + kvm_msr_entry.off.index),
          part.readBigUInt64LE(at + kvm_msr_entry.off.data),
        );
      }
      start += n + 1; // skip the one it could not read
    }
    return out;
  }

  async setMsr(index: number, msr: number, value: bigint): Promise<void> {
    const b = Buffer.alloc(kvm_msrs.size + kvm_msr_entry.size);
    b.writeUInt32LE(1, kvm_msrs.off.nmsrs);
    b.writeUInt32LE(msr >>> 0, kvm_msrs.size + kvm_msr_entry.off.index);
    b.writeBigUInt64LE(BigInt.asUintN(64, value), kvm_msrs.size + kvm_msr_entry.off.data);
    const n = await this.parkedLink(index, "writing an MSR").ioctl(KVM.SET_MSRS, b, "KVM_SET_MSRS");
    if (n !== 1)
      throw new VmControlError(`MSR 0x${msr.toString(16)}: KVM refused the value 0x${value.toString(16)}`);
  }

  /** struct kvm_fpu (x87, SSE registers, MXCSR), raw. */
  async fpu(index: number): Promise<Buffer> {
    const b = Buffer.alloc(kvm_fpu.size);
    await this.parkedLink(index, "reading the FPU").ioctl(KVM.GET_FPU, b, "KVM_GET_FPU");
    return b;
  }

  /** Write struct kvm_fpu (as fpu() reads it). */
  async setFpu(index: number, area: Uint8Array): Promise<void> {
    if (area.length !== kvm_fpu.size)
      throw new VmControlError(`struct kvm_fpu is ${kvm_fpu.size} bytes, not ${area.length}`);
    await this.parkedLink(index, "writing the FPU").ioctl(KVM.SET_FPU, Buffer.from(area), "KVM_SET_FPU");
  }

  /** The 4096-byte XSAVE area (struct kvm_xsave), raw. */
  async xsave(index: number): Promise<Buffer> {
    const b = Buffer.alloc(kvm_xsave.size);
    await this.parkedLink(index, "reading XSAVE").ioctl(KVM.GET_XSAVE, b, "KVM_GET_XSAVE");
    return b;
  }

  async setXsave(index: number, area: Uint8Array): Promise<void> {
    if (area.length !== kvm_xsave.size)
      throw new VmControlError(`an XSAVE area is ${kvm_xsave.size} bytes, not ${area.length}`);
    await this.parkedLink(index, "writing XSAVE").ioctl(KVM.SET_XSAVE, Buffer.from(area), "KVM_SET_XSAVE");
  }

  /** XCR0 (the only XCR KVM has). */
  async xcr0(index: number): Promise<bigint> {
    const b = Buffer.alloc(kvm_xcrs.size);
    await this.parkedLink(index, "reading XCR0").ioctl(KVM.GET_XCRS, b, "KVM_GET_XCRS");
    const n = b.readUInt32LE(kvm_xcrs.off.nr_xcrs);
    for (let i = 0; i < n; i++) {
      const at = kvm_xcrs.off.xcrs + 16 * i;
      if (b.readUInt32LE(at) === 0) return b.readBigUInt64LE(at + 8);
    }
    return 1n; // x87 only: what XCR0 is when XSAVE is not enabled
  }

  async mpState(index: number): Promise<number> {
    const b = Buffer.alloc(4);
    await this.parkedLink(index, "reading the MP state").ioctl(KVM.GET_MP_STATE, b, "KVM_GET_MP_STATE");
    return b.readUInt32LE(0);
  }

  /** The vCPU's TSC frequency in Hz. */
  async tscHz(index: number): Promise<number> {
    const khz = await this.parkedLink(index, "reading the TSC rate").ioctlInt(
      KVM.GET_TSC_KHZ,
      0,
      "KVM_GET_TSC_KHZ",
    );
    return khz * 1000;
  }

  // ---- Memory ----

  get ramSize(): number {
    return this.vm.memSize;
  }

  /**
   * Where another process on this host can map guest RAM: this process's id and the memfd's number
   * (/proc/PID/fd/FD), or undefined when RAM is anonymous memory (VmOptions.sharedRam).
   */
  ramMapping(): { pid: number; fd: number; size: number } | undefined {
    const fd = this.vm.ramFd;
    return fd === undefined ? undefined : { pid: process.pid, fd, size: this.vm.memSize };
  }

  /** Guest-physical bytes, planted breakpoint bytes shown as the guest's own. Throws outside RAM. */
  readPhys(gpa: number, len: number): Uint8Array {
    const bytes = new Uint8Array(len);
    this.readPhysInto(gpa, len, bytes, 0);
    return bytes;
  }

  /** readPhys() into `out` at `at`, with no buffer of its own. */
  readPhysInto(gpa: number, len: number, out: Uint8Array, at: number): void {
    this.checkRange(gpa, len);
    out.set(this.memory.slice(gpa, len), at);
    for (const bp of this.swBreakpoints.values())
      if (bp.gpa >= gpa && bp.gpa < gpa + len) out[at + bp.gpa - gpa] = bp.original;
  }

  /** Write guest-physical bytes; a planted breakpoint stays planted (the new byte is what it hides). */
  writePhys(gpa: number, data: Uint8Array): void {
    this.checkRange(gpa, data.length);
    this.memory.write(gpa, data);
    for (const bp of this.swBreakpoints.values())
      if (bp.gpa >= gpa && bp.gpa < gpa + data.length) {
        bp.original = data[bp.gpa - gpa];
        this.memory.write(bp.gpa, Uint8Array.of(this.methods.breakpointByte));
      }
  }

  private checkRange(gpa: number, len: number): void {
    if (this.closed) throw new VmControlError("the VM has ended");
    if (
      !Number.isSafeInteger(gpa) ||
      !Number.isSafeInteger(len) ||
      gpa < 0 ||
      len < 0 ||
      gpa + len > this.ramSize
    )
      throw new VmControlError(
        `guest-physical 0x${gpa.toString(16)}+0x${len.toString(16)} is not inside guest RAM (0x${this.ramSize.toString(16)} bytes)`,
      );
  }

  /**
   * The paging state of parked vCPU `index`: its control registers, CPL and RFLAGS.AC, and CPUID's paging
   * features (read once per vCPU: CPUID is the VMM's, the guest cannot change it).
   */
  async pagingState(index: number): Promise<PagingState> {
    const sregs = await this.sregs(index);
    const { rflags } = await this.regs(index);
    let features = this.pagingFeatures.get(index);
    if (!features) {
      features = pagingFeatures(await this.cpuid(index));
      this.pagingFeatures.set(index, features);
    }
    return pagingState(sregs, rflags, features);
  }

  /**
   * The walk of `linear` through vCPU `index`'s page tables, level by level (src/debug/paging.ts). It only
   * reads: KVM_TRANSLATE would set the Accessed bits of the entries it walks, and a debugger must not.
   */
  async walk(index: number, linear: bigint): Promise<Walk> {
    return walk(await this.pagingState(index), linear, this.memory);
  }

  /** The GPA of `linear` through vCPU `index`'s paging, or undefined when it is not mapped. */
  async translate(index: number, linear: bigint): Promise<bigint | undefined> {
    const t = translateLinear(await this.pagingState(index), linear, this.memory);
    return t.ok ? t.gpa : undefined;
  }

  /** Bytes at linear address `linear` of vCPU `index`, page by page through its translation. */
  async readVirt(index: number, linear: bigint, len: number): Promise<Uint8Array> {
    const out = new Uint8Array(len);
    await this.eachPage(index, linear, len, (gpa, done, n) => out.set(this.readPhys(gpa, n), done));
    return out;
  }

  async writeVirt(index: number, linear: bigint, data: Uint8Array): Promise<void> {
    await this.eachPage(index, linear, data.length, (gpa, done, n) =>
      this.writePhys(gpa, data.subarray(done, done + n)),
    );
  }

  /** Call `fn(gpa, offset, n)` for each page-sized piece of [linear, linear + len), all translated first. */
  private async eachPage(
    index: number,
    linear: bigint,
    len: number,
    fn: (gpa: number, offset: number, n: number) => void,
  ): Promise<void> {
    const state = await this.pagingState(index);
    const pieces: [number, number, number][] = [];
    for (let done = 0; done < len;) {
      const at = BigInt.asUintN(64, linear + BigInt(done));
      const t = translateLinear(state, at, this.memory);
      if (!t.ok) throw new VmControlError(`linear address 0x${at.toString(16)}: ${t.message}`);
      const n = Math.min(len - done, 4096 - Number(at & 0xfffn));
      pieces.push([Number(t.gpa), done, n]);
      done += n;
    }
    for (const [gpa, done, n] of pieces) fn(gpa, done, n);
  }

  // ---- Breakpoints and watchpoints ----

  /** Plant a software breakpoint at `linear` (translated through vCPU `index`, which is stopped). */
  async addSwBreakpoint(linear: bigint, index = 0): Promise<void> {
    if (this.swBreakpoints.has(linear)) return;
    if (this.swBreakpoints.size >= MAX_SW_BREAKPOINTS)
      throw new VmControlError(`at most ${MAX_SW_BREAKPOINTS} software breakpoints`);
    const gpa = await this.translate(index, linear);
    if (gpa === undefined)
      throw new VmControlError(`breakpoint at 0x${linear.toString(16)}: the address is not mapped`);
    const g = Number(gpa);
    this.checkRange(g, 1);
    const original = this.memory.read(g, 1)[0];
    this.swBreakpoints.set(linear, { linear, gpa: g, original });
    this.memory.write(g, Uint8Array.of(this.methods.breakpointByte));
    this.publishSwBreakpoints();
  }

  removeSwBreakpoint(linear: bigint): boolean {
    const bp = this.swBreakpoints.get(linear);
    if (!bp) return false;
    this.memory.write(bp.gpa, Uint8Array.of(bp.original));
    this.swBreakpoints.delete(linear);
    this.publishSwBreakpoints();
    return true;
  }

  hasSwBreakpoint(linear: bigint): boolean {
    return this.swBreakpoints.has(linear);
  }

  /** The breakpoint table in every vCPU's block, and USE_SW_BP where the backend reports them as debug exits. */
  private publishSwBreakpoints(): void {
    const list = [...this.swBreakpoints.keys()];
    for (const v of this.vcpus) {
      list.forEach((a, i) => writeU64(v.words, DBG.BP_TABLE + 2 * i, a));
      Atomics.store(v.words, DBG.BP_COUNT, list.length);
    }
    this.updateGuestDebug();
  }

  /**
   * Step vCPU `index` (stopped at a software breakpoint) over it: the guest's byte is put back for one
   * instruction, then the breakpoint is planted again. Resolves with the SINGLESTEP stop.
   */
  async stepOverBreakpoint(index: number): Promise<StopInfo | undefined> {
    const s = await this.sregs(index);
    const rip = (await this.regs(index)).rip;
    const at = BigInt.asUintN(64, s.cs.base + rip);
    const bp = this.swBreakpoints.get(at);
    if (bp) this.memory.write(bp.gpa, Uint8Array.of(bp.original));
    this.step(index);
    const stop = await this.nextStopOf(index);
    if (bp && this.swBreakpoints.get(at) === bp)
      this.memory.write(bp.gpa, Uint8Array.of(this.methods.breakpointByte));
    return stop;
  }

  /** The next stop of vCPU `index` (other vCPUs' stops stay queued, in order). */
  private async nextStopOf(index: number): Promise<StopInfo | undefined> {
    const held: StopInfo[] = [];
    try {
      for (;;) {
        const s = await this.nextStop();
        if (!s || s.vcpu === index) return s;
        held.push(s);
      }
    } finally {
      this.stops.unshift(...held);
    }
  }

  /** Set hardware breakpoint slot `slot` (0-3) on every vCPU: an execute breakpoint or a data watchpoint. */
  setHwBreakpoint(slot: number, linear: bigint, kind: HwKind = "exec", len: 1 | 2 | 4 | 8 = 1): void {
    if (!Number.isInteger(slot) || slot < 0 || slot > 3)
      throw new VmControlError(`no debug register DR${slot}`);
    if (kind !== "exec" && !this.methods.dataWatchpointsInDr7)
      throw new VmControlUnsupported(
        `${this.backend} never fires DR7 data watchpoints: watch guest-physical pages instead (read-only memory slots)`,
      );
    this.hw[slot] = { linear, kind, len: kind === "exec" ? 1 : len };
    this.updateGuestDebug();
  }

  clearHwBreakpoint(slot: number): void {
    this.hw[slot] = undefined;
    this.updateGuestDebug();
  }

  /** A free DR slot, or undefined when all four are used. */
  freeHwSlot(): number | undefined {
    const i = this.hw.findIndex((h) => h === undefined);
    return i < 0 ? undefined : i;
  }

  /** GD_CONTROL and DR0-DR7 from the breakpoints, into every vCPU's block; the vCPUs apply them. */
  private updateGuestDebug(): void {
    let dr7 = 0n;
    const regs = [0n, 0n, 0n, 0n];
    this.hw.forEach((h, i) => {
      if (!h) return;
      regs[i] = h.linear;
      const rw = h.kind === "exec" ? 0n : h.kind === "write" ? 1n : 3n;
      const len = h.len === 1 ? 0n : h.len === 2 ? 1n : h.len === 8 ? 2n : 3n;
      dr7 |= (2n << BigInt(2 * i)) | (rw << BigInt(16 + 4 * i)) | (len << BigInt(18 + 4 * i));
    });
    let control = 0;
    if (dr7 !== 0n) {
      dr7 |= 0x600n; // GE and the always-set bit 10, as QEMU and Cloud Hypervisor write it
      control |= KVM_GUESTDBG.ENABLE | KVM_GUESTDBG.USE_HW_BP;
    }
    if (this.methods.swBreakpointAsDebugExit && (this.swBreakpoints.size > 0 || this.int3))
      control |= KVM_GUESTDBG.ENABLE | KVM_GUESTDBG.USE_SW_BP;
    for (const v of this.vcpus) {
      v.words[DBG.GD_CONTROL] = control;
      regs.forEach((r, i) => writeU64(v.words, DBG.GD_REGS + 2 * i, r));
      writeU64(v.words, DBG.GD_REGS + 2 * 6, 0n);
      writeU64(v.words, DBG.GD_REGS + 2 * 7, dr7);
      v.syncGuestDebug();
    }
    this.publishEventSources();
  }

  /** Protect guest-physical pages (whole pages) against writes ("r") or every access ("none"), or lift it. */
  async protectPages(gpa: number, len: number, access: PageAccess): Promise<void> {
    await this.changePageAccess([{ gpa, len, access }]);
  }

  /** Several protections at once (all checked first), with one park of the running vCPUs. */
  async changePageAccess(
    changes: readonly { gpa: number; len: number; access: PageAccess }[],
  ): Promise<void> {
    for (const c of changes) this.checkRange(c.gpa, c.len);
    await this.withRunningParked(() => {
      for (const c of changes) this.vm.slots.setAccess(c.gpa, c.len, c.access);
    });
    this.publishEventSources();
  }

  /**
   * Run `change` with every running vCPU parked, then let those go on. KVM cannot resize a memory slot: a
   * protection change deletes slots and adds others, and a vCPU that touched RAM in between would find no
   * slot behind it (an MMIO exit for RAM on SVM and VMX, a page fault injected into the guest on kvm_pvm).
   * A vCPU that parked on an event of its own meanwhile stays parked: its event is queued.
   */
  private async withRunningParked(change: () => void): Promise<void> {
    const running = this.vcpus.filter((v) => !v.parked && !v.stopped);
    await Promise.all(running.map((v) => v.pause()));
    try {
      change();
    } finally {
      for (const v of running) if (v.stopKind === StopKind.REQUESTED) v.resume();
    }
  }

  pageAccess(gpa: number): PageAccess {
    return this.vm.slots.access(gpa);
  }

  // ---- MSR interception ----

  /**
   * Intercept the guest's writes (and, if asked, reads) of `msr`: each becomes an MSR stop, completed as the
   * resume action says (the guest's value, another value, or #GP). At most MAX_INTERCEPTED_MSRS at once.
   */
  interceptMsr(msr: number, opts: { write?: boolean; read?: boolean } = { write: true }): void {
    const next = new Map(this.msrIntercepts);
    if (!opts.write && !opts.read) next.delete(msr);
    else next.set(msr, { write: opts.write ?? false, read: opts.read ?? false });
    if (next.size > MAX_INTERCEPTED_MSRS)
      throw new VmControlError(`at most ${MAX_INTERCEPTED_MSRS} MSRs can be intercepted at once`);
    this.enableUserSpaceMsr();
    this.applyMsrFilter(next);
    this.msrIntercepts.clear();
    for (const [k, v] of next) this.msrIntercepts.set(k, v);
    this.publishSnapshotMsrs();
    this.publishEventSources();
  }

  get interceptedMsrs(): ReadonlyMap<number, { read: boolean; write: boolean }> {
    return this.msrIntercepts;
  }

  private enableUserSpaceMsr(): void {
    if (this.userSpaceMsrEnabled) return;
    if (
      this.vm.kvm.checkExtension("X86_USER_SPACE_MSR") === 0 ||
      this.vm.kvm.checkExtension("X86_MSR_FILTER") === 0
    )
      throw new VmControlUnsupported(
        "this KVM cannot hand MSR accesses to user space (KVM_CAP_X86_USER_SPACE_MSR)",
      );
    const b = Buffer.alloc(kvm_enable_cap.size);
    b.writeUInt32LE(KVM_CAP.X86_USER_SPACE_MSR, kvm_enable_cap.off.cap);
    b.writeBigUInt64LE(BigInt(KVM_MSR_EXIT_REASON.FILTER), kvm_enable_cap.off.args);
    if (libc.ioctlPtr(this.vm.fd, KVM.ENABLE_CAP, b) < 0)
      throw new libc.SysError("KVM_ENABLE_CAP(X86_USER_SPACE_MSR)", libc.errno());
    this.userSpaceMsrEnabled = true;
  }

  /** One range per MSR, with a bitmap of one bit (0: denied, i.e. handed to user space). */
  private applyMsrFilter(list: ReadonlyMap<number, { read: boolean; write: boolean }>): void {
    const f = Buffer.alloc(kvm_msr_filter.size);
    f.writeUInt32LE(KVM_MSR_FILTER.DEFAULT_ALLOW, kvm_msr_filter.off.flags);
    // The bitmaps, one byte per range, all zero (the MSR is denied): KVM reads them during the ioctl, from a
    // page of our own (its address is what the filter carries).
    const page = libc.mmap(
      null,
      4096,
      libc.PROT_READ | libc.PROT_WRITE,
      libc.MAP_PRIVATE | libc.MAP_ANONYMOUS,
      -1,
      0,
    );
    if (page === libc.MAP_FAILED) throw new libc.SysError("mmap", libc.errno());
    let i = 0;
    for (const [msr, how] of list) {
      const at = kvm_msr_filter.off.ranges + i * kvm_msr_filter_range.size;
      const o = kvm_msr_filter_range.off;
      f.writeUInt32LE(
        (how.read ? KVM_MSR_FILTER.READ : 0) | (how.write ? KVM_MSR_FILTER.WRITE : 0),
        at + o.flags,
      );
      f.writeUInt32LE(1, at + o.nmsrs);
      f.writeUInt32LE(msr >>> 0, at + o.base);
      f.writeBigUInt64LE(page + BigInt(i), at + o.bitmap);
      i++;
    }
    const rc = libc.ioctlPtr(this.vm.fd, KVM.X86_SET_MSR_FILTER, f);
    const err = libc.errno();
    libc.munmap(page, 4096);
    if (rc < 0) throw new libc.SysError("KVM_X86_SET_MSR_FILTER", err);
  }

  // ---- Exceptions ----

  /**
   * Inject exception `vector` into stopped vCPU `index` when it next runs (with its error code; for #PF, CR2 =
   * `address`).
   */
  async injectException(index: number, vector: number, errorCode?: number, address?: bigint): Promise<void> {
    if (!Number.isInteger(vector) || vector < 0 || vector > 31)
      throw new VmControlError(`exception vector ${vector} is not 0..31`);
    if (vector === 14 && address !== undefined) {
      const s = await this.sregs(index);
      s.cr2 = address;
      await this.setSregs(index, s);
    }
    const ev = await this.vcpuEvents(index);
    ev.exception = {
      injected: 1,
      nr: vector,
      hasErrorCode: errorCode === undefined ? 0 : 1,
      pending: 0,
      errorCode: errorCode ?? 0,
    };
    ev.flags = 0; // only the exception: leave NMI, SIPI and SMM state as they are
    await this.setVcpuEvents(index, ev);
  }

  // ---- Life ----

  /** The KVM exit reasons' and the backend's facts, for `info` commands. */
  describe(): { backend: Backend; vcpus: number; ramSize: number; methods: DebugMethods } {
    return { backend: this.backend, vcpus: this.vcpus.length, ramSize: this.ramSize, methods: this.methods };
  }

  /**
   * Remove everything the core set (breakpoints, watchpoints, page protection, MSR interception), stop
   * reporting events, and let every vCPU go on. The guest runs on as if never watched.
   */
  async detach(): Promise<void> {
    // At once, before any wait below: a new client's listener may be set meanwhile, and must stay.
    this.stopListener = undefined;
    for (const linear of [...this.swBreakpoints.keys()]) this.removeSwBreakpoint(linear);
    for (let i = 0; i < 4; i++) this.hw[i] = undefined;
    this.updateGuestDebug();
    if (this.vm.slots.anyProtected)
      await this.withRunningParked(() => this.vm.slots.setAccess(0, this.ramSize, "rw"));
    if (this.msrIntercepts.size > 0) {
      this.applyMsrFilter(new Map());
      this.msrIntercepts.clear();
      this.publishSnapshotMsrs();
    }
    this.stopOnFault = false;
    this.catchInt3 = false;
    this.breakOnExit(EXIT_BREAK.NONE);
    for (const v of this.vcpus) Atomics.store(v.words, DBG.ARMED, 0);
    this.publishEventSources();
    // Whoever waited for stops is done; stops not taken are dropped (their vCPUs are resumed below).
    this.stops.length = 0;
    for (const w of this.stopWaiters) w(undefined);
    this.stopWaiters = [];
    this.resume();
  }

  /** Start reporting events again after detach() (a new client). */
  arm(): void {
    for (const v of this.vcpus) Atomics.store(v.words, DBG.ARMED, 1);
    this.publishEventSources();
  }

  /** The run ended (or the client went away): wake whoever waits for a stop. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const w of this.stopWaiters) w(undefined);
    this.stopWaiters = [];
  }
}
