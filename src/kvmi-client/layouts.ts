// Layouts of the kvmi-v7 structs (the `V7` column of the protocol, and its event layouts), and of vmtool's
// extension replies, declared once with the C struct and member names. A message payload is a concatenation
// of them (a vCPU command is kvmi_vcpu_hdr followed by the command's struct). test/kvmi-client/layouts.test.ts
// checks every one against gcc's offsetof/sizeof on the C definitions.
import { struct, type Layout } from "../kvm/layout.js";
import { kvm_regs, kvm_sregs } from "../kvm/structs.js";

const pad = (count: number) => ({ array: "u8", count }) as const;

export const kvmi_msg_hdr = struct("kvmi_msg_hdr", [
  ["id", "u16"],
  ["size", "u16"],
  ["seq", "u32"],
]);

export const kvmi_error_code = struct("kvmi_error_code", [
  ["err", "i32"],
  ["padding", "u32"],
]);

export const kvmi_vcpu_hdr = struct("kvmi_vcpu_hdr", [
  ["vcpu", "u16"],
  ["padding1", "u16"],
  ["padding2", "u32"],
]);

/** The VMM's half of the handshake (QEMU's qemu_vmi_to_introspector). */
export const kvmi_qemu2introspector = struct("kvmi_qemu2introspector", [
  ["struct_size", "u32"],
  ["uuid", pad(16)],
  ["padding", "u32"],
  ["start_time", "i64"],
  ["name", pad(64)],
]);

/** The tool's answer. */
export const kvmi_introspector2qemu = struct("kvmi_introspector2qemu", [
  ["struct_size", "u32"],
  ["cookie_hash", pad(20)],
]);

export const kvmi_features = struct("kvmi_features", [
  ["spp", "u8"],
  ["vmfunc", "u8"],
  ["eptp", "u8"],
  ["ve", "u8"],
  ["padding", pad(4)],
]);

export const kvmi_get_version_reply = struct("kvmi_get_version_reply", [
  ["version", "u32"],
  ["padding", "u32"],
  ["features", kvmi_features],
]);

export const kvmi_check_command = struct("kvmi_check_command", [
  ["id", "u16"],
  ["padding1", "u16"],
  ["padding2", "u32"],
]);

export const kvmi_check_event = struct("kvmi_check_event", [
  ["id", "u16"],
  ["padding1", "u16"],
  ["padding2", "u32"],
]);

export const kvmi_get_guest_info_reply = struct("kvmi_get_guest_info_reply", [
  ["vcpu_count", "u32"],
  ["padding", { array: "u32", count: 3 }],
]);

export const kvmi_get_vcpu_info_reply = struct("kvmi_get_vcpu_info_reply", [["tsc_speed", "u64"]]);

export const kvmi_pause_vcpu = struct("kvmi_pause_vcpu", [
  ["wait", "u8"],
  ["padding1", "u8"],
  ["padding2", "u16"],
  ["padding3", "u32"],
]);

export const kvmi_control_vm_events = struct("kvmi_control_vm_events", [
  ["event_id", "u16"],
  ["enable", "u8"],
  ["padding1", "u8"],
  ["padding2", "u32"],
]);

export const kvmi_control_events = struct("kvmi_control_events", [
  ["event_id", "u16"],
  ["enable", "u8"],
  ["padding1", "u8"],
  ["padding2", "u32"],
]);

export const kvmi_control_cr = struct("kvmi_control_cr", [
  ["enable", "u8"],
  ["padding1", "u8"],
  ["padding2", "u16"],
  ["cr", "u32"],
]);

export const kvmi_control_msr = struct("kvmi_control_msr", [
  ["enable", "u8"],
  ["padding1", "u8"],
  ["padding2", "u16"],
  ["msr", "u32"],
]);

/** GET_REGISTERS request: followed by nmsrs u32 MSR indexes. */
export const kvmi_get_registers = struct("kvmi_get_registers", [
  ["nmsrs", "u16"],
  ["padding1", "u16"],
  ["padding2", "u32"],
]);

/** struct kvm_msrs's head and one struct kvm_msr_entry (<asm/kvm.h>). */
export const kvm_msrs = struct("kvm_msrs", [
  ["nmsrs", "u32"],
  ["pad", "u32"],
]);
export const kvm_msr_entry = struct("kvm_msr_entry", [
  ["index", "u32"],
  ["reserved", "u32"],
  ["data", "u64"],
]);

/** GET_REGISTERS reply (after the error code): followed by nmsrs kvm_msr_entry. */
export const kvmi_get_registers_reply = struct("kvmi_get_registers_reply", [
  ["mode", "u32"],
  ["padding", "u32"],
  ["regs", kvm_regs],
  ["sregs", kvm_sregs],
  ["msrs", kvm_msrs],
]);

export const kvmi_get_cpuid = struct("kvmi_get_cpuid", [
  ["function", "u32"],
  ["index", "u32"],
]);

export const kvmi_get_cpuid_reply = struct("kvmi_get_cpuid_reply", [
  ["eax", "u32"],
  ["ebx", "u32"],
  ["ecx", "u32"],
  ["edx", "u32"],
]);

export const kvmi_read_physical = struct("kvmi_read_physical", [
  ["gpa", "u64"],
  ["size", "u64"],
]);

/** WRITE_PHYSICAL: followed by `size` bytes of data. */
export const kvmi_write_physical = struct("kvmi_write_physical", [
  ["gpa", "u64"],
  ["size", "u64"],
]);

export const kvmi_inject_exception = struct("kvmi_inject_exception", [
  ["nr", "u8"],
  ["padding1", "u8"],
  ["padding2", "u16"],
  ["error_code", "u32"],
  ["address", "u64"],
]);

export const kvmi_page_access_entry = struct("kvmi_page_access_entry", [
  ["gpa", "u64"],
  ["access", "u8"],
  ["padding1", "u8"],
  ["padding2", "u16"],
  ["padding3", "u32"],
]);

/** SET_PAGE_ACCESS: followed by `count` kvmi_page_access_entry. */
export const kvmi_set_page_access = struct("kvmi_set_page_access", [
  ["view", "u16"],
  ["count", "u16"],
  ["padding", "u32"],
]);

export const kvmi_get_mtrr_type = struct("kvmi_get_mtrr_type", [["gpa", "u64"]]);
export const kvmi_get_mtrr_type_reply = struct("kvmi_get_mtrr_type_reply", [
  ["type", "u8"],
  ["padding", pad(7)],
]);

export const kvmi_control_cmd_response = struct("kvmi_control_cmd_response", [
  ["enable", "u8"],
  ["now", "u8"],
  ["padding1", "u16"],
  ["padding2", "u32"],
]);

export const kvmi_get_max_gfn_reply = struct("kvmi_get_max_gfn_reply", [["gfn", "u64"]]);

export const kvmi_vcpu_translate_gva = struct("kvmi_vcpu_translate_gva", [["gva", "u64"]]);
export const kvmi_vcpu_translate_gva_reply = struct("kvmi_vcpu_translate_gva_reply", [["gpa", "u64"]]);

export const kvmi_vcpu_get_xcr = struct("kvmi_vcpu_get_xcr", [
  ["xcr", "u8"],
  ["padding", pad(7)],
]);
export const kvmi_vcpu_get_xcr_reply = struct("kvmi_vcpu_get_xcr_reply", [["value", "u64"]]);

export const kvmi_query_physical = struct("kvmi_query_physical", [["gfn", "u64"]]);
export const kvmi_query_physical_reply = struct("kvmi_query_physical_reply", [
  ["gfn", "u64"],
  ["size", "u64"],
]);

export const kvmi_vcpu_control_singlestep = struct("kvmi_vcpu_control_singlestep", [
  ["enable", "u8"],
  ["padding", pad(7)],
]);

// Events.

/** The nine MSRs every event carries. */
export const kvmi_event_arch_msrs = struct("kvmi_event_arch_msrs", [
  ["sysenter_cs", "u64"],
  ["sysenter_esp", "u64"],
  ["sysenter_eip", "u64"],
  ["efer", "u64"],
  ["star", "u64"],
  ["lstar", "u64"],
  ["cstar", "u64"],
  ["pat", "u64"],
  ["shadow_gs", "u64"],
]);

export const kvmi_event_arch = struct("kvmi_event_arch", [
  ["mode", "u8"],
  ["padding1", "u8"],
  ["view", "u16"],
  ["padding2", pad(4)],
  ["regs", kvm_regs],
  ["sregs", kvm_sregs],
  ["msrs", kvmi_event_arch_msrs],
]);

/** The common part of every event (544 bytes); the event's own data follows at offset `size`. */
export const kvmi_event = struct("kvmi_event", [
  ["size", "u16"],
  ["vcpu", "u16"],
  ["event", "u8"],
  ["padding", pad(3)],
  ["arch", kvmi_event_arch],
]);

export const kvmi_event_cr = struct("kvmi_event_cr", [
  ["cr", "u16"],
  ["padding", { array: "u16", count: 3 }],
  ["old_value", "u64"],
  ["new_value", "u64"],
]);

export const kvmi_event_msr = struct("kvmi_event_msr", [
  ["msr", "u32"],
  ["padding", "u32"],
  ["old_value", "u64"],
  ["new_value", "u64"],
]);

export const kvmi_event_breakpoint = struct("kvmi_event_breakpoint", [
  ["gpa", "u64"],
  ["insn_len", "u8"],
  ["padding", pad(7)],
]);

export const kvmi_event_pf = struct("kvmi_event_pf", [
  ["gva", "u64"],
  ["gpa", "u64"],
  ["access", "u8"],
  ["padding1", "u8"],
  ["view", "u16"],
  ["padding2", "u32"],
]);

export const kvmi_event_trap = struct("kvmi_event_trap", [
  ["vector", "u8"],
  ["padding1", "u8"],
  ["padding2", "u16"],
  ["error_code", "u32"],
  ["cr2", "u64"],
]);

export const kvmi_event_descriptor = struct("kvmi_event_descriptor", [
  ["descriptor", "u8"],
  ["write", "u8"],
  ["padding", pad(6)],
]);

export const kvmi_event_singlestep = struct("kvmi_event_singlestep", [
  ["failed", "u8"],
  ["padding", pad(7)],
]);

export const kvmi_event_cpuid = struct("kvmi_event_cpuid", [
  ["function", "u32"],
  ["index", "u32"],
  ["insn_length", "u8"],
  ["padding1", pad(3)],
  ["padding2", "u32"],
]);

/** EVENT_REPLY: kvmi_vcpu_hdr, this, then the event's own reply data. */
export const kvmi_event_reply = struct("kvmi_event_reply", [
  ["action", "u8"],
  ["event", "u8"],
  ["padding1", "u16"],
  ["padding2", "u32"],
]);

export const kvmi_event_cr_reply = struct("kvmi_event_cr_reply", [["new_val", "u64"]]);
export const kvmi_event_msr_reply = struct("kvmi_event_msr_reply", [["new_val", "u64"]]);
export const kvmi_event_pf_reply = struct("kvmi_event_pf_reply", [
  ["ctx_addr", "u64"],
  ["ctx_size", "u32"],
  ["singlestep", "u8"],
  ["rep_complete", "u8"],
  ["padding", "u16"],
  ["ctx_data", pad(256)],
]);

// vmtool's extension replies.

export const vmtool_memory_map_reply = struct("vmtool_memory_map_reply", [
  ["count", "u32"],
  ["padding", "u32"],
]);
export const vmtool_memory_range = struct("vmtool_memory_range", [
  ["gpa", "u64"],
  ["size", "u64"],
  ["kind", "u32"],
  ["padding", "u32"],
]);

export const vmtool_ram_mapping_reply = struct("vmtool_ram_mapping_reply", [
  ["pid", "u32"],
  ["fd", "i32"],
  ["size", "u64"],
  ["gpa", "u64"],
]);

export const vmtool_translate_explained = struct("vmtool_translate_explained", [["gva", "u64"]]);
export const vmtool_translate_explained_reply = struct("vmtool_translate_explained_reply", [
  ["mode", "u32"],
  ["levels", "u32"],
  ["gpa", "u64"],
  ["stop_reason", "u32"],
  ["padding", "u32"],
]);
export const vmtool_walk_level = struct("vmtool_walk_level", [
  ["level_kind", "u32"],
  ["padding", "u32"],
  ["entry_gpa", "u64"],
  ["entry_value", "u64"],
]);

/** Every layout above, for the layout test. */
export const KVMI_LAYOUTS: readonly Layout[] = [
  kvmi_msg_hdr,
  kvmi_error_code,
  kvmi_vcpu_hdr,
  kvmi_qemu2introspector,
  kvmi_introspector2qemu,
  kvmi_features,
  kvmi_get_version_reply,
  kvmi_check_command,
  kvmi_check_event,
  kvmi_get_guest_info_reply,
  kvmi_get_vcpu_info_reply,
  kvmi_pause_vcpu,
  kvmi_control_vm_events,
  kvmi_control_events,
  kvmi_control_cr,
  kvmi_control_msr,
  kvmi_get_registers,
  kvm_msrs,
  kvm_msr_entry,
  kvmi_get_registers_reply,
  kvmi_get_cpuid,
  kvmi_get_cpuid_reply,
  kvmi_read_physical,
  kvmi_write_physical,
  kvmi_inject_exception,
  kvmi_page_access_entry,
  kvmi_set_page_access,
  kvmi_get_mtrr_type,
  kvmi_get_mtrr_type_reply,
  kvmi_control_cmd_response,
  kvmi_get_max_gfn_reply,
  kvmi_vcpu_translate_gva,
  kvmi_vcpu_translate_gva_reply,
  kvmi_vcpu_get_xcr,
  kvmi_vcpu_get_xcr_reply,
  kvmi_query_physical,
  kvmi_query_physical_reply,
  kvmi_vcpu_control_singlestep,
  kvmi_event_arch_msrs,
  kvmi_event_arch,
  kvmi_event,
  kvmi_event_cr,
  kvmi_event_msr,
  kvmi_event_breakpoint,
  kvmi_event_pf,
  kvmi_event_trap,
  kvmi_event_descriptor,
  kvmi_event_singlestep,
  kvmi_event_cpuid,
  kvmi_event_reply,
  kvmi_event_cr_reply,
  kvmi_event_msr_reply,
  kvmi_event_pf_reply,
  vmtool_memory_map_reply,
  vmtool_memory_range,
  vmtool_ram_mapping_reply,
  vmtool_translate_explained,
  vmtool_translate_explained_reply,
  vmtool_walk_level,
];
