// KVMI on the wire, the dialect of the kvmi-v7 branch that Bitdefender's libkvmi master and LibVMI speak:
// message and event ids, error codes, and the layouts vmtool reads and writes (docs/introspection.md, "The
// protocol"). All little-endian (the host's order on x86-64); padding must be zero.

/** Every message starts with this header; `size` bytes of payload follow. */
export const HEADER_SIZE = 8;
/** The largest payload (4096 * 2 - the header). */
export const MAX_PAYLOAD = 8192 - HEADER_SIZE;
export const KVMI_VERSION = 1;

/** Message ids (kvmi-v7 numbering). */
export const MSG = {
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
  /** vmtool's extensions (ids no kvmi-v7 client sends). */
  VMTOOL_GET_MEMORY_MAP: 0x4001,
  VMTOOL_GET_RAM_MAPPING: 0x4002,
  VMTOOL_TRANSLATE_EXPLAINED: 0x4003,
} as const;

/** Event ids. */
export const EVENT = {
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

/** Event reply actions. */
export const ACTION = { CONTINUE: 0, RETRY: 1, CRASH: 2 } as const;

/** Error codes (linux/kvm_para.h and the series' additions), sent negated. */
export const KVM_E = {
  PERM: 1,
  NOENT: 2,
  E2BIG: 7,
  AGAIN: 11,
  NOMEM: 12,
  FAULT: 14,
  BUSY: 16,
  INVAL: 22,
  OPNOTSUPP: 95,
  NOSYS: 1000,
} as const;

/** SET_PAGE_ACCESS bits. */
export const PAGE_ACCESS = { R: 1, W: 2, X: 4 } as const;

/** Sizes of the structures vmtool reads or writes. */
export const SIZE = {
  vcpuHdr: 8,
  errorCode: 8,
  kvmRegs: 144,
  kvmSregs: 312,
  /** struct kvmi_event_arch: mode, view, regs, sregs, 9 MSRs. */
  eventArch: 8 + 144 + 312 + 9 * 8,
  /** struct kvmi_event: size, vcpu, event, arch. */
  event: 8 + 8 + 144 + 312 + 9 * 8,
  eventReply: 8,
  eventPfReply: 272,
  handshakeToTool: 96,
  handshakeFromTool: 24,
  xsave: 4096,
} as const;

/** The MSRs of kvmi_event_arch, in order. */
export const EVENT_ARCH_MSRS = [
  0x174, // IA32_SYSENTER_CS
  0x175, // IA32_SYSENTER_ESP
  0x176, // IA32_SYSENTER_EIP
  0xc0000080, // EFER
  0xc0000081, // STAR
  0xc0000082, // LSTAR
  0xc0000083, // CSTAR
  0x277, // PAT
  0xc0000102, // KERNEL_GS_BASE ("shadow_gs")
] as const;

/** Size of each event's own data (after struct kvmi_event), and of its reply's own data. */
export const EVENT_DATA = {
  [EVENT.PAUSE_VCPU]: { data: 0, reply: 0 },
  [EVENT.BREAKPOINT]: { data: 16, reply: 0 },
  [EVENT.SINGLESTEP]: { data: 8, reply: 0 },
  [EVENT.MSR]: { data: 24, reply: 8 },
  [EVENT.PF]: { data: 24, reply: 272 },
  [EVENT.TRAP]: { data: 16, reply: 0 },
  [EVENT.HYPERCALL]: { data: 0, reply: 0 },
  [EVENT.CREATE_VCPU]: { data: 0, reply: 0 },
  [EVENT.UNHOOK]: { data: 0, reply: 0 },
} as const satisfies Record<number, { data: number; reply: number }>;

/** A protocol message: header fields and payload. */
export interface Message {
  id: number;
  seq: number;
  payload: Buffer;
}

export function encodeHeader(id: number, size: number, seq: number): Buffer {
  const h = Buffer.alloc(HEADER_SIZE);
  h.writeUInt16LE(id, 0);
  h.writeUInt16LE(size, 2);
  h.writeUInt32LE(seq >>> 0, 4);
  return h;
}

/** A reply: the request's id and seq, the error code, then (on success) the data. */
export function encodeReply(id: number, seq: number, err: number, data?: Uint8Array): Buffer {
  const body = Buffer.alloc(SIZE.errorCode + (err === 0 && data ? data.length : 0));
  body.writeInt32LE(err, 0);
  if (err === 0 && data) body.set(data, SIZE.errorCode);
  return Buffer.concat([encodeHeader(id, body.length, seq), body]);
}

/** Whether the bytes [from, to) of `b` are all zero (padding must be). */
export function zeroes(b: Buffer, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (b[i] !== 0) return false;
  return true;
}
