// A KVM virtual machine: the VM fd, its guest RAM (mmap'ed and registered as one memory slot), the in-kernel
// interrupt controllers (PIC + IOAPIC + local APICs, and on request the PIT) and the addresses Intel needs for real mode (TSS and
// identity-map page, both outside RAM, see machine-layout.ts). Created on the main thread; vCPU workers get
// plain descriptors (fds and addresses) and rebuild their views of the same memory.
import { VmConfigError, VmResourceError } from "./errors.js";
import { Kvm } from "../kvm/system.js";
import * as libc from "../kvm/libc.js";
import { KVM, PIT_STATE2_SIZE } from "../kvm/ioctls.js";
import { kvm_pit_config, kvm_userspace_memory_region } from "../kvm/structs.js";
import { GuestMemory, mapGuestRam } from "../memory/guest-memory.js";
import { LAYOUT } from "./machine-layout.js";
import { Vcpu } from "./vcpu.js";
import { setIrqLine } from "./irq-line.js";
import { newEventfd } from "./eventfds.js";
import { openStatsFd } from "./stats-fd.js";
import { MemorySlots } from "./memory-slots.js";

export { setIrqLine } from "./irq-line.js";

/** Every capability the VMM relies on; a KVM without one of them is refused up front, naming it. */
export const REQUIRED_CAPS = [
  "USER_MEMORY",
  "SET_TSS_ADDR",
  "SET_IDENTITY_MAP_ADDR",
  "IRQCHIP",
  "MP_STATE",
  "VCPU_EVENTS",
  "IMMEDIATE_EXIT",
  "EXT_CPUID",
] as const;

export interface VmOptions {
  /** Guest RAM in bytes: a multiple of 4 KiB between LAYOUT.MIN_RAM and LAYOUT.MAX_RAM. */
  memSize: number;
  /** Create the in-kernel PIC/IOAPIC and local APICs (default true). */
  irqchip?: boolean;
  /**
   * Also create the in-kernel i8254 PIT (default false; needs the irqchip). Off by default because no device
   * of vmtool's needs it and the kernel's teardown of a PIT costs 15-20 ms of every run here (two SRCU grace
   * periods and a kthread; docs/run.md, "Start-up").
   */
  pit?: boolean;
  /**
   * Back guest RAM with a memfd instead of anonymous memory (default false), so that a tool on the same host
   * (root, or the same user) can map it through /proc/PID/fd/N and read it without a message per page
   * (introspection's VMTOOL_GET_RAM_MAPPING). The file is sparse: pages cost memory only once touched, as
   * anonymous memory does, but count as shared memory (shmem) and get no transparent huge pages.
   */
  sharedRam?: boolean;
}

export class Vm {
  readonly vcpus: Vcpu[] = [];
  private closed = false;
  /** eventfds made for this VM (ioeventfds, irqfds, doorbells), closed with it. */
  private readonly eventfds: number[] = [];
  /** Guest RAM's memory slots; protecting pages splits them (introspection, watchpoints). */
  readonly slots: MemorySlots;

  private constructor(
    readonly kvm: Kvm,
    /** Whether the Kvm handle was opened for this VM (and is closed with it). */
    private readonly ownsKvm: boolean,
    readonly fd: number,
    readonly memory: GuestMemory,
    private readonly ramAddr: bigint,
    readonly memSize: number,
    readonly irqchip: boolean,
    readonly pit: boolean,
    /** The memfd guest RAM is a mapping of (VmOptions.sharedRam), closed with the VM; else undefined. */
    readonly ramFd: number | undefined,
    /** KVM's binary statistics of this VM (stats-fd.ts), or -1 when the host has none. */
    readonly statsFd: number,
  ) {
    // KVM counts its own internal slots (TSS, identity map, APIC page) among KVM_CAP_NR_MEMSLOTS: leave room.
    const maxSlots = Math.max(1, (kvm.checkExtension("NR_MEMSLOTS") || 32) - 8);
    this.slots = new MemorySlots(fd, ramAddr, memSize, maxSlots);
  }

  /** Create a VM on `kvm`, or on a /dev/kvm handle of its own (closed with the VM). */
  static create(opts: VmOptions, kvm?: Kvm): Vm {
    const { memSize } = opts;
    if (!Number.isSafeInteger(memSize) || memSize < LAYOUT.MIN_RAM || memSize > LAYOUT.MAX_RAM)
      throw new VmConfigError(
        `guest RAM of ${memSize} bytes is outside 0x${LAYOUT.MIN_RAM.toString(16)}..0x${LAYOUT.MAX_RAM.toString(16)}`,
      );
    if (memSize % 4096 !== 0)
      throw new VmConfigError(`guest RAM of ${memSize} bytes is not a multiple of 4 KiB`);
    const irqchip = opts.irqchip ?? true;
    const pit = opts.pit ?? false;
    if (pit && !irqchip) throw new VmConfigError("the PIT needs the in-kernel irqchip");
    const ownsKvm = kvm === undefined;
    kvm ??= Kvm.open();
    try {
      return Vm.createOn(kvm, ownsKvm, memSize, irqchip, pit, opts.sharedRam ?? false);
    } catch (e) {
      if (ownsKvm) kvm.close();
      throw e;
    }
  }

  private static createOn(
    kvm: Kvm,
    ownsKvm: boolean,
    memSize: number,
    irqchip: boolean,
    pit: boolean,
    sharedRam: boolean,
  ): Vm {
    kvm.requireCaps(pit ? [...REQUIRED_CAPS, "PIT2"] : REQUIRED_CAPS);
    // A signal can interrupt KVM_CREATE_VM (EINTR: seen here under a profiler's SIGPROF); QEMU retries too.
    let fd = libc.ioctlInt(kvm.fd, KVM.CREATE_VM, 0);
    while (fd < 0 && libc.errno() === libc.EINTR) fd = libc.ioctlInt(kvm.fd, KVM.CREATE_VM, 0);
    if (fd < 0)
      throw new VmResourceError(`KVM_CREATE_VM failed: ${new libc.SysError("", libc.errno()).message}`);
    let ramAddr = libc.MAP_FAILED;
    let ramFd: number | undefined;
    try {
      // Intel VT-x runs real mode through a TSS and an identity-mapped page; both sit outside RAM.
      check(libc.ioctlInt(fd, KVM.SET_TSS_ADDR, LAYOUT.TSS), "KVM_SET_TSS_ADDR");
      const idmap = Buffer.alloc(8);
      idmap.writeBigUInt64LE(BigInt(LAYOUT.IDENTITY_MAP));
      check(libc.ioctlPtr(fd, KVM.SET_IDENTITY_MAP_ADDR, idmap), "KVM_SET_IDENTITY_MAP_ADDR");
      if (sharedRam) {
        ramFd = libc.memfdCreate("vmtool-guest-ram", libc.MFD_CLOEXEC);
        if (ramFd < 0)
          throw new VmResourceError(`memfd_create for guest RAM: ${libc.strerror(libc.errno())}`);
        if (libc.ftruncate(ramFd, memSize) < 0)
          throw new VmResourceError(
            `cannot size guest RAM's memfd to ${memSize} bytes: ${libc.strerror(libc.errno())}`,
          );
      }
      // 2 MiB-aligned and advised for transparent huge pages (mapGuestRam).
      ramAddr = mapGuestRam(memSize, ramFd);
      if (ramAddr === libc.MAP_FAILED) throw new VmResourceError(`cannot map ${memSize} bytes of guest RAM`);
      // A child process (gcc, gdb...) must not get a copy of guest RAM.
      libc.madvise(ramAddr, memSize, libc.MADV_DONTFORK);
      const region = Buffer.alloc(kvm_userspace_memory_region.size);
      const o = kvm_userspace_memory_region.off;
      region.writeUInt32LE(0, o.slot);
      region.writeBigUInt64LE(0n, o.guest_phys_addr);
      region.writeBigUInt64LE(BigInt(memSize), o.memory_size);
      region.writeBigUInt64LE(ramAddr, o.userspace_addr);
      check(libc.ioctlPtr(fd, KVM.SET_USER_MEMORY_REGION, region), "KVM_SET_USER_MEMORY_REGION");
      // The irqchip after the RAM slot: changing memslots once an irqchip exists waits for an SRCU grace
      // period (~7 ms measured here), registering RAM first does not.
      if (irqchip) check(libc.ioctlInt(fd, KVM.CREATE_IRQCHIP, 0), "KVM_CREATE_IRQCHIP");
      if (pit)
        check(libc.ioctlPtr(fd, KVM.CREATE_PIT2, Buffer.alloc(kvm_pit_config.size)), "KVM_CREATE_PIT2");
      // Viewed lazily, window by window (GuestMemory): a view of all RAM at once makes V8 collect garbage.
      const memory = new GuestMemory([{ gpa: 0, size: memSize, hostAddr: ramAddr }]);
      return new Vm(kvm, ownsKvm, fd, memory, ramAddr, memSize, irqchip, pit, ramFd, openStatsFd(fd));
    } catch (e) {
      if (ramAddr !== libc.MAP_FAILED) libc.munmap(ramAddr, memSize);
      if (ramFd !== undefined) libc.close(ramFd);
      libc.close(fd);
      throw e;
    }
  }

  /** Create vCPU `id` with the CPUID KVM supports. */
  createVcpu(id = this.vcpus.length): Vcpu {
    const vcpu = Vcpu.create(this, id);
    this.vcpus.push(vcpu);
    return vcpu;
  }

  /** A new non-blocking eventfd that lives as long as the VM (closed by close()). */
  eventfd(): number {
    const fd = newEventfd();
    this.eventfds.push(fd);
    return fd;
  }

  /** Drive an interrupt line of the in-kernel PIC/IOAPIC (ISA IRQs 0..15 go to both). */
  setIrqLine(irq: number, high: boolean): void {
    setIrqLine(this.fd, irq, high);
  }

  /**
   * Release the VM. Only once no vCPU thread runs any more: guest RAM views die with the mapping (a view
   * touched after munmap kills the process).
   */
  /** The in-kernel PIT's state (KVM_GET_PIT2), as an opaque struct kvm_pit_state2; the VM must have a PIT. */
  getPitState(): Buffer {
    if (!this.pit) throw new VmConfigError("this VM has no in-kernel PIT");
    const b = Buffer.alloc(PIT_STATE2_SIZE);
    check(libc.ioctlPtr(this.fd, KVM.GET_PIT2, b), "KVM_GET_PIT2");
    return b;
  }

  /**
   * Load a state from getPitState() (KVM_SET_PIT2). KVM restarts each channel's count from the loaded value
   * and drops the ticks it had queued for re-injection.
   */
  setPitState(state: Buffer): void {
    if (!this.pit) throw new VmConfigError("this VM has no in-kernel PIT");
    check(libc.ioctlPtr(this.fd, KVM.SET_PIT2, state), "KVM_SET_PIT2");
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const v of this.vcpus) v.close();
    libc.munmap(this.ramAddr, this.memSize);
    if (this.ramFd !== undefined) libc.close(this.ramFd);
    // The VM fd first: KVM drops its references to the ioeventfds and irqfds with it.
    libc.close(this.fd);
    if (this.statsFd >= 0) libc.close(this.statsFd);
    for (const fd of this.eventfds) libc.close(fd);
    this.eventfds.length = 0;
    if (this.ownsKvm) this.kvm.close();
  }
}

function check(r: number, call: string): void {
  if (r < 0) throw new libc.SysError(call, libc.errno());
}
