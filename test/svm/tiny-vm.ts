// A minimal VM straight on src/kvm and the vCPU binding of src/vm (one RAM slot, one vCPU, no irqchip, no
// devices), for the backend smoke test and the backend probe: the probe must see each backend's raw behaviour
// (reset state, exits) with no VMM policy (src/vm/vm.ts's irqchip and PIT, src/vmm's run loop) in between.
import { Kvm } from "../../src/kvm/system.js";
import * as libc from "../../src/kvm/libc.js";
import { KVM, KVM_EXIT } from "../../src/kvm/ioctls.js";
import { kvm_userspace_memory_region, RUN } from "../../src/kvm/structs.js";
import { SEGMENT_NAMES, Vcpu, type Regs, type Segment, type Sregs as VcpuSregs } from "../../src/vm/vcpu.js";
import type { SegmentName } from "../../src/kvm/structs.js";

export type { Regs, Segment };

/** The vCPU's special registers with the segments grouped (what the probe prints). */
export interface Sregs extends Omit<VcpuSregs, SegmentName | "interrupt_bitmap"> {
  segs: Record<SegmentName, Segment>;
}

export interface Exit {
  reason: number;
  io?: { out: boolean; port: number; size: number; count: number; data: number };
  mmio?: { addr: bigint; write: boolean; len: number; data: number };
  hwReason?: bigint;
}

export class TinyVm {
  readonly kvm: Kvm;
  readonly vmFd: number;
  readonly vcpu: Vcpu;
  readonly ram: Uint8Array;
  private readonly ramAddr: bigint;

  constructor(readonly ramSize = 2 * 1024 * 1024) {
    this.kvm = Kvm.open();
    this.vmFd = libc.ioctlInt(this.kvm.fd, KVM.CREATE_VM, 0);
    if (this.vmFd < 0) throw new libc.SysError("KVM_CREATE_VM", libc.errno());
    // Intel needs a TSS area for real mode; AMD ignores it. Outside RAM, as the VMM's layout has it.
    libc.ioctlInt(this.vmFd, KVM.SET_TSS_ADDR, 0xfffbd000);
    this.ramAddr = libc.mmap(
      null,
      ramSize,
      libc.PROT_READ | libc.PROT_WRITE,
      libc.MAP_PRIVATE | libc.MAP_ANONYMOUS | libc.MAP_NORESERVE,
      -1,
      0,
    );
    if (this.ramAddr === libc.MAP_FAILED) throw new libc.SysError("mmap", libc.errno());
    this.ram = new Uint8Array(libc.viewOf(this.ramAddr, ramSize));
    const region = Buffer.alloc(kvm_userspace_memory_region.size);
    const o = kvm_userspace_memory_region.off;
    region.writeBigUInt64LE(0n, o.guest_phys_addr);
    region.writeBigUInt64LE(BigInt(ramSize), o.memory_size);
    region.writeBigUInt64LE(this.ramAddr, o.userspace_addr);
    if (libc.ioctlPtr(this.vmFd, KVM.SET_USER_MEMORY_REGION, region) < 0)
      throw new libc.SysError("KVM_SET_USER_MEMORY_REGION", libc.errno());
    this.vcpu = Vcpu.create({ fd: this.vmFd, kvm: this.kvm }, 0);
  }

  getRegs(): Regs {
    return this.vcpu.getRegs();
  }

  setRegs(regs: Partial<Regs>): void {
    this.vcpu.setRegs(regs);
  }

  getSregs(): Sregs {
    const all = this.vcpu.getSregs();
    const segs = {} as Record<SegmentName, Segment>;
    for (const n of SEGMENT_NAMES) segs[n] = all[n];
    const { gdt, idt, cr0, cr2, cr3, cr4, cr8, efer, apic_base } = all;
    return { segs, gdt, idt, cr0, cr2, cr3, cr4, cr8, efer, apic_base };
  }

  /** Change some segments, the GDT and control registers; the rest keeps its current value. */
  setSregs(change: {
    segs?: Partial<Record<SegmentName, Segment>>;
    gdt?: { base: bigint; limit: number };
    cr0?: bigint;
    cr3?: bigint;
    cr4?: bigint;
    efer?: bigint;
  }): void {
    const { segs, ...rest } = change;
    this.vcpu.setSregs({ ...this.vcpu.getSregs(), ...segs, ...rest });
  }

  /** Real mode, CS:IP = 0:entry, flat 64 KiB segments at 0. */
  enterRealMode(entry: number): void {
    const seg = (sel: number, type: number): Segment => ({
      base: 0n,
      limit: 0xffff,
      selector: sel,
      type,
      present: 1,
      dpl: 0,
      db: 0,
      s: 1,
      l: 0,
      g: 0,
      avl: 0,
      unusable: 0,
    });
    this.setSregs({
      segs: { cs: seg(0, 11), ds: seg(0, 3), es: seg(0, 3), ss: seg(0, 3), fs: seg(0, 3), gs: seg(0, 3) },
    });
    this.setRegs({ rip: BigInt(entry), rflags: 2n, rsp: 0x8000n });
  }

  /**
   * 64-bit long mode, identity map of the first GiB (2 MiB pages: PML4 at 0x9000, PDPT 0xA000, PD 0xB000).
   * A GDT with the same descriptors goes at 0x8000 so that a backend that reloads segments finds them.
   */
  enterLongMode(entry: number): void {
    const v = new DataView(this.ram.buffer, this.ram.byteOffset);
    v.setBigUint64(0x9000, 0xa000n | 3n, true);
    v.setBigUint64(0xa000, 0xb000n | 3n, true);
    // 2 MiB pages (present, writable, PS) over the first GiB: RAM, then unbacked space that exits as MMIO.
    for (let i = 0; i < 512; i++) v.setBigUint64(0xb000 + 8 * i, (BigInt(i) << 21n) | 0x83n, true);
    v.setBigUint64(0x8000, 0n, true);
    v.setBigUint64(0x8008, 0x00af9b000000ffffn, true); // 64-bit code, DPL 0
    v.setBigUint64(0x8010, 0x00cf93000000ffffn, true); // data
    const code: Segment = {
      base: 0n,
      limit: 0xffffffff,
      selector: 8,
      type: 11,
      present: 1,
      dpl: 0,
      db: 0,
      s: 1,
      l: 1,
      g: 1,
      avl: 0,
      unusable: 0,
    };
    const data: Segment = { ...code, selector: 16, type: 3, db: 1, l: 0 };
    this.setSregs({
      segs: { cs: code, ds: data, es: data, ss: data, fs: data, gs: data },
      gdt: { base: 0x8000n, limit: 0x17 },
      cr0: 0x80000011n, // PG | ET | PE
      cr3: 0x9000n,
      cr4: 0x20n, // PAE
      efer: 0x500n, // LMA | LME
    });
    this.setRegs({ rip: BigInt(entry), rflags: 2n, rsp: 0x7000n });
  }

  /** One KVM_RUN; returns the exit with its I/O data decoded. */
  runOnce(): Exit {
    const rc = this.vcpu.runOnce();
    if (rc < 0) throw new libc.SysError("KVM_RUN", -rc);
    const run = this.vcpu.run;
    const reason = this.vcpu.exitReason;
    if (reason === KVM_EXIT.IO) {
      const out = run.getUint8(RUN.io.direction) === 1;
      const size = run.getUint8(RUN.io.size);
      const dataOff = Number(run.getBigUint64(RUN.io.data_offset, true));
      const data =
        size === 1
          ? run.getUint8(dataOff)
          : size === 2
            ? run.getUint16(dataOff, true)
            : run.getUint32(dataOff, true);
      return {
        reason,
        io: {
          out,
          port: run.getUint16(RUN.io.port, true),
          size,
          count: run.getUint32(RUN.io.count, true),
          data,
        },
      };
    }
    if (reason === KVM_EXIT.MMIO) {
      const len = run.getUint32(RUN.mmio.len, true);
      let data = 0;
      for (let i = Math.min(len, 4) - 1; i >= 0; i--) data = data * 256 + run.getUint8(RUN.mmio.data + i);
      return {
        reason,
        mmio: {
          addr: run.getBigUint64(RUN.mmio.phys_addr, true),
          write: run.getUint8(RUN.mmio.is_write) === 1,
          len,
          data,
        },
      };
    }
    if (reason === KVM_EXIT.FAIL_ENTRY || reason === KVM_EXIT.UNKNOWN)
      return { reason, hwReason: run.getBigUint64(RUN.hw.hardware_exit_reason, true) };
    return { reason };
  }

  /** Run until HLT (or anything but port I/O, or `max` exits); returns every exit seen. */
  runUntilStop(max = 100): Exit[] {
    const exits: Exit[] = [];
    for (let i = 0; i < max; i++) {
      const e = this.runOnce();
      exits.push(e);
      if (e.reason !== KVM_EXIT.IO) break;
    }
    return exits;
  }

  close(): void {
    this.vcpu.close();
    libc.munmap(this.ramAddr, this.ramSize);
    libc.close(this.vmFd);
    this.kvm.close();
  }
}

/**
 * Guest code, hand-assembled so the guest needs no assembler (none inside the kvm_amd VM):
 * `mov ecx, count; mov dx, port; mov al, value; L: out dx, al; dec ecx; jnz L; hlt`.
 * `bits` picks the encoding for 16-bit real mode (operand-size prefixes on the 32-bit ops) or 64-bit mode.
 */
export function outLoop(bits: 16 | 64, count: number, port: number, value: number): Uint8Array {
  const c = [count & 0xff, (count >>> 8) & 0xff, (count >>> 16) & 0xff, (count >>> 24) & 0xff];
  const p = [port & 0xff, (port >>> 8) & 0xff];
  if (bits === 16)
    // 66 B9 imm32; BA imm16; B0 imm8; EE; 66 49; 75 FB; F4
    return Uint8Array.from([0x66, 0xb9, ...c, 0xba, ...p, 0xb0, value, 0xee, 0x66, 0x49, 0x75, 0xfb, 0xf4]);
  // B9 imm32; 66 BA imm16; B0 imm8; EE; FF C9; 75 FB; F4
  return Uint8Array.from([0xb9, ...c, 0x66, 0xba, ...p, 0xb0, value, 0xee, 0xff, 0xc9, 0x75, 0xfb, 0xf4]);
}
