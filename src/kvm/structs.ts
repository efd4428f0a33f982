// Layouts of the KVM API structs vmtool uses (x86-64), from <linux/kvm.h> and <asm/kvm.h>.
// Declared once here; ioctl numbers (ioctls.ts) take their sizes from these, and a test checks them with gcc.
import { struct, at, type Layout } from "./layout.js";

export const kvm_regs = struct("kvm_regs", [
  ["rax", "u64"],
  ["rbx", "u64"],
  ["rcx", "u64"],
  ["rdx", "u64"],
  ["rsi", "u64"],
  ["rdi", "u64"],
  ["rsp", "u64"],
  ["rbp", "u64"],
  ["r8", "u64"],
  ["r9", "u64"],
  ["r10", "u64"],
  ["r11", "u64"],
  ["r12", "u64"],
  ["r13", "u64"],
  ["r14", "u64"],
  ["r15", "u64"],
  ["rip", "u64"],
  ["rflags", "u64"],
]);
export type RegName = keyof typeof kvm_regs.off;

export const kvm_segment = struct("kvm_segment", [
  ["base", "u64"],
  ["limit", "u32"],
  ["selector", "u16"],
  ["type", "u8"],
  ["present", "u8"],
  ["dpl", "u8"],
  ["db", "u8"],
  ["s", "u8"],
  ["l", "u8"],
  ["g", "u8"],
  ["avl", "u8"],
  ["unusable", "u8"],
  ["padding", "u8"],
]);

export const kvm_dtable = struct("kvm_dtable", [
  ["base", "u64"],
  ["limit", "u16"],
  ["padding", { array: "u16", count: 3 }],
]);

export const kvm_sregs = struct("kvm_sregs", [
  ["cs", kvm_segment],
  ["ds", kvm_segment],
  ["es", kvm_segment],
  ["fs", kvm_segment],
  ["gs", kvm_segment],
  ["ss", kvm_segment],
  ["tr", kvm_segment],
  ["ldt", kvm_segment],
  ["gdt", kvm_dtable],
  ["idt", kvm_dtable],
  ["cr0", "u64"],
  ["cr2", "u64"],
  ["cr3", "u64"],
  ["cr4", "u64"],
  ["cr8", "u64"],
  ["efer", "u64"],
  ["apic_base", "u64"],
  ["interrupt_bitmap", { array: "u64", count: 4 }],
]);
export type SegmentName = "cs" | "ds" | "es" | "fs" | "gs" | "ss" | "tr" | "ldt";

export const kvm_userspace_memory_region = struct("kvm_userspace_memory_region", [
  ["slot", "u32"],
  ["flags", "u32"],
  ["guest_phys_addr", "u64"],
  ["memory_size", "u64"],
  ["userspace_addr", "u64"],
]);

// struct kvm_run: the fixed head, then a 256-byte union of per-exit data at offset 32; after it
// kvm_valid_regs/kvm_dirty_regs and the 2048-byte sync-regs area, which vmtool does not use (size pinned).
export const kvm_run = struct(
  "kvm_run",
  [
    ["request_interrupt_window", "u8"],
    ["immediate_exit", "u8"],
    ["padding1", { array: "u8", count: 6 }],
    ["exit_reason", "u32"],
    ["ready_for_interrupt_injection", "u8"],
    ["if_flag", "u8"],
    ["flags", "u16"],
    ["cr8", "u64"],
    ["apic_base", "u64"],
    ["exit", { array: "u8", count: 256 }],
  ],
  { size: 2352 },
);
export const KVM_RUN_EXIT_UNION = kvm_run.off.exit;

export const kvm_run_io = struct("kvm_run.io", [
  ["direction", "u8"],
  ["size", "u8"],
  ["port", "u16"],
  ["count", "u32"],
  ["data_offset", "u64"],
]);
export const kvm_run_mmio = struct("kvm_run.mmio", [
  ["phys_addr", "u64"],
  ["data", { array: "u8", count: 8 }],
  ["len", "u32"],
  ["is_write", "u8"],
]);
export const kvm_run_fail_entry = struct("kvm_run.fail_entry", [
  ["hardware_entry_failure_reason", "u64"],
  ["cpu", "u32"],
]);
export const kvm_run_internal = struct("kvm_run.internal", [
  ["suberror", "u32"],
  ["ndata", "u32"],
  ["data", { array: "u64", count: 16 }],
]);
export const kvm_run_system_event = struct("kvm_run.system_event", [
  ["type", "u32"],
  ["ndata", "u32"],
  ["data", { array: "u64", count: 16 }],
]);
export const kvm_run_hw = struct("kvm_run.hw", [["hardware_exit_reason", "u64"]]);
export const kvm_run_debug = struct("kvm_run.debug.arch", [
  ["exception", "u32"],
  ["pad", "u32"],
  ["pc", "u64"],
  ["dr6", "u64"],
  ["dr7", "u64"],
]);

/** KVM_EXIT_X86_RDMSR / KVM_EXIT_X86_WRMSR: the MSR access user space must complete. */
export const kvm_run_msr = struct("kvm_run.msr", [
  ["error", "u8"],
  ["pad", { array: "u8", count: 7 }],
  ["reason", "u32"],
  ["index", "u32"],
  ["data", "u64"],
]);

/** Absolute offsets inside struct kvm_run of each exit's data. */
export const RUN = {
  io: at(KVM_RUN_EXIT_UNION, kvm_run_io),
  mmio: at(KVM_RUN_EXIT_UNION, kvm_run_mmio),
  fail_entry: at(KVM_RUN_EXIT_UNION, kvm_run_fail_entry),
  internal: at(KVM_RUN_EXIT_UNION, kvm_run_internal),
  system_event: at(KVM_RUN_EXIT_UNION, kvm_run_system_event),
  hw: at(KVM_RUN_EXIT_UNION, kvm_run_hw),
  debug: at(KVM_RUN_EXIT_UNION, kvm_run_debug),
  msr: at(KVM_RUN_EXIT_UNION, kvm_run_msr),
} as const;

export const kvm_irq_level = struct("kvm_irq_level", [
  ["irq", "u32"],
  ["level", "u32"],
]);
export const kvm_mp_state = struct("kvm_mp_state", [["mp_state", "u32"]]);
export const kvm_pit_config = struct("kvm_pit_config", [
  ["flags", "u32"],
  ["pad", { array: "u32", count: 15 }],
]);
export const kvm_msr_entry = struct("kvm_msr_entry", [
  ["index", "u32"],
  ["reserved", "u32"],
  ["data", "u64"],
]);
/** Header of struct kvm_msrs; kvm_msr_entry[nmsrs] follows. */
export const kvm_msrs = struct("kvm_msrs", [
  ["nmsrs", "u32"],
  ["pad", "u32"],
]);
/** Header of struct kvm_msr_list; __u32 indices[nmsrs] follows. */
export const kvm_msr_list = struct("kvm_msr_list", [["nmsrs", "u32"]]);
export const kvm_cpuid_entry2 = struct("kvm_cpuid_entry2", [
  ["function", "u32"],
  ["index", "u32"],
  ["flags", "u32"],
  ["eax", "u32"],
  ["ebx", "u32"],
  ["ecx", "u32"],
  ["edx", "u32"],
  ["padding", { array: "u32", count: 3 }],
]);
/** Header of struct kvm_cpuid2; kvm_cpuid_entry2[nent] follows. */
export const kvm_cpuid2 = struct("kvm_cpuid2", [
  ["nent", "u32"],
  ["padding", "u32"],
]);
export const kvm_ioeventfd = struct("kvm_ioeventfd", [
  ["datamatch", "u64"],
  ["addr", "u64"],
  ["len", "u32"],
  ["fd", "i32"],
  ["flags", "u32"],
  ["pad", { array: "u8", count: 36 }],
]);
export const kvm_irqfd = struct("kvm_irqfd", [
  ["fd", "u32"],
  ["gsi", "u32"],
  ["flags", "u32"],
  ["resamplefd", "u32"],
  ["pad", { array: "u8", count: 16 }],
]);
/** Header of struct kvm_signal_mask; __u8 sigset[len] follows. */
export const kvm_signal_mask = struct("kvm_signal_mask", [["len", "u32"]]);
export const kvm_enable_cap = struct("kvm_enable_cap", [
  ["cap", "u32"],
  ["flags", "u32"],
  ["args", { array: "u64", count: 4 }],
  ["pad", { array: "u8", count: 64 }],
]);
export const kvm_vcpu_events = struct("kvm_vcpu_events", [
  ["exception.injected", "u8"],
  ["exception.nr", "u8"],
  ["exception.has_error_code", "u8"],
  ["exception.pending", "u8"],
  ["exception.error_code", "u32"],
  ["interrupt.injected", "u8"],
  ["interrupt.nr", "u8"],
  ["interrupt.soft", "u8"],
  ["interrupt.shadow", "u8"],
  ["nmi.injected", "u8"],
  ["nmi.pending", "u8"],
  ["nmi.masked", "u8"],
  ["nmi.pad", "u8"],
  ["sipi_vector", "u32"],
  ["flags", "u32"],
  ["smi.smm", "u8"],
  ["smi.pending", "u8"],
  ["smi.smm_inside_nmi", "u8"],
  ["smi.latched_init", "u8"],
  ["triple_fault.pending", "u8"],
  ["reserved", { array: "u8", count: 26 }],
  ["exception_has_payload", "u8"],
  ["exception_payload", "u64"],
]);
export const kvm_guest_debug = struct("kvm_guest_debug", [
  ["control", "u32"],
  ["pad", "u32"],
  ["debugreg", { array: "u64", count: 8 }],
]);
export const kvm_translation = struct("kvm_translation", [
  ["linear_address", "u64"],
  ["physical_address", "u64"],
  ["valid", "u8"],
  ["writeable", "u8"],
  ["usermode", "u8"],
  ["pad", { array: "u8", count: 5 }],
]);

export const kvm_debugregs = struct("kvm_debugregs", [
  ["db", { array: "u64", count: 4 }],
  ["dr6", "u64"],
  ["dr7", "u64"],
  ["flags", "u64"],
  ["reserved", { array: "u64", count: 9 }],
]);
export const kvm_xcr = struct("kvm_xcr", [
  ["xcr", "u32"],
  ["reserved", "u32"],
  ["value", "u64"],
]);
export const kvm_xcrs = struct("kvm_xcrs", [
  ["nr_xcrs", "u32"],
  ["flags", "u32"],
  ["xcrs", { array: "u8", count: 16 * 16 }],
  ["padding", { array: "u64", count: 16 }],
]);
export const kvm_fpu = struct("kvm_fpu", [
  ["fpr", { array: "u8", count: 128 }],
  ["fcw", "u16"],
  ["fsw", "u16"],
  ["ftwx", "u8"],
  ["pad1", "u8"],
  ["last_opcode", "u16"],
  ["last_ip", "u64"],
  ["last_dp", "u64"],
  ["xmm", { array: "u8", count: 256 }],
  ["mxcsr", "u32"],
  ["pad2", "u32"],
]);
/** struct kvm_xsave: the 4096-byte legacy region (KVM_GET_XSAVE; KVM_GET_XSAVE2 may return more). */
export const kvm_xsave = struct("kvm_xsave", [["region", { array: "u32", count: 1024 }]]);
export const kvm_msr_filter_range = struct("kvm_msr_filter_range", [
  ["flags", "u32"],
  ["nmsrs", "u32"],
  ["base", "u32"],
  ["bitmap", "u64"], // a pointer to the bitmap in user memory
]);
export const kvm_msr_filter = struct("kvm_msr_filter", [
  ["flags", "u32"],
  ["ranges", { array: kvm_msr_filter_range, count: 16 }],
]);

/** Every layout above, for the layout test. The C name of union members is given by their `name`. */
export const ALL_LAYOUTS: Layout[] = [
  kvm_regs,
  kvm_segment,
  kvm_dtable,
  kvm_sregs,
  kvm_userspace_memory_region,
  kvm_run,
  kvm_irq_level,
  kvm_mp_state,
  kvm_pit_config,
  kvm_msr_entry,
  kvm_msrs,
  kvm_msr_list,
  kvm_cpuid_entry2,
  kvm_cpuid2,
  kvm_ioeventfd,
  kvm_irqfd,
  kvm_signal_mask,
  kvm_enable_cap,
  kvm_vcpu_events,
  kvm_guest_debug,
  kvm_translation,
  kvm_run_msr,
  kvm_debugregs,
  kvm_xcr,
  kvm_xcrs,
  kvm_fpu,
  kvm_xsave,
  kvm_msr_filter_range,
  kvm_msr_filter,
];
