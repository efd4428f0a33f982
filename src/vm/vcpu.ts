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
  kvm_mp_state,
  kvm_regs,
  kvm_run,
  kvm_signal_mask,
  kvm_sregs,
  kvm_translation,
  kvm_vcpu_events,
} from "../kvm/structs.js";
import type { CpuidEntry } from "../kvm/system.js";
import { VmResourceError } from "./errors.js";
import { openStatsFd } from "./stats-fd.js";
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
} from "./vcpu-state.js";

export {
  REG_NAMES,
  SEGMENT_NAMES,
  type DescriptorTable,
  type Regs,
  type Segment,
  type Sregs,
  type VcpuEvents,
} from "./vcpu-state.js";

/** KVM_TRANSLATE's answer for one guest linear address. */
export interface KvmTranslation {
  /** KVM's walk found a translation (present entries, no reserved bit set). */
  valid: boolean;
  /** The guest physical address (all ones when not valid). */
  gpa: bigint;
  /** As KVM fills them: always 1 and 0 (upstream x86 KVM never computes them; do not rely on them). */
  writeable: number;
  usermode: number;
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
    // APIC has it) goes into leaf 1 EBX[31:24] and the x2APIC id of leaves 0xB / 0x1F, as on real CPUs. Leaf 1
    // ECX[31] (a hypervisor is present) is set, as kvmtool and Firecracker do: some KVMs (Debian 6.1's kvm_amd)
    // leave it clear, and a Linux guest then never looks at KVM's leaves (no kvmclock: it calibrates its TSC
    // against a PIT, 100,000 port reads when there is none).
    vcpu.setCpuid(
      vm.kvm.cpuid().map((e) =>
        e.function === 1
          ? {
              ...e,
              ebx: ((e.ebx & 0x00ff_ffff) | ((id & 0xff) << 24)) >>> 0,
              ecx: (e.ecx | 0x8000_0000) >>> 0,
            }
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
    return decodeRegs(this.regsBuf);
  }

  /** Sets all registers; fields left out keep their current value. */
  setRegs(regs: Partial<Regs>): void {
    encodeRegs({ ...this.getRegs(), ...regs }, this.regsBuf);
    this.ioctl(KVM.SET_REGS, this.regsBuf, "KVM_SET_REGS");
  }

  /** Only RIP, for the trace line: a full KVM_GET_REGS, without building an object. */
  getRip(): bigint {
    this.ioctl(KVM.GET_REGS, this.regsBuf, "KVM_GET_REGS");
    return this.regsBuf.readBigUInt64LE(kvm_regs.off.rip);
  }

  getSregs(): Sregs {
    this.ioctl(KVM.GET_SREGS, this.sregsBuf, "KVM_GET_SREGS");
    return decodeSregs(this.sregsBuf);
  }

  setSregs(s: Sregs): void {
    encodeSregs(s, this.sregsBuf);
    this.ioctl(KVM.SET_SREGS, this.sregsBuf, "KVM_SET_SREGS");
  }

  /**
   * KVM_TRANSLATE: KVM's own walk of the guest's page tables for a linear address, in the vCPU's current
   * paging mode, checked as a supervisor-mode data read (so an address such a read may not reach, a user page
   * under SMAP, has none). KVM sets the Accessed bits of the entries it walks, as the CPU would. Call it while
   * the vCPU is not inside KVM_RUN.
   */
  translate(linear: bigint): KvmTranslation {
    const b = Buffer.alloc(kvm_translation.size);
    const o = kvm_translation.off;
    b.writeBigUInt64LE(BigInt.asUintN(64, linear), o.linear_address);
    this.ioctl(KVM.TRANSLATE, b, "KVM_TRANSLATE");
    return {
      valid: b[o.valid] !== 0,
      gpa: b.readBigUInt64LE(o.physical_address),
      writeable: b[o.writeable],
      usermode: b[o.usermode],
    };
  }

  /** KVM_GET_LAPIC: the in-kernel local APIC's register page (1 KiB, registers at their MMIO offsets). */
  getLapic(): Buffer {
    const b = Buffer.alloc(1024);
    this.ioctl(KVM.GET_LAPIC, b, "KVM_GET_LAPIC");
    return b;
  }

  setLapic(page: Uint8Array): void {
    this.ioctl(KVM.SET_LAPIC, page, "KVM_SET_LAPIC");
  }

  /**
   * LVT LINT0 in ExtINT mode and LINT1 in NMI mode, as a PC BIOS leaves them (and kvmtool and Firecracker
   * do): the 8259's interrupts reach the CPU through LINT0 in virtual-wire mode, before the OS programs its
   * APIC, and an NMI on LINT1 is delivered.
   */
  setVirtualWireLints(): void {
    const page = this.getLapic();
    const LVT_LINT0 = 0x350;
    const LVT_LINT1 = 0x360;
    const DM_EXTINT = 0x700;
    const DM_NMI = 0x400;
    const keep = ~(0x700 | (1 << 16)) >>> 0; // delivery mode and mask bits replaced
    page.writeUInt32LE(((page.readUInt32LE(LVT_LINT0) & keep) | DM_EXTINT) >>> 0, LVT_LINT0);
    page.writeUInt32LE(((page.readUInt32LE(LVT_LINT1) & keep) | DM_NMI) >>> 0, LVT_LINT1);
    this.setLapic(page);
  }

  /** KVM_MP_STATE_* (see MP_STATE_NAMES): RUNNABLE 0, HALTED 3 ... */
  getMpState(): number {
    this.ioctl(KVM.GET_MP_STATE, this.mpBuf, "KVM_GET_MP_STATE");
    return this.mpBuf.readUInt32LE(kvm_mp_state.off.mp_state);
  }

  getVcpuEvents(): VcpuEvents {
    const b = Buffer.alloc(kvm_vcpu_events.size);
    this.ioctl(KVM.GET_VCPU_EVENTS, b, "KVM_GET_VCPU_EVENTS");
    return decodeEvents(b);
  }

  /** Sets the events; `flags` says which optional parts (NMI pending, SIPI vector, ...) KVM should take. */
  setVcpuEvents(ev: VcpuEvents): void {
    const b = Buffer.alloc(kvm_vcpu_events.size);
    encodeEvents(ev, b);
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
