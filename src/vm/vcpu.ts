// One KVM vCPU: its fd, the mmap'ed struct kvm_run, and typed access to its state (registers, segment and
// control registers, multiprocessing state, pending events). 64-bit values are BigInt throughout: a Number
// above 2^53 would be silently rounded.
//
// Created on the main thread (KVM_CREATE_VCPU, KVM_SET_CPUID2); the vCPU's worker thread attaches to the same
// fd and kvm_run mapping with `Vcpu.attach(descriptor)`. Any thread may call the state ioctls while the vCPU is
// not inside KVM_RUN (KVM serialises them on the vCPU's mutex), which is what the paused state relies on.
import * as libc from "../kvm/libc.js";
import { KVM } from "../kvm/ioctls.js";
import {
  kvm_cpuid2,
  kvm_cpuid_entry2,
  kvm_dtable,
  kvm_mp_state,
  kvm_regs,
  kvm_run,
  kvm_segment,
  kvm_signal_mask,
  kvm_sregs,
  kvm_vcpu_events,
  type RegName,
  type SegmentName,
} from "../kvm/structs.js";
import type { CpuidEntry } from "../kvm/system.js";
import { VmResourceError } from "./errors.js";
import { openStatsFd } from "./stats-fd.js";

export type Regs = Record<RegName, bigint>;
export const REG_NAMES = Object.keys(kvm_regs.off) as RegName[];
export const SEGMENT_NAMES: readonly SegmentName[] = ["cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt"];

export interface Segment {
  base: bigint;
  limit: number;
  selector: number;
  type: number;
  present: number;
  dpl: number;
  db: number;
  s: number;
  l: number;
  g: number;
  avl: number;
  unusable: number;
}
export interface DescriptorTable {
  base: bigint;
  limit: number;
}
export interface Sregs extends Record<SegmentName, Segment> {
  gdt: DescriptorTable;
  idt: DescriptorTable;
  cr0: bigint;
  cr2: bigint;
  cr3: bigint;
  cr4: bigint;
  cr8: bigint;
  efer: bigint;
  apic_base: bigint;
  /** Bitmap of a pending external interrupt (256 bits as four u64), as KVM reports it. */
  interrupt_bitmap: bigint[];
}

export interface VcpuEvents {
  exception: { injected: number; nr: number; hasErrorCode: number; pending: number; errorCode: number };
  interrupt: { injected: number; nr: number; soft: number; shadow: number };
  nmi: { injected: number; pending: number; masked: number };
  sipiVector: number;
  flags: number;
  tripleFaultPending: number;
}

/** KVM_MP_STATE_* names by value. */
export const MP_STATE_NAMES = ["RUNNABLE", "UNINITIALIZED", "INIT_RECEIVED", "HALTED", "SIPI_RECEIVED"];

/** What a worker thread needs to drive the same vCPU. */
export interface VcpuDescriptor {
  id: number;
  fd: number;
  vmFd: number;
  runAddr: bigint;
  runSize: number;
}

export class Vcpu {
  /** struct kvm_run, shared with the kernel (no copy). */
  readonly run: DataView;
  readonly runBytes: Uint8Array;
  private readonly regsBuf = Buffer.alloc(kvm_regs.size);
  private readonly sregsBuf = Buffer.alloc(kvm_sregs.size);
  private readonly mpBuf = Buffer.alloc(kvm_mp_state.size);
  private closed = false;

  private constructor(
    readonly desc: VcpuDescriptor,
    /** KVM's binary statistics of this vCPU (stats-fd.ts); -1 when the host has none, or in another thread. */
    readonly statsFd = -1,
  ) {
    const ab = libc.viewOf(desc.runAddr, desc.runSize);
    this.run = new DataView(ab);
    this.runBytes = new Uint8Array(ab);
  }

  get id(): number {
    return this.desc.id;
  }
  get fd(): number {
    return this.desc.fd;
  }

  /** KVM_CREATE_VCPU on `vm`, map its kvm_run, and give it the CPUID that KVM supports. */
  static create(
    vm: { fd: number; kvm: { fd: number; vcpuMmapSize(): number; cpuid(): CpuidEntry[] } },
    id: number,
  ): Vcpu {
    const fd = libc.ioctlInt(vm.fd, KVM.CREATE_VCPU, id);
    if (fd < 0)
      throw new VmResourceError(`KVM_CREATE_VCPU ${id}: ${new libc.SysError("", libc.errno()).message}`);
    const runSize = vm.kvm.vcpuMmapSize();
    if (runSize < kvm_run.size)
      throw new VmResourceError(`KVM's vCPU mapping (${runSize} bytes) is smaller than kvm_run`);
    const runAddr = libc.mmap(null, runSize, libc.PROT_READ | libc.PROT_WRITE, libc.MAP_SHARED, fd, 0);
    if (runAddr === libc.MAP_FAILED) {
      const e = libc.errno();
      libc.close(fd);
      throw new libc.SysError("mmap of kvm_run", e);
    }
    // Before the first KVM_RUN: later the ioctl would wait for as long as the guest runs (stats-fd.ts).
    const vcpu = new Vcpu({ id, fd, vmFd: vm.fd, runAddr, runSize }, openStatsFd(fd));
    // KVM reports one CPUID table for the host; each vCPU's own APIC id (= its vCPU id, as the in-kernel local
    // APIC has it) goes into leaf 1 EBX[31:24] and the x2APIC id of leaves 0xB / 0x1F, as on real CPUs.
    vcpu.setCpuid(
      vm.kvm
        .cpuid()
        .map((e) =>
          e.function === 1
            ? { ...e, ebx: ((e.ebx & 0x00ff_ffff) | ((id & 0xff) << 24)) >>> 0 }
            : e.function === 0xb || e.function === 0x1f
              ? { ...e, edx: id }
              : e,
        ),
    );
    return vcpu;
  }

  /** The same vCPU seen from another thread (no new KVM object). Do not close() it there. */
  static attach(desc: VcpuDescriptor): Vcpu {
    return new Vcpu(desc);
  }

  private ioctl(req: number, buf: Uint8Array | null, call: string): void {
    if (libc.ioctlPtr(this.desc.fd, req, buf) < 0) throw new libc.SysError(call, libc.errno());
  }

  getRegs(): Regs {
    this.ioctl(KVM.GET_REGS, this.regsBuf, "KVM_GET_REGS");
    const r = {} as Regs;
    const off: Record<RegName, number> = kvm_regs.off;
    for (const n of REG_NAMES) r[n] = this.regsBuf.readBigUInt64LE(off[n]);
    return r;
  }

  /** Sets all registers; fields left out keep their current value. */
  setRegs(regs: Partial<Regs>): void {
    const cur = this.getRegs();
    const off: Record<RegName, number> = kvm_regs.off;
    for (const n of REG_NAMES) this.regsBuf.writeBigUInt64LE(BigInt.asUintN(64, regs[n] ?? cur[n]), off[n]);
    this.ioctl(KVM.SET_REGS, this.regsBuf, "KVM_SET_REGS");
  }

  /** Only RIP, for the trace line: a full KVM_GET_REGS, without building an object. */
  getRip(): bigint {
    this.ioctl(KVM.GET_REGS, this.regsBuf, "KVM_GET_REGS");
    return this.regsBuf.readBigUInt64LE(kvm_regs.off.rip);
  }

  getSregs(): Sregs {
    const b = this.sregsBuf;
    this.ioctl(KVM.GET_SREGS, b, "KVM_GET_SREGS");
    const o = kvm_sregs.off;
    const s = {} as Sregs;
    for (const n of SEGMENT_NAMES) s[n] = readSegment(b, o[n]);
    s.gdt = { base: b.readBigUInt64LE(o.gdt), limit: b.readUInt16LE(o.gdt + kvm_dtable.off.limit) };
    s.idt = { base: b.readBigUInt64LE(o.idt), limit: b.readUInt16LE(o.idt + kvm_dtable.off.limit) };
    for (const n of ["cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apic_base"] as const)
      s[n] = b.readBigUInt64LE(o[n]);
    s.interrupt_bitmap = [0, 1, 2, 3].map((i) => b.readBigUInt64LE(o.interrupt_bitmap + 8 * i));
    return s;
  }

  setSregs(s: Sregs): void {
    const b = this.sregsBuf;
    b.fill(0);
    const o = kvm_sregs.off;
    for (const n of SEGMENT_NAMES) writeSegment(b, o[n], s[n]);
    b.writeBigUInt64LE(BigInt.asUintN(64, s.gdt.base), o.gdt);
    b.writeUInt16LE(s.gdt.limit, o.gdt + kvm_dtable.off.limit);
    b.writeBigUInt64LE(BigInt.asUintN(64, s.idt.base), o.idt);
    b.writeUInt16LE(s.idt.limit, o.idt + kvm_dtable.off.limit);
    for (const n of ["cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apic_base"] as const)
      b.writeBigUInt64LE(BigInt.asUintN(64, s[n]), o[n]);
    s.interrupt_bitmap.forEach((v, i) => b.writeBigUInt64LE(v, o.interrupt_bitmap + 8 * i));
    this.ioctl(KVM.SET_SREGS, b, "KVM_SET_SREGS");
  }

  /** KVM_MP_STATE_* (see MP_STATE_NAMES): RUNNABLE 0, HALTED 3 ... */
  getMpState(): number {
    this.ioctl(KVM.GET_MP_STATE, this.mpBuf, "KVM_GET_MP_STATE");
    return this.mpBuf.readUInt32LE(kvm_mp_state.off.mp_state);
  }

  getVcpuEvents(): VcpuEvents {
    const b = Buffer.alloc(kvm_vcpu_events.size);
    this.ioctl(KVM.GET_VCPU_EVENTS, b, "KVM_GET_VCPU_EVENTS");
    const o = kvm_vcpu_events.off;
    return {
      exception: {
        injected: b[o["exception.injected"]],
        nr: b[o["exception.nr"]],
        hasErrorCode: b[o["exception.has_error_code"]],
        pending: b[o["exception.pending"]],
        errorCode: b.readUInt32LE(o["exception.error_code"]),
      },
      interrupt: {
        injected: b[o["interrupt.injected"]],
        nr: b[o["interrupt.nr"]],
        soft: b[o["interrupt.soft"]],
        shadow: b[o["interrupt.shadow"]],
      },
      nmi: { injected: b[o["nmi.injected"]], pending: b[o["nmi.pending"]], masked: b[o["nmi.masked"]] },
      sipiVector: b.readUInt32LE(o.sipi_vector),
      flags: b.readUInt32LE(o.flags),
      tripleFaultPending: b[o["triple_fault.pending"]],
    };
  }

  /** Sets the events; `flags` says which optional parts (NMI pending, SIPI vector, ...) KVM should take. */
  setVcpuEvents(ev: VcpuEvents): void {
    const b = Buffer.alloc(kvm_vcpu_events.size);
    const o = kvm_vcpu_events.off;
    b[o["exception.injected"]] = ev.exception.injected;
    b[o["exception.nr"]] = ev.exception.nr;
    b[o["exception.has_error_code"]] = ev.exception.hasErrorCode;
    b[o["exception.pending"]] = ev.exception.pending;
    b.writeUInt32LE(ev.exception.errorCode >>> 0, o["exception.error_code"]);
    b[o["interrupt.injected"]] = ev.interrupt.injected;
    b[o["interrupt.nr"]] = ev.interrupt.nr;
    b[o["interrupt.soft"]] = ev.interrupt.soft;
    b[o["interrupt.shadow"]] = ev.interrupt.shadow;
    b[o["nmi.injected"]] = ev.nmi.injected;
    b[o["nmi.pending"]] = ev.nmi.pending;
    b[o["nmi.masked"]] = ev.nmi.masked;
    b.writeUInt32LE(ev.sipiVector >>> 0, o.sipi_vector);
    b.writeUInt32LE(ev.flags >>> 0, o.flags);
    b[o["triple_fault.pending"]] = ev.tripleFaultPending;
    this.ioctl(KVM.SET_VCPU_EVENTS, b, "KVM_SET_VCPU_EVENTS");
  }

  setCpuid(entries: readonly CpuidEntry[]): void {
    const b = Buffer.alloc(kvm_cpuid2.size + entries.length * kvm_cpuid_entry2.size);
    b.writeUInt32LE(entries.length, kvm_cpuid2.off.nent);
    const o = kvm_cpuid_entry2.off;
    entries.forEach((e, i) => {
      const base = kvm_cpuid2.size + i * kvm_cpuid_entry2.size;
      b.writeUInt32LE(e.function >>> 0, base + o.function);
      b.writeUInt32LE(e.index >>> 0, base + o.index);
      b.writeUInt32LE(e.flags >>> 0, base + o.flags);
      b.writeUInt32LE(e.eax >>> 0, base + o.eax);
      b.writeUInt32LE(e.ebx >>> 0, base + o.ebx);
      b.writeUInt32LE(e.ecx >>> 0, base + o.ecx);
      b.writeUInt32LE(e.edx >>> 0, base + o.edx);
    });
    this.ioctl(KVM.SET_CPUID2, b, "KVM_SET_CPUID2");
  }

  /** KVM_SET_SIGNAL_MASK: the signal mask in force while this vCPU is inside KVM_RUN (8-byte kernel sigset). */
  setSignalMask(kernelSigset: Uint8Array): void {
    const b = Buffer.alloc(kvm_signal_mask.size + kernelSigset.length);
    b.writeUInt32LE(kernelSigset.length, kvm_signal_mask.off.len);
    b.set(kernelSigset, kvm_signal_mask.size);
    this.ioctl(KVM.SET_SIGNAL_MASK, b, "KVM_SET_SIGNAL_MASK");
  }

  /** KVM_RUN once: 0, or -errno (EINTR after a kick). */
  runOnce(): number {
    return libc.ioctlInt(this.desc.fd, KVM.RUN, 0) < 0 ? -libc.errno() : 0;
  }

  get exitReason(): number {
    return this.run.getUint32(kvm_run.off.exit_reason, true);
  }

  /** kvm_run.immediate_exit: KVM_RUN returns EINTR at once instead of entering the guest (the kick). */
  set immediateExit(on: boolean) {
    this.run.setUint8(kvm_run.off.immediate_exit, on ? 1 : 0);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    libc.munmap(this.desc.runAddr, this.desc.runSize);
    libc.close(this.desc.fd);
    if (this.statsFd >= 0) libc.close(this.statsFd);
  }
}

function readSegment(b: Buffer, off: number): Segment {
  const o = kvm_segment.off;
  return {
    base: b.readBigUInt64LE(off + o.base),
    limit: b.readUInt32LE(off + o.limit),
    selector: b.readUInt16LE(off + o.selector),
    type: b[off + o.type],
    present: b[off + o.present],
    dpl: b[off + o.dpl],
    db: b[off + o.db],
    s: b[off + o.s],
    l: b[off + o.l],
    g: b[off + o.g],
    avl: b[off + o.avl],
    unusable: b[off + o.unusable],
  };
}

function writeSegment(b: Buffer, off: number, s: Segment): void {
  const o = kvm_segment.off;
  b.writeBigUInt64LE(BigInt.asUintN(64, s.base), off + o.base);
  b.writeUInt32LE(s.limit >>> 0, off + o.limit);
  b.writeUInt16LE(s.selector & 0xffff, off + o.selector);
  b[off + o.type] = s.type;
  b[off + o.present] = s.present;
  b[off + o.dpl] = s.dpl;
  b[off + o.db] = s.db;
  b[off + o.s] = s.s;
  b[off + o.l] = s.l;
  b[off + o.g] = s.g;
  b[off + o.avl] = s.avl;
  b[off + o.unusable] = s.unusable;
}
