// The numbers of the kvmi-v7 dialect (the flat numbering that libkvmi master, LibVMI and every maintained KVMI
// client send), and of vmtool's own extension commands. Names are the C ones without their KVMI_ prefix.

/** Message ids: commands the tool sends, and the two ids of the event traffic (EVENT_REPLY, EVENT). */
export const Msg = {
  EVENT_REPLY: 0,
  EVENT: 1,
  GET_VERSION: 2,
  CHECK_COMMAND: 3,
  CHECK_EVENT: 4,
  GET_GUEST_INFO: 5,
  GET_VCPU_INFO: 6,
  PAUSE_VCPU: 7,
  CONTROL_VM_EVENTS: 8,
  CONTROL_EVENTS: 9,
  CONTROL_CR: 10,
  CONTROL_MSR: 11,
  CONTROL_VE: 12,
  GET_REGISTERS: 13,
  SET_REGISTERS: 14,
  GET_CPUID: 15,
  GET_XSAVE: 16,
  READ_PHYSICAL: 17,
  WRITE_PHYSICAL: 18,
  INJECT_EXCEPTION: 19,
  GET_PAGE_ACCESS: 20,
  SET_PAGE_ACCESS: 21,
  GET_MAP_TOKEN: 22,
  GET_MTRR_TYPE: 23,
  CONTROL_SPP: 24,
  GET_PAGE_WRITE_BITMAP: 25,
  SET_PAGE_WRITE_BITMAP: 26,
  CONTROL_CMD_RESPONSE: 27,
  SET_VE_INFO_PAGE: 28,
  GET_MAX_GFN: 29,
  GET_NEXT_AVAILABLE_GFN: 31,
  SWITCH_EPT_VIEW: 32,
  DISABLE_VE: 33,
  GET_EPT_VIEW: 34,
  VCPU_TRANSLATE_GVA: 35,
  CONTROL_EPT_VIEW: 36,
  VCPU_GET_XCR: 37,
  VCPU_SET_XSAVE: 38,
  QUERY_PHYSICAL: 39,
  VCPU_ALLOC_GFN: 41,
  VCPU_FREE_GFN: 42,
  CREATE_EPT_VIEW: 43,
  DESTROY_EPT_VIEW: 44,
  VCPU_CHANGE_GFN: 60,
  VCPU_CONTROL_SINGLESTEP: 63,
  /** vmtool: the guest-physical memory map (RAM, device windows, reserved ranges). */
  VMTOOL_GET_MEMORY_MAP: 0x4001,
  /** vmtool: where guest RAM can be mapped read-only by a client on the same host. */
  VMTOOL_GET_RAM_MAPPING: 0x4002,
  /** vmtool: a guest-virtual address translated through the vCPU's paging, level by level. */
  VMTOOL_TRANSLATE_EXPLAINED: 0x4003,
} as const;

/** Every command id a tool may send (not EVENT_REPLY and EVENT), by name. */
export const COMMAND_NAMES: ReadonlyMap<number, string> = new Map(
  Object.entries(Msg)
    .filter(([, id]) => id !== Msg.EVENT && id !== Msg.EVENT_REPLY)
    .map(([name, id]) => [id, name]),
);

/** Event ids (the `event` byte of an event's common part). */
export const Ev = {
  UNHOOK: 0,
  CR: 1,
  MSR: 2,
  XSETBV: 3,
  BREAKPOINT: 4,
  HYPERCALL: 5,
  PF: 6,
  TRAP: 7,
  DESCRIPTOR: 8,
  CREATE_VCPU: 9,
  PAUSE_VCPU: 10,
  SINGLESTEP: 11,
  CPUID: 13,
} as const;
export type EventId = (typeof Ev)[keyof typeof Ev];

export const EVENT_NAMES: ReadonlyMap<number, string> = new Map(
  Object.entries(Ev).map(([name, id]) => [id, name]),
);

/** VM events are enabled with CONTROL_VM_EVENTS; the others per vCPU with CONTROL_EVENTS. */
export const VM_EVENTS: ReadonlySet<number> = new Set([Ev.UNHOOK, Ev.CREATE_VCPU]);

/** What the tool tells a vCPU that waits for an event reply. */
export const Action = { CONTINUE: 0, RETRY: 1, CRASH: 2 } as const;
export type ActionValue = (typeof Action)[keyof typeof Action];
export const ACTION_NAMES = ["continue", "retry", "crash"] as const;
export type ActionName = (typeof ACTION_NAMES)[number];

/** SET_PAGE_ACCESS bits: what the guest may still do with the page (rwx = no restriction). */
export const Access = { R: 1, W: 2, X: 4, SVE: 8, RWX: 7 } as const;

/** Descriptor event: which table register. */
export const DESCRIPTOR_NAMES: ReadonlyMap<number, string> = new Map([
  [1, "IDTR"],
  [2, "GDTR"],
  [3, "LDTR"],
  [4, "TR"],
]);

/**
 * The KVM_E* error codes a reply carries (negated in the reply's `err`), with their errno names. KVM_ENOSYS
 * is 1000 (not errno's 38), the others are the errno values.
 */
export const KVM_ERRORS: ReadonlyMap<number, { name: string; text: string }> = new Map([
  [1, { name: "EPERM", text: "not allowed" }],
  [2, { name: "ENOENT", text: "no such command, event or object" }],
  [7, { name: "E2BIG", text: "too big" }],
  [11, { name: "EAGAIN", text: "try again (the vCPU is not ready)" }],
  [12, { name: "ENOMEM", text: "out of memory" }],
  [14, { name: "EFAULT", text: "bad address" }],
  [16, { name: "EBUSY", text: "busy" }],
  [22, { name: "EINVAL", text: "invalid argument" }],
  [95, { name: "EOPNOTSUPP", text: "not possible in this setup" }],
  [1000, { name: "ENOSYS", text: "not implemented" }],
]);
export const KVM_EPERM = 1;
export const KVM_ENOENT = 2;
export const KVM_E2BIG = 7;
export const KVM_EAGAIN = 11;
export const KVM_ENOMEM = 12;
export const KVM_EFAULT = 14;
export const KVM_EBUSY = 16;
export const KVM_EINVAL = 22;
export const KVM_EOPNOTSUPP = 95;
export const KVM_ENOSYS = 1000;

/** "-KVM_EINVAL (invalid argument)", or the bare number for a code outside the list. */
export function kvmErrorText(err: number): string {
  const e = KVM_ERRORS.get(-err);
  return e ? `-KVM_${e.name} (${e.text})` : `error ${err}`;
}

/** VMTOOL_GET_MEMORY_MAP: what a range of guest-physical addresses is. */
export const MEMORY_KINDS: ReadonlyMap<number, string> = new Map([
  [1, "ram"],
  [2, "mmio"],
  [3, "reserved"],
]);
export const MEMORY_KIND_RAM = 1;

/** VMTOOL_TRANSLATE_EXPLAINED: the paging mode the walk used. */
export const PAGING_MODES: ReadonlyMap<number, string> = new Map([
  [0, "none"],
  [1, "32-bit"],
  [2, "pae"],
  [3, "4-level"],
  [4, "5-level"],
  [5, "invalid (CR0, CR4 and EFER select no paging mode)"],
]);
/** VMTOOL_TRANSLATE_EXPLAINED: which table an entry of the walk belongs to. */
export const WALK_LEVEL_KINDS: ReadonlyMap<number, string> = new Map([
  [1, "PTE"],
  [2, "PDE"],
  [3, "PDPTE"],
  [4, "PML4E"],
  [5, "PML5E"],
]);
/** VMTOOL_TRANSLATE_EXPLAINED: why the walk ended. */
export const WALK_STOP_REASONS: ReadonlyMap<number, string> = new Map([
  [0, "translated"],
  [1, "entry not present"],
  [2, "reserved bit set in an entry"],
  [3, "non-canonical address"],
  [4, "page table outside guest RAM"],
  [5, "linear address wider than the paging mode's"],
  [6, "no paging mode, or a walk past the page tables"],
]);

/** The payload limit of one message (4096 * 2 - the 8-byte header). */
export const MAX_PAYLOAD = 8184;
export const HEADER_SIZE = 8;
/** The page size READ_PHYSICAL and WRITE_PHYSICAL stay within (the V7 kernel maps the one page holding gpa). */
export const PAGE_SIZE = 4096;
/** The struct_size of the VMM's handshake that libkvmi accepts: at least offsetof(name), at most 64 KiB. */
export const HANDSHAKE_MIN = 32;
export const HANDSHAKE_MAX = 64 * 1024;
/** The protocol version every dialect reports (it never changed); libkvmi refuses less. */
export const MIN_VERSION = 1;
