// A minimal VM straight on src/kvm (one RAM slot, one vCPU, no devices), for the backend smoke test and the
// backend probe. It exists so the kvm_amd harness can prove itself before the VMM (src/vm, src/vmm) lands,
// and so the probe sees each backend's raw behaviour (reset state, exits) with no VMM policy in between.
import { Kvm } from "../../src/kvm/system.js";
import * as libc from "../../src/kvm/libc.js";
import { KVM, KVM_EXIT } from "../../src/kvm/ioctls.js";
import {
  kvm_regs,
  kvm_sregs,
  kvm_segment,
  kvm_run,
  kvm_userspace_memory_region,
  RUN,
} from "../../src/kvm/structs.js";

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
const SEG_NAMES = ["cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt"] as const;
type SegName = (typeof SEG_NAMES)[number];

export interface Sregs {
  segs: Record<SegName, Segment>;
  gdt: { base: bigint; limit: number };
  idt: { base: bigint; limit: number };
  cr0: bigint;
  cr2: bigint;
  cr3: bigint;
  cr4: bigint;
  cr8: bigint;
  efer: bigint;
  apic_base: bigint;
}

export type Regs = Record<keyof typeof kvm_regs.off, bigint>;

export interface Exit {
  reason: number;
  io?: { out: boolean; port: number; size: number; count: number; data: number };
  mmio?: { addr: bigint; write: boolean; len: number; data: number };
  hwReason?: bigint;
}

function readSeg(b: Buffer, off: number): Segment {
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

function writeSeg(b: Buffer, off: number, s: Segment): void {
  const o = kvm_segment.off;
  b.writeBigUInt64LE(s.base, off + o.base);
  b.writeUInt32LE(s.limit, off + o.limit);
  b.writeUInt16LE(s.selector, off + o.selector);
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

export class TinyVm {
  readonly kvm: Kvm;
  readonly vmFd: number;
  readonly vcpuFd: number;
  readonly ram: Uint8Array;
  private readonly ramAddr: bigint;
  private readonly run: DataView;
  private readonly runAddr: bigint;
  private readonly runSize: number;

  constructor(readonly ramSize = 2 * 1024 * 1024) {
    this.kvm = Kvm.open();
    this.vmFd = libc.ioctlInt(this.kvm.fd, KVM.CREATE_VM, 0);
    if (this.vmFd < 0) throw new libc.SysError("KVM_CREATE_VM", libc.errno());
    // Intel needs a TSS area for real mode; AMD ignores it. Outside RAM, as the VMM's layout has it.
    libc.ioctlInt(this.vmFd, KVM.SET_TSS_ADDR, 0xfffbd000);
    const prot = libc.PROT_READ | libc.PROT_WRITE;
    this.ramAddr = libc.mmap(
      null,
      ramSize,
      prot,
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
    this.vcpuFd = libc.ioctlInt(this.vmFd, KVM.CREATE_VCPU, 0);
    if (this.vcpuFd < 0) throw new libc.SysError("KVM_CREATE_VCPU", libc.errno());
    this.runSize = this.kvm.vcpuMmapSize();
    if (this.runSize < kvm_run.size) throw new Error(`kvm_run mapping of ${this.runSize} bytes is too small`);
    this.runAddr = libc.mmap(null, this.runSize, prot, libc.MAP_SHARED, this.vcpuFd, 0);
    if (this.runAddr === libc.MAP_FAILED) throw new libc.SysError("mmap(kvm_run)", libc.errno());
    this.run = new DataView(libc.viewOf(this.runAddr, this.runSize));
  }

  getRegs(): Regs {
    const b = Buffer.alloc(kvm_regs.size);
    if (libc.ioctlPtr(this.vcpuFd, KVM.GET_REGS, b) < 0)
      throw new libc.SysError("KVM_GET_REGS", libc.errno());
    const out: Record<string, bigint> = {};
    for (const [k, off] of Object.entries(kvm_regs.off)) out[k] = b.readBigUInt64LE(off);
    return out as Regs;
  }

  setRegs(regs: Partial<Regs>): void {
    const all = { ...this.getRegs(), ...regs };
    const b = Buffer.alloc(kvm_regs.size);
    for (const [k, off] of Object.entries(kvm_regs.off)) b.writeBigUInt64LE(all[k as keyof Regs], off);
    if (libc.ioctlPtr(this.vcpuFd, KVM.SET_REGS, b) < 0)
      throw new libc.SysError("KVM_SET_REGS", libc.errno());
  }

  private sregsBuf(): Buffer {
    const b = Buffer.alloc(kvm_sregs.size);
    if (libc.ioctlPtr(this.vcpuFd, KVM.GET_SREGS, b) < 0)
      throw new libc.SysError("KVM_GET_SREGS", libc.errno());
    return b;
  }

  getSregs(): Sregs {
    const b = this.sregsBuf();
    const o = kvm_sregs.off;
    const segs = {} as Record<SegName, Segment>;
    for (const n of SEG_NAMES) segs[n] = readSeg(b, o[n]);
    return {
      segs,
      gdt: { base: b.readBigUInt64LE(o.gdt), limit: b.readUInt16LE(o.gdt + 8) },
      idt: { base: b.readBigUInt64LE(o.idt), limit: b.readUInt16LE(o.idt + 8) },
      cr0: b.readBigUInt64LE(o.cr0),
      cr2: b.readBigUInt64LE(o.cr2),
      cr3: b.readBigUInt64LE(o.cr3),
      cr4: b.readBigUInt64LE(o.cr4),
      cr8: b.readBigUInt64LE(o.cr8),
      efer: b.readBigUInt64LE(o.efer),
      apic_base: b.readBigUInt64LE(o.apic_base),
    };
  }

  /** Change some segments and control registers; the rest keeps its current value. */
  setSregs(change: {
    segs?: Partial<Record<SegName, Segment>>;
    cr0?: bigint;
    cr3?: bigint;
    cr4?: bigint;
    efer?: bigint;
  }): void {
    const b = this.sregsBuf();
    const o = kvm_sregs.off;
    for (const [n, s] of Object.entries(change.segs ?? {})) writeSeg(b, o[n as SegName], s);
    if (change.cr0 !== undefined) b.writeBigUInt64LE(change.cr0, o.cr0);
    if (change.cr3 !== undefined) b.writeBigUInt64LE(change.cr3, o.cr3);
    if (change.cr4 !== undefined) b.writeBigUInt64LE(change.cr4, o.cr4);
    if (change.efer !== undefined) b.writeBigUInt64LE(change.efer, o.efer);
    if (libc.ioctlPtr(this.vcpuFd, KVM.SET_SREGS, b) < 0)
      throw new libc.SysError("KVM_SET_SREGS", libc.errno());
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
      cr0: 0x80000011n, // PG | ET | PE
      cr3: 0x9000n,
      cr4: 0x20n, // PAE
      efer: 0x500n, // LMA | LME
    });
    const b = this.sregsBuf();
    b.writeBigUInt64LE(0x8000n, kvm_sregs.off.gdt);
    b.writeUInt16LE(0x17, kvm_sregs.off.gdt + 8);
    if (libc.ioctlPtr(this.vcpuFd, KVM.SET_SREGS, b) < 0)
      throw new libc.SysError("KVM_SET_SREGS", libc.errno());
    this.setRegs({ rip: BigInt(entry), rflags: 2n, rsp: 0x7000n });
  }

  /** One KVM_RUN; returns the exit with its I/O data decoded. */
  runOnce(): Exit {
    if (libc.ioctlInt(this.vcpuFd, KVM.RUN, 0) < 0) throw new libc.SysError("KVM_RUN", libc.errno());
    const reason = this.run.getUint32(kvm_run.off.exit_reason, true);
    if (reason === KVM_EXIT.IO) {
      const out = this.run.getUint8(RUN.io.direction) === 1;
      const size = this.run.getUint8(RUN.io.size);
      const dataOff = Number(this.run.getBigUint64(RUN.io.data_offset, true));
      const data =
        size === 1
          ? this.run.getUint8(dataOff)
          : size === 2
            ? this.run.getUint16(dataOff, true)
            : this.run.getUint32(dataOff, true);
      return {
        reason,
        io: {
          out,
          port: this.run.getUint16(RUN.io.port, true),
          size,
          count: this.run.getUint32(RUN.io.count, true),
          data,
        },
      };
    }
    if (reason === KVM_EXIT.MMIO) {
      const len = this.run.getUint32(RUN.mmio.len, true);
      let data = 0;
      for (let i = Math.min(len, 4) - 1; i >= 0; i--)
        data = data * 256 + this.run.getUint8(RUN.mmio.data + i);
      return {
        reason,
        mmio: {
          addr: this.run.getBigUint64(RUN.mmio.phys_addr, true),
          write: this.run.getUint8(RUN.mmio.is_write) === 1,
          len,
          data,
        },
      };
    }
    if (reason === KVM_EXIT.FAIL_ENTRY || reason === KVM_EXIT.UNKNOWN)
      return { reason, hwReason: this.run.getBigUint64(RUN.hw.hardware_exit_reason, true) };
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
    libc.munmap(this.runAddr, this.runSize);
    libc.munmap(this.ramAddr, this.ramSize);
    libc.close(this.vcpuFd);
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
