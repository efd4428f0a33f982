// Bytes on the wire: message payloads built from the layouts (every padding byte zero), replies and events
// decoded with their sizes checked. Pure functions over Buffers; the connection (connection.ts) frames them.
import type { FieldInfo, Layout, Scalar } from "../kvm/layout.js";
import { kvm_regs, kvm_sregs } from "../kvm/structs.js";
import {
  decodeRegs as decodeKvmRegs,
  decodeSregs as decodeKvmSregs,
  encodeRegs as encodeKvmRegs,
  type Regs,
  type Sregs,
} from "../vm/vcpu-state.js";
import { hex } from "../format.js";
import { KvmiProtocolError, KvmiReplyError, KvmiUsageError, commandName } from "./errors.js";
import { Ev, EVENT_NAMES, HEADER_SIZE, MAX_PAYLOAD, type ActionValue } from "./ids.js";
import * as L from "./layouts.js";

// ---- generic encoding ----

type Values<N extends string> = Partial<Record<N, number | bigint>>;

function put(b: Buffer, off: number, type: Scalar, v: number | bigint): void {
  switch (type) {
    case "u8":
      b.writeUInt8(Number(v), off);
      return;
    case "u16":
      b.writeUInt16LE(Number(v), off);
      return;
    case "u32":
      b.writeUInt32LE(Number(v), off);
      return;
    case "i32":
      b.writeInt32LE(Number(v), off);
      return;
    case "u64":
      b.writeBigUInt64LE(BigInt.asUintN(64, BigInt(v)), off);
      return;
    case "i64":
      b.writeBigInt64LE(BigInt.asIntN(64, BigInt(v)), off);
      return;
  }
}

/** The struct's bytes with the given scalar fields set and everything else (padding included) zero. */
export function encode<N extends string>(l: Layout<N>, values: Values<N>, into?: Buffer, at = 0): Buffer {
  const b = into ?? Buffer.alloc(l.size);
  for (const [name, v] of Object.entries(values) as [N, number | bigint | undefined][]) {
    if (v === undefined) continue;
    const f = (l.fields as Readonly<Record<string, FieldInfo>>)[name];
    if (typeof f.type !== "string") throw new Error(`layout ${l.name}.${name} is not a scalar`);
    put(b, at + f.offset, f.type, v);
  }
  return b;
}

/** A vCPU command's payload: kvmi_vcpu_hdr, then the command's own bytes. */
export function vcpuPayload(vcpu: number, ...body: Buffer[]): Buffer {
  return Buffer.concat([encode(L.kvmi_vcpu_hdr, { vcpu: checkVcpu(vcpu) }), ...body]);
}

export function checkVcpu(vcpu: number): number {
  if (!Number.isInteger(vcpu) || vcpu < 0 || vcpu > 0xffff)
    throw new KvmiUsageError(`vCPU ${vcpu}: a vCPU number is 0..65535`);
  return vcpu;
}

/** Header and payload of one message. */
export function frame(id: number, seq: number, payload: Buffer): Buffer {
  if (payload.length > MAX_PAYLOAD)
    throw new KvmiUsageError(
      `${commandName(id)}: a ${payload.length}-byte payload is above the protocol's ${MAX_PAYLOAD}`,
    );
  const b = Buffer.alloc(HEADER_SIZE + payload.length);
  encode(L.kvmi_msg_hdr, { id, size: payload.length, seq }, b);
  payload.copy(b, HEADER_SIZE);
  return b;
}

export interface Header {
  id: number;
  size: number;
  seq: number;
}

export function decodeHeader(b: Buffer): Header {
  const o = L.kvmi_msg_hdr.off;
  return { id: b.readUInt16LE(o.id), size: b.readUInt16LE(o.size), seq: b.readUInt32LE(o.seq) };
}

// ---- registers (kvm_regs and kvm_sregs inside replies and events: the VMM layer's own codecs) ----

export function decodeRegs(b: Buffer, at: number): Regs {
  return decodeKvmRegs(b.subarray(at, at + kvm_regs.size));
}

export function encodeRegs(regs: Regs): Buffer {
  const b = Buffer.alloc(kvm_regs.size);
  encodeKvmRegs(regs, b);
  return b;
}

export function decodeSregs(b: Buffer, at: number): Sregs {
  return decodeKvmSregs(b.subarray(at, at + kvm_sregs.size));
}

// ---- replies ----

/** A reply's data must be exactly `want` bytes. */
export function expectSize(command: number, data: Buffer, want: number): void {
  if (data.length !== want)
    throw new KvmiReplyError(
      `${commandName(command)}: the reply carries ${data.length} bytes of data, the protocol gives it ${want}`,
    );
}

export interface Features {
  spp: boolean;
  vmfunc: boolean;
  eptp: boolean;
  ve: boolean;
}

export interface VersionReply {
  version: number;
  features: Features;
}

export function decodeVersion(command: number, d: Buffer): VersionReply {
  expectSize(command, d, L.kvmi_get_version_reply.size);
  const f = L.kvmi_get_version_reply.off.features;
  const fo = L.kvmi_features.off;
  return {
    version: d.readUInt32LE(L.kvmi_get_version_reply.off.version),
    features: {
      spp: d[f + fo.spp] !== 0,
      vmfunc: d[f + fo.vmfunc] !== 0,
      eptp: d[f + fo.eptp] !== 0,
      ve: d[f + fo.ve] !== 0,
    },
  };
}

export type CpuMode = 2 | 4 | 8;

export interface MsrValue {
  index: number;
  value: bigint;
}

export interface RegistersReply {
  /** 2, 4 or 8: the size of an address in the vCPU's current mode (16-, 32- or 64-bit). */
  mode: number;
  regs: Regs;
  sregs: Sregs;
  msrs: MsrValue[];
}

export function decodeRegisters(command: number, d: Buffer, asked: readonly number[]): RegistersReply {
  const L0 = L.kvmi_get_registers_reply;
  expectSize(command, d, L0.size + L.kvm_msr_entry.size * asked.length);
  const n = d.readUInt32LE(L0.off.msrs + L.kvm_msrs.off.nmsrs);
  if (n !== asked.length)
    throw new KvmiReplyError(
      `${commandName(command)}: the reply has ${n} MSRs, ${asked.length} were asked for`,
    );
  const msrs: MsrValue[] = [];
  for (let i = 0; i < n; i++) {
    const at = L0.size + i * L.kvm_msr_entry.size;
    msrs.push({
      index: d.readUInt32LE(at + L.kvm_msr_entry.off.index),
      value: d.readBigUInt64LE(at + L.kvm_msr_entry.off.data),
    });
  }
  return {
    mode: d.readUInt32LE(L0.off.mode),
    regs: decodeRegs(d, L0.off.regs),
    sregs: decodeSregs(d, L0.off.sregs),
    msrs,
  };
}

export interface MemoryRange {
  gpa: bigint;
  size: bigint;
  /** 1 RAM, 2 an MMIO device window, 3 reserved. */
  kind: number;
}

export function decodeMemoryMap(command: number, d: Buffer): MemoryRange[] {
  const head = L.vmtool_memory_map_reply;
  if (d.length < head.size) expectSize(command, d, head.size);
  const count = d.readUInt32LE(head.off.count);
  expectSize(command, d, head.size + count * L.vmtool_memory_range.size);
  const o = L.vmtool_memory_range.off;
  const out: MemoryRange[] = [];
  for (let i = 0; i < count; i++) {
    const at = head.size + i * L.vmtool_memory_range.size;
    out.push({
      gpa: d.readBigUInt64LE(at + o.gpa),
      size: d.readBigUInt64LE(at + o.size),
      kind: d.readUInt32LE(at + o.kind),
    });
  }
  return out;
}

export interface RamMapping {
  pid: number;
  fd: number;
  size: bigint;
  gpa: bigint;
}

export function decodeRamMapping(command: number, d: Buffer): RamMapping {
  const l = L.vmtool_ram_mapping_reply;
  expectSize(command, d, l.size);
  return {
    pid: d.readUInt32LE(l.off.pid),
    fd: d.readInt32LE(l.off.fd),
    size: d.readBigUInt64LE(l.off.size),
    gpa: d.readBigUInt64LE(l.off.gpa),
  };
}

export interface WalkLevel {
  kind: number;
  entryGpa: bigint;
  entryValue: bigint;
}

export interface TranslationWalk {
  mode: number;
  /** The translation, or undefined where the walk found none (the reply's ~0). */
  gpa: bigint | undefined;
  stopReason: number;
  levels: WalkLevel[];
}

export const NO_GPA = 0xffff_ffff_ffff_ffffn;

export function decodeWalk(command: number, d: Buffer): TranslationWalk {
  const head = L.vmtool_translate_explained_reply;
  if (d.length < head.size) expectSize(command, d, head.size);
  const n = d.readUInt32LE(head.off.levels);
  expectSize(command, d, head.size + n * L.vmtool_walk_level.size);
  const o = L.vmtool_walk_level.off;
  const levels: WalkLevel[] = [];
  for (let i = 0; i < n; i++) {
    const at = head.size + i * L.vmtool_walk_level.size;
    levels.push({
      kind: d.readUInt32LE(at + o.level_kind),
      entryGpa: d.readBigUInt64LE(at + o.entry_gpa),
      entryValue: d.readBigUInt64LE(at + o.entry_value),
    });
  }
  const gpa = d.readBigUInt64LE(head.off.gpa);
  return {
    mode: d.readUInt32LE(head.off.mode),
    gpa: gpa === NO_GPA ? undefined : gpa,
    stopReason: d.readUInt32LE(head.off.stop_reason),
    levels,
  };
}

// ---- events ----

/** The nine MSRs every event carries. */
export type EventMsrs = Record<keyof typeof L.kvmi_event_arch_msrs.off, bigint>;

interface EventBase {
  /** The event id (KVMI_EVENT_*). */
  id: number;
  /** The event's seq: its reply carries the same. */
  seq: number;
  vcpu: number;
  /** 2, 4 or 8 (16-, 32-, 64-bit). */
  mode: number;
  view: number;
  regs: Regs;
  sregs: Sregs;
  msrs: EventMsrs;
}

export type KvmiEvent = EventBase &
  (
    | { kind: "unhook" | "xsetbv" | "hypercall" | "create-vcpu" | "pause" }
    | { kind: "cr"; cr: number; oldValue: bigint; newValue: bigint }
    | { kind: "msr"; msr: number; oldValue: bigint; newValue: bigint }
    | { kind: "breakpoint"; gpa: bigint; insnLen: number }
    | { kind: "pf"; gva: bigint; gpa: bigint; access: number; pfView: number }
    | { kind: "trap"; vector: number; errorCode: number; cr2: bigint }
    | { kind: "descriptor"; descriptor: number; write: boolean }
    | { kind: "singlestep"; failed: boolean }
    | { kind: "cpuid"; function: number; index: number; insnLength: number }
  );
export type EventKind = KvmiEvent["kind"];

/** Each event's kind and the size of its own data after the 544-byte common part. */
export const EVENT_KINDS: ReadonlyMap<number, { kind: EventKind; data: number; reply: number }> = new Map([
  [Ev.UNHOOK, { kind: "unhook", data: 0, reply: 0 }],
  [Ev.CR, { kind: "cr" as const, data: L.kvmi_event_cr.size, reply: L.kvmi_event_cr_reply.size }],
  [Ev.MSR, { kind: "msr" as const, data: L.kvmi_event_msr.size, reply: L.kvmi_event_msr_reply.size }],
  [Ev.XSETBV, { kind: "xsetbv", data: 0, reply: 0 }],
  [Ev.BREAKPOINT, { kind: "breakpoint" as const, data: L.kvmi_event_breakpoint.size, reply: 0 }],
  [Ev.HYPERCALL, { kind: "hypercall", data: 0, reply: 0 }],
  [Ev.PF, { kind: "pf" as const, data: L.kvmi_event_pf.size, reply: L.kvmi_event_pf_reply.size }],
  [Ev.TRAP, { kind: "trap" as const, data: L.kvmi_event_trap.size, reply: 0 }],
  [Ev.DESCRIPTOR, { kind: "descriptor" as const, data: L.kvmi_event_descriptor.size, reply: 0 }],
  [Ev.CREATE_VCPU, { kind: "create-vcpu", data: 0, reply: 0 }],
  [Ev.PAUSE_VCPU, { kind: "pause", data: 0, reply: 0 }],
  [Ev.SINGLESTEP, { kind: "singlestep" as const, data: L.kvmi_event_singlestep.size, reply: 0 }],
  [Ev.CPUID, { kind: "cpuid" as const, data: L.kvmi_event_cpuid.size, reply: 0 }],
] as const);

/**
 * An event's common part (kvmi_event and kvmi_event_arch): the small fields read at once, the registers,
 * segment registers and MSRs decoded from the payload the first time they are read (a tool that looks only
 * at the event's own data, or at RIP, does not pay for the rest).
 */
class EventArch {
  readonly id: number;
  readonly seq: number;
  readonly vcpu: number;
  readonly mode: number;
  readonly view: number;
  readonly #payload: Buffer;
  #regs: Regs | undefined;
  #sregs: Sregs | undefined;
  #msrs: EventMsrs | undefined;

  constructor(id: number, seq: number, p: Buffer) {
    const C = L.kvmi_event;
    const A = L.kvmi_event_arch;
    this.id = id;
    this.seq = seq;
    this.vcpu = p.readUInt16LE(C.off.vcpu);
    this.mode = p[C.off.arch + A.off.mode];
    this.view = p.readUInt16LE(C.off.arch + A.off.view);
    this.#payload = p;
  }

  get regs(): Regs {
    return (this.#regs ??= decodeRegs(this.#payload, L.kvmi_event.off.arch + L.kvmi_event_arch.off.regs));
  }

  get sregs(): Sregs {
    return (this.#sregs ??= decodeSregs(this.#payload, L.kvmi_event.off.arch + L.kvmi_event_arch.off.sregs));
  }

  get msrs(): EventMsrs {
    if (this.#msrs) return this.#msrs;
    const at = L.kvmi_event.off.arch + L.kvmi_event_arch.off.msrs;
    const mo = L.kvmi_event_arch_msrs.off;
    const msrs = {} as EventMsrs;
    for (const n of Object.keys(mo) as (keyof typeof mo)[])
      msrs[n] = this.#payload.readBigUInt64LE(at + mo[n]);
    return (this.#msrs = msrs);
  }
}

/**
 * An event message's payload, decoded. Only the kvmi-v7 sizes are accepted: the common part says it is 544
 * bytes and the event's own data has its exact size; anything else, or an unknown event id (libkvmi drops the
 * connection for those too), is a KvmiProtocolError.
 */
export function decodeEvent(seq: number, p: Buffer): KvmiEvent {
  const C = L.kvmi_event;
  const bad = (what: string) => new KvmiProtocolError(`event seq ${seq}: ${what}`);
  if (p.length < C.size) throw bad(`${p.length} bytes, shorter than the ${C.size}-byte common part`);
  const commonSize = p.readUInt16LE(C.off.size);
  if (commonSize !== C.size)
    throw bad(`its common part says it is ${commonSize} bytes, the kvmi-v7 one is ${C.size}`);
  const id = p[C.off.event];
  const known = EVENT_KINDS.get(id);
  if (!known) throw bad(`unknown event id ${id}`);
  const dataSize = p.length - C.size;
  if (dataSize !== known.data)
    throw bad(
      `${EVENT_NAMES.get(id) ?? id} event with ${dataSize} bytes of its own data, the protocol gives it ${known.data}`,
    );
  const base = new EventArch(id, seq, p) as EventBase;
  const d = C.size;
  // The event's own fields are copied onto the object; the registers stay in the payload until read.
  switch (known.kind) {
    case "cr": {
      const o = L.kvmi_event_cr.off;
      return Object.assign(base, {
        kind: "cr" as const,
        cr: p.readUInt16LE(d + o.cr),
        oldValue: p.readBigUInt64LE(d + o.old_value),
        newValue: p.readBigUInt64LE(d + o.new_value),
      });
    }
    case "msr": {
      const o = L.kvmi_event_msr.off;
      return Object.assign(base, {
        kind: "msr" as const,
        msr: p.readUInt32LE(d + o.msr),
        oldValue: p.readBigUInt64LE(d + o.old_value),
        newValue: p.readBigUInt64LE(d + o.new_value),
      });
    }
    case "breakpoint": {
      const o = L.kvmi_event_breakpoint.off;
      return Object.assign(base, {
        kind: "breakpoint" as const,
        gpa: p.readBigUInt64LE(d + o.gpa),
        insnLen: p[d + o.insn_len],
      });
    }
    case "pf": {
      const o = L.kvmi_event_pf.off;
      return Object.assign(base, {
        kind: "pf" as const,
        gva: p.readBigUInt64LE(d + o.gva),
        gpa: p.readBigUInt64LE(d + o.gpa),
        access: p[d + o.access],
        pfView: p.readUInt16LE(d + o.view),
      });
    }
    case "trap": {
      const o = L.kvmi_event_trap.off;
      return Object.assign(base, {
        kind: "trap" as const,
        vector: p[d + o.vector],
        errorCode: p.readUInt32LE(d + o.error_code),
        cr2: p.readBigUInt64LE(d + o.cr2),
      });
    }
    case "descriptor": {
      const o = L.kvmi_event_descriptor.off;
      return Object.assign(base, {
        kind: "descriptor" as const,
        descriptor: p[d + o.descriptor],
        write: p[d + o.write] !== 0,
      });
    }
    case "singlestep":
      return Object.assign(base, {
        kind: "singlestep" as const,
        failed: p[d + L.kvmi_event_singlestep.off.failed] !== 0,
      });
    case "cpuid": {
      const o = L.kvmi_event_cpuid.off;
      return Object.assign(base, {
        kind: "cpuid" as const,
        function: p.readUInt32LE(d + o.function),
        index: p.readUInt32LE(d + o.index),
        insnLength: p[d + o.insn_length],
      });
    }
    default:
      return Object.assign(base, { kind: known.kind });
  }
}

/** What a PF reply may carry (the emulation context; all zero unless a tool supplies read data). */
export interface PfReplyData {
  ctxAddr?: bigint;
  ctxData?: Uint8Array;
  singlestep?: boolean;
  repComplete?: boolean;
}

export interface EventReplyData {
  /** CR and MSR events: the value the guest's write really sets (default: the value it wrote). */
  newValue?: bigint;
  pf?: PfReplyData;
}

/**
 * The payload of EVENT_REPLY for `ev`: kvmi_vcpu_hdr, kvmi_event_reply, then the event's own reply data
 * (8 bytes for CR and MSR, 272 for PF, none for the others), exactly the sizes the protocol gives. With
 * `headroom`, that many bytes come first (zeros): room for the message header, so that a reply is one buffer.
 */
export function eventReplyPayload(
  ev: KvmiEvent,
  action: ActionValue,
  data: EventReplyData = {},
  headroom = 0,
): Buffer {
  const H = L.kvmi_vcpu_hdr;
  const R = L.kvmi_event_reply;
  const own =
    ev.kind === "cr"
      ? L.kvmi_event_cr_reply.size
      : ev.kind === "msr"
        ? L.kvmi_event_msr_reply.size
        : ev.kind === "pf"
          ? L.kvmi_event_pf_reply.size
          : 0;
  let ctx: Uint8Array | undefined;
  if (ev.kind === "pf") {
    ctx = data.pf?.ctxData ?? new Uint8Array(0);
    const room = L.kvmi_event_pf_reply.fields.ctx_data.size;
    if (ctx.length > room)
      throw new KvmiUsageError(`PF reply: ${ctx.length} bytes of context data, at most ${room}`);
  }
  const b = Buffer.alloc(headroom + H.size + R.size + own);
  b.writeUInt16LE(ev.vcpu, headroom + H.off.vcpu);
  const r = headroom + H.size;
  b[r + R.off.action] = action;
  b[r + R.off.event] = ev.id;
  const at = r + R.size;
  if (ev.kind === "cr" || ev.kind === "msr")
    b.writeBigUInt64LE(
      BigInt.asUintN(64, data.newValue ?? ev.newValue),
      at + L.kvmi_event_msr_reply.off.new_val,
    );
  else if (ev.kind === "pf" && ctx) {
    const pf = data.pf ?? {};
    encode(
      L.kvmi_event_pf_reply,
      {
        ctx_addr: pf.ctxAddr ?? 0n,
        ctx_size: ctx.length,
        singlestep: pf.singlestep === true ? 1 : 0,
        rep_complete: pf.repComplete === true ? 1 : 0,
      },
      b,
      at,
    );
    b.set(ctx, at + L.kvmi_event_pf_reply.off.ctx_data);
  }
  return b;
}

/** "0x1000+0x10": for messages. */
export function range(gpa: bigint, len: number): string {
  return `${hex(gpa)}+${hex(len)}`;
}
