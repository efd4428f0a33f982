// KVM ioctl request numbers, computed the way <asm-generic/ioctl.h> does (_IO/_IOR/_IOW/_IOWR), with the
// argument sizes taken from the declared layouts. `>>> 0` keeps them unsigned: `2 << 30` is negative in JS.
import * as S from "./structs.js";

const KVMIO = 0xae;
/** sizeof(struct kvm_pit_state2). */
export const PIT_STATE2_SIZE = 112;
const NONE = 0;
const WRITE = 1;
const READ = 2;

export function ioc(dir: number, type: number, nr: number, size: number): number {
  return ((dir << 30) | (size << 16) | (type << 8) | nr) >>> 0;
}
const IO = (nr: number) => ioc(NONE, KVMIO, nr, 0);
const IOR = (nr: number, size: number) => ioc(READ, KVMIO, nr, size);
const IOW = (nr: number, size: number) => ioc(WRITE, KVMIO, nr, size);
const IOWR = (nr: number, size: number) => ioc(READ | WRITE, KVMIO, nr, size);

export const KVM = {
  // system fd (/dev/kvm)
  GET_API_VERSION: IO(0x00),
  CREATE_VM: IO(0x01),
  GET_MSR_INDEX_LIST: IOWR(0x02, S.kvm_msr_list.size),
  CHECK_EXTENSION: IO(0x03),
  GET_VCPU_MMAP_SIZE: IO(0x04),
  GET_SUPPORTED_CPUID: IOWR(0x05, S.kvm_cpuid2.size),
  GET_EMULATED_CPUID: IOWR(0x09, S.kvm_cpuid2.size),
  GET_MSR_FEATURE_INDEX_LIST: IOWR(0x0a, S.kvm_msr_list.size),
  // vm fd
  CREATE_VCPU: IO(0x41),
  SET_USER_MEMORY_REGION: IOW(0x46, S.kvm_userspace_memory_region.size),
  SET_TSS_ADDR: IO(0x47),
  SET_IDENTITY_MAP_ADDR: IOW(0x48, 8),
  CREATE_IRQCHIP: IO(0x60),
  IRQ_LINE: IOW(0x61, S.kvm_irq_level.size),
  IRQ_LINE_STATUS: IOWR(0x67, S.kvm_irq_level.size),
  IRQFD: IOW(0x76, S.kvm_irqfd.size),
  CREATE_PIT2: IOW(0x77, S.kvm_pit_config.size),
  /** struct kvm_pit_state2 (112 bytes: three channel states, flags): the in-kernel PIT's state, kept opaque. */
  GET_PIT2: IOR(0x9f, PIT_STATE2_SIZE),
  SET_PIT2: IOW(0xa0, PIT_STATE2_SIZE),
  IOEVENTFD: IOW(0x79, S.kvm_ioeventfd.size),
  ENABLE_CAP: IOW(0xa3, S.kvm_enable_cap.size),
  X86_SET_MSR_FILTER: IOW(0xc6, S.kvm_msr_filter.size),
  GET_STATS_FD: IO(0xce),
  // vcpu fd (GET_MSRS on the system fd reads feature MSRs)
  RUN: IO(0x80),
  GET_REGS: IOR(0x81, S.kvm_regs.size),
  SET_REGS: IOW(0x82, S.kvm_regs.size),
  GET_SREGS: IOR(0x83, S.kvm_sregs.size),
  SET_SREGS: IOW(0x84, S.kvm_sregs.size),
  TRANSLATE: IOWR(0x85, S.kvm_translation.size),
  GET_MSRS: IOWR(0x88, S.kvm_msrs.size),
  SET_MSRS: IOW(0x89, S.kvm_msrs.size),
  SET_SIGNAL_MASK: IOW(0x8b, S.kvm_signal_mask.size),
  SET_CPUID2: IOW(0x90, S.kvm_cpuid2.size),
  GET_CPUID2: IOWR(0x91, S.kvm_cpuid2.size),
  GET_MP_STATE: IOR(0x98, S.kvm_mp_state.size),
  SET_MP_STATE: IOW(0x99, S.kvm_mp_state.size),
  SET_GUEST_DEBUG: IOW(0x9b, S.kvm_guest_debug.size),
  GET_VCPU_EVENTS: IOR(0x9f, S.kvm_vcpu_events.size),
  SET_VCPU_EVENTS: IOW(0xa0, S.kvm_vcpu_events.size),
  GET_FPU: IOR(0x8c, S.kvm_fpu.size),
  /** struct kvm_lapic_state: the local APIC's 1 KiB register page. */
  GET_LAPIC: IOR(0x8e, 1024),
  SET_LAPIC: IOW(0x8f, 1024),
  SET_FPU: IOW(0x8d, S.kvm_fpu.size),
  GET_DEBUGREGS: IOR(0xa1, S.kvm_debugregs.size),
  SET_DEBUGREGS: IOW(0xa2, S.kvm_debugregs.size),
  GET_XSAVE: IOR(0xa4, S.kvm_xsave.size),
  SET_XSAVE: IOW(0xa5, S.kvm_xsave.size),
  GET_XCRS: IOR(0xa6, S.kvm_xcrs.size),
  SET_XCRS: IOW(0xa7, S.kvm_xcrs.size),
  GET_TSC_KHZ: IO(0xa3),
} as const;
export type KvmIoctlName = keyof typeof KVM;

/** KVM_EXIT_* exit reasons in struct kvm_run (<linux/kvm.h>). */
export const KVM_EXIT = {
  UNKNOWN: 0,
  EXCEPTION: 1,
  IO: 2,
  HYPERCALL: 3,
  DEBUG: 4,
  HLT: 5,
  MMIO: 6,
  IRQ_WINDOW_OPEN: 7,
  SHUTDOWN: 8,
  FAIL_ENTRY: 9,
  INTR: 10,
  SET_TPR: 11,
  TPR_ACCESS: 12,
  S390_SIEIC: 13,
  S390_RESET: 14,
  DCR: 15,
  NMI: 16,
  INTERNAL_ERROR: 17,
  OSI: 18,
  PAPR_HCALL: 19,
  S390_UCONTROL: 20,
  WATCHDOG: 21,
  S390_TSCH: 22,
  EPR: 23,
  SYSTEM_EVENT: 24,
  S390_STSI: 25,
  IOAPIC_EOI: 26,
  HYPERV: 27,
  ARM_NISV: 28,
  X86_RDMSR: 29,
  X86_WRMSR: 30,
  DIRTY_RING_FULL: 31,
  AP_RESET_HOLD: 32,
  X86_BUS_LOCK: 33,
  XEN: 34,
  RISCV_SBI: 35,
  RISCV_CSR: 36,
  NOTIFY: 37,
  LOONGARCH_IOCSR: 38,
  MEMORY_FAULT: 39,
} as const;

const EXIT_NAMES: string[] = [];
for (const [k, v] of Object.entries(KVM_EXIT)) EXIT_NAMES[v] = k;
export function exitReasonName(reason: number): string {
  return EXIT_NAMES[reason] ?? `UNKNOWN_${reason}`;
}

/** kvm_guest_debug.control bits (<asm/kvm.h>, <linux/kvm.h>). */
export const KVM_GUESTDBG = {
  ENABLE: 0x1,
  SINGLESTEP: 0x2,
  USE_SW_BP: 0x10000,
  USE_HW_BP: 0x20000,
  INJECT_DB: 0x40000,
  INJECT_BP: 0x80000,
  BLOCKIRQ: 0x100000,
} as const;

/** KVM_CAP_X86_USER_SPACE_MSR's argument: which denied MSR accesses exit to user space. */
export const KVM_MSR_EXIT_REASON = { INVAL: 1, UNKNOWN: 2, FILTER: 4 } as const;
/** kvm_msr_filter(_range) flags. */
export const KVM_MSR_FILTER = { DEFAULT_ALLOW: 0, DEFAULT_DENY: 1, READ: 1, WRITE: 2 } as const;
/** kvm_userspace_memory_region flags. */
export const KVM_MEM_READONLY = 2;
/** KVM_INTERNAL_ERROR_EMULATION: the instruction emulator could not run the instruction. */
export const KVM_INTERNAL_ERROR_EMULATION = 1;

export const KVM_EXIT_IO_IN = 0;
export const KVM_EXIT_IO_OUT = 1;

export const KVM_MP_STATE = {
  RUNNABLE: 0,
  UNINITIALIZED: 1,
  INIT_RECEIVED: 2,
  HALTED: 3,
  SIPI_RECEIVED: 4,
} as const;

export const KVM_API_VERSION = 12;
