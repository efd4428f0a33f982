// Why a VMM on an unmodified KVM cannot offer some KVMI commands and events: shown next to the VMM's own
// answer (CHECK_COMMAND / CHECK_EVENT) in `vmtool introspect info`.
import { Ev, Msg } from "../../kvmi-client/ids.js";

const EPT_VIEWS = "EPT views need a KVMI kernel: KVM's memory slots are per VM, not per vCPU";

/** Reasons by command id. */
export const COMMAND_REASONS: ReadonlyMap<number, string> = new Map([
  [Msg.CONTROL_CR, "KVM handles control-register writes in the kernel: no exit reaches user space"],
  [Msg.CONTROL_VE, "#VE needs EPT views and a KVMI kernel"],
  [Msg.SET_VE_INFO_PAGE, "#VE needs EPT views and a KVMI kernel"],
  [Msg.DISABLE_VE, "#VE needs EPT views and a KVMI kernel"],
  [Msg.GET_PAGE_ACCESS, "no longer part of the protocol (libkvmi dropped it)"],
  [
    Msg.GET_MAP_TOKEN,
    "remote mapping needs /dev/kvmmem from a KVMI kernel (vmtool offers VMTOOL_GET_RAM_MAPPING)",
  ],
  [Msg.CONTROL_SPP, "sub-page write protection needs a KVMI kernel"],
  [Msg.GET_PAGE_WRITE_BITMAP, "sub-page write protection needs a KVMI kernel"],
  [Msg.SET_PAGE_WRITE_BITMAP, "sub-page write protection needs a KVMI kernel"],
  [Msg.SWITCH_EPT_VIEW, EPT_VIEWS],
  [Msg.GET_EPT_VIEW, EPT_VIEWS],
  [Msg.CONTROL_EPT_VIEW, EPT_VIEWS],
  [Msg.CREATE_EPT_VIEW, EPT_VIEWS],
  [Msg.DESTROY_EPT_VIEW, EPT_VIEWS],
  [Msg.VCPU_CHANGE_GFN, EPT_VIEWS],
]);

/** Reasons by event id. */
export const EVENT_REASONS: ReadonlyMap<number, string> = new Map([
  [Ev.CR, "KVM handles control-register writes in the kernel: no exit reaches user space"],
  [Ev.XSETBV, "KVM handles XSETBV in the kernel: no exit reaches user space"],
  [Ev.DESCRIPTOR, "descriptor-table loads and stores never leave the kernel"],
  [Ev.CPUID, "KVM answers CPUID in the kernel from the VMM's table"],
]);
