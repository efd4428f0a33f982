// vmtool's KVMI client: the tool's side of the kvmi-v7 dialect, as libkvmi speaks it. Every command is a method
// that resolves with its typed reply (or rejects: KvmiCommandError when the VMM answers an error code, a
// KvmiConnectionError when the connection is over); events come through an async iterator and are answered
// with reply(). Batches are sent as libkvmi sends them: [CONTROL_CMD_RESPONSE enable=0 now=1] messages...
// [CONTROL_CMD_RESPONSE enable=1 now=wait], in one write, and only the last one is answered.
import type { Socket } from "node:net";
import type { Regs } from "../vm/vcpu-state.js";
import { hex } from "../format.js";
import {
  KvmiCommandError,
  KvmiProtocolError,
  KvmiReplyError,
  KvmiTimeoutError,
  KvmiUsageError,
  type KvmiConnectionError,
  type KvmiInternalError,
} from "./errors.js";
import {
  Action,
  ACTION_NAMES,
  Ev,
  EVENT_NAMES,
  HEADER_SIZE,
  MAX_PAYLOAD,
  MIN_VERSION,
  Msg,
  PAGE_SIZE,
  VM_EVENTS,
  KVM_EOPNOTSUPP,
  type ActionName,
  type ActionValue,
} from "./ids.js";
import * as L from "./layouts.js";
import { KvmiConnection, type ConnectionOptions, type EventWait, type Handshake } from "./connection.js";
import { acceptOne, connectTo, type ListenOptions } from "./transport.js";
import {
  decodeMemoryMap,
  decodeRamMapping,
  decodeRegisters,
  decodeVersion,
  decodeWalk,
  encode,
  encodeRegs,
  eventReplyPayload,
  expectSize,
  frame,
  range,
  vcpuPayload,
  NO_GPA,
  type EventReplyData,
  type Features,
  type KvmiEvent,
  type MemoryRange,
  type RamMapping,
  type RegistersReply,
  type TranslationWalk,
} from "./wire.js";

export type ClientOptions = ConnectionOptions;

/** A message queued in a batch. */
interface BatchMessage {
  id: number;
  payload: Buffer;
  /** An event reply's seq (the event's): libkvmi does not wait for the batch's reply then. */
  eventSeq?: number;
}

/** libkvmi's batch limits: at most 50 iovecs and about 1 MiB per sendmsg; we count messages. */
const BATCH_MAX_MESSAGES = 48;
const BATCH_MAX_BYTES = 1024 * 1024 - 2 * (8 + L.kvmi_control_cmd_response.size);

/**
 * Messages sent together, answered once. Commands in a batch get no reply of their own: an error in one of
 * them is not reported (that is KVMI's design; the VMM may log it).
 */
export class Batch {
  private readonly messages: BatchMessage[] = [];

  constructor(private readonly client: KvmiClient) {}

  get length(): number {
    return this.messages.length;
  }

  /** Any command, by id and payload. */
  add(id: number, payload: Buffer): this {
    this.messages.push({ id, payload });
    return this;
  }

  pauseVcpu(vcpu: number, wait = true): this {
    return this.add(Msg.PAUSE_VCPU, vcpuPayload(vcpu, encode(L.kvmi_pause_vcpu, { wait: wait ? 1 : 0 })));
  }

  setRegisters(vcpu: number, regs: Regs): this {
    return this.add(Msg.SET_REGISTERS, vcpuPayload(vcpu, encodeRegs(regs)));
  }

  setPageAccess(entries: readonly PageAccess[], view = 0): this {
    for (const payload of pageAccessPayloads(entries, view)) this.add(Msg.SET_PAGE_ACCESS, payload);
    return this;
  }

  reply(ev: KvmiEvent, action: ActionName | ActionValue = "continue", data?: EventReplyData): this {
    const payload = this.client.prepareReply(ev, action, data);
    this.messages.push({ id: Msg.EVENT_REPLY, payload, eventSeq: ev.seq });
    return this;
  }

  /**
   * Send the batch. Resolves once the VMM answered its last message (unless the batch holds an event reply:
   * libkvmi does not wait then, and neither does this).
   */
  commit(): Promise<void> {
    return this.client.sendBatch(this.messages.splice(0));
  }
}

export interface PageAccess {
  gpa: bigint;
  /** Access bits the guest keeps (Access.R | Access.W | Access.X; 7 lifts every restriction). */
  access: number;
}

function pageAccessPayloads(entries: readonly PageAccess[], view: number): Buffer[] {
  const E = L.kvmi_page_access_entry;
  const perMessage = Math.floor((MAX_PAYLOAD - L.kvmi_set_page_access.size) / E.size);
  const out: Buffer[] = [];
  for (let i = 0; i < entries.length; i += perMessage) {
    const part = entries.slice(i, i + perMessage);
    const b = Buffer.alloc(L.kvmi_set_page_access.size + part.length * E.size);
    encode(L.kvmi_set_page_access, { view, count: part.length }, b);
    part.forEach((e, k) =>
      encode(E, { gpa: e.gpa, access: e.access }, b, L.kvmi_set_page_access.size + k * E.size),
    );
    out.push(b);
  }
  return out;
}

/** vCPUs stopped by pauseAll(), each held by its PAUSE event until resume(). */
export interface Paused {
  vcpus: number[];
  /** The PAUSE events, one per vCPU, with each vCPU's registers where it stopped. */
  events: KvmiEvent[];
}

export function actionValue(a: ActionName | ActionValue): ActionValue {
  if (typeof a === "number") return a;
  const i = ACTION_NAMES.indexOf(a);
  if (i < 0) throw new KvmiUsageError(`'${a}' is not an event action (continue, retry, crash)`);
  return i as ActionValue;
}

export class KvmiClient {
  private readonly answered = new WeakSet<KvmiEvent>();

  private constructor(
    readonly connection: KvmiConnection,
    /** What the VMM said in the handshake. */
    readonly handshake: Handshake,
    /** GET_VERSION's answer, asked once on connecting (as libkvmi does). */
    readonly version: number,
    readonly features: Features,
  ) {}

  /** Speak KVMI on a socket the VMM is at the other end of: handshake, then GET_VERSION. */
  static async open(socket: Socket, opts: ClientOptions = {}): Promise<KvmiClient> {
    const conn = new KvmiConnection(socket, opts);
    try {
      const hs = await conn.handshake;
      const v = decodeVersion(Msg.GET_VERSION, await conn.request(Msg.GET_VERSION, Buffer.alloc(0)));
      if (v.version < MIN_VERSION)
        throw new KvmiProtocolError(
          `the VMM speaks KVMI version ${v.version}; at least ${MIN_VERSION} is needed`,
        );
      return new KvmiClient(conn, hs, v.version, v.features);
    } catch (err) {
      conn.close();
      throw err;
    }
  }

  /** Listen on `path` until a VMM connects (`vmtool run --introspect connect:PATH`), then open(). */
  static async listen(path: string, opts: ClientOptions & ListenOptions = {}): Promise<KvmiClient> {
    return KvmiClient.open(await acceptOne(path, opts), opts);
  }

  /** Connect to a VMM that listens on `path` (`vmtool run --introspect listen:PATH`), then open(). */
  static async connect(path: string, opts: ClientOptions = {}): Promise<KvmiClient> {
    return KvmiClient.open(await connectTo(path), opts);
  }

  close(): void {
    this.connection.close();
  }

  /** Resolves with the reason once the connection is over. */
  get closed(): Promise<KvmiConnectionError | KvmiInternalError> {
    return this.connection.closed;
  }

  // ---- commands (VM) ----

  private request(id: number, payload: Buffer = Buffer.alloc(0), what?: string): Promise<Buffer> {
    return this.connection.request(id, payload, what);
  }

  private async noData(id: number, payload: Buffer, what?: string): Promise<void> {
    expectSize(id, await this.request(id, payload, what), 0);
  }

  async getVersion(): Promise<{ version: number; features: Features }> {
    return decodeVersion(Msg.GET_VERSION, await this.request(Msg.GET_VERSION));
  }

  /** 0 when the VMM has command `id`, else its negative error code (-KVM_ENOENT, -KVM_EPERM...). */
  async checkCommand(id: number): Promise<number> {
    return this.check(Msg.CHECK_COMMAND, L.kvmi_check_command, id);
  }

  /** 0 when the VMM can deliver event `id`, else its negative error code. */
  async checkEvent(id: number): Promise<number> {
    return this.check(Msg.CHECK_EVENT, L.kvmi_check_event, id);
  }

  private async check(cmd: number, l: typeof L.kvmi_check_command, id: number): Promise<number> {
    if (!Number.isInteger(id) || id < 0 || id > 0xffff) throw new KvmiUsageError(`id ${id} is not 0..65535`);
    try {
      await this.noData(cmd, encode(l, { id }));
      return 0;
    } catch (err) {
      if (err instanceof KvmiCommandError) return err.err;
      throw err;
    }
  }

  async getGuestInfo(): Promise<{ vcpuCount: number }> {
    const d = await this.request(Msg.GET_GUEST_INFO);
    expectSize(Msg.GET_GUEST_INFO, d, L.kvmi_get_guest_info_reply.size);
    return { vcpuCount: d.readUInt32LE(L.kvmi_get_guest_info_reply.off.vcpu_count) };
  }

  /** One past the last guest frame number (max over the memory slots of base + pages). */
  async getMaxGfn(): Promise<bigint> {
    const d = await this.request(Msg.GET_MAX_GFN);
    expectSize(Msg.GET_MAX_GFN, d, L.kvmi_get_max_gfn_reply.size);
    return d.readBigUInt64LE(0);
  }

  async controlVmEvents(event: number, enable: boolean): Promise<void> {
    await this.noData(
      Msg.CONTROL_VM_EVENTS,
      encode(L.kvmi_control_vm_events, { event_id: event, enable: enable ? 1 : 0 }),
      `CONTROL_VM_EVENTS ${EVENT_NAMES.get(event) ?? event}`,
    );
  }

  /** Read guest-physical memory within one page (the kvmi-v7 kernel maps the one page that holds `gpa`). */
  async readPhysical(gpa: bigint, size: number): Promise<Buffer> {
    checkInPage("READ_PHYSICAL", gpa, size);
    const d = await this.request(
      Msg.READ_PHYSICAL,
      encode(L.kvmi_read_physical, { gpa, size }),
      `READ_PHYSICAL ${range(gpa, size)}`,
    );
    expectSize(Msg.READ_PHYSICAL, d, size);
    return d;
  }

  /** Write guest-physical memory within one page. */
  async writePhysical(gpa: bigint, data: Uint8Array): Promise<void> {
    checkInPage("WRITE_PHYSICAL", gpa, data.length);
    const head = encode(L.kvmi_write_physical, { gpa, size: data.length });
    await this.noData(
      Msg.WRITE_PHYSICAL,
      Buffer.concat([head, data]),
      `WRITE_PHYSICAL ${range(gpa, data.length)}`,
    );
  }

  /**
   * Read any range, one READ_PHYSICAL per page piece, `window` of them in flight at a time (the replies are
   * matched by seq; KVMI lets a tool send commands without waiting for the replies of those before). Each
   * reply is copied into the result as it comes and the next piece sent at once: no promise or timer per
   * piece. Rejects with the first failing piece's error.
   */
  readMemory(gpa: bigint, length: number, window = 64): Promise<Buffer> {
    if (!Number.isSafeInteger(length) || length < 0)
      return Promise.reject(new KvmiUsageError(`readMemory: length ${length} is not a byte count`));
    if (gpa < 0n || gpa + BigInt(length) > 1n << 64n)
      return Promise.reject(new KvmiUsageError(`readMemory: ${range(gpa, length)} wraps around`));
    if (!Number.isInteger(window) || window < 1)
      return Promise.reject(new KvmiUsageError(`readMemory: window ${window} is not a positive count`));
    // Every byte of the result is written by a piece (or the result is dropped with the error).
    const out = Buffer.allocUnsafe(length);
    if (length === 0) return Promise.resolve(out);
    const conn = this.connection;
    const H = HEADER_SIZE;
    return new Promise<Buffer>((resolve, reject) => {
      let next = 0;
      let inFlight = 0;
      let failed = false;
      const fail = (err: Error) => {
        if (failed) return;
        failed = true;
        reject(err);
      };
      const send = () => {
        while (!failed && inFlight < window && next < length) {
          const at = gpa + BigInt(next);
          const offset = next;
          const size = Math.min(length - offset, PAGE_SIZE - Number(at & BigInt(PAGE_SIZE - 1)));
          next += size;
          inFlight++;
          // The whole message in one buffer: header (seq written by call()), then {u64 gpa; u64 size}.
          const m = Buffer.alloc(H + L.kvmi_read_physical.size);
          m.writeUInt16LE(Msg.READ_PHYSICAL, 0);
          m.writeUInt16LE(L.kvmi_read_physical.size, 2);
          m.writeBigUInt64LE(at, H + L.kvmi_read_physical.off.gpa);
          m.writeBigUInt64LE(BigInt(size), H + L.kvmi_read_physical.off.size);
          conn.call(
            Msg.READ_PHYSICAL,
            m,
            () => `READ_PHYSICAL ${range(at, size)}`,
            (d) => {
              inFlight--;
              if (failed) return;
              if (d.length !== size) {
                fail(
                  new KvmiReplyError(
                    `READ_PHYSICAL ${range(at, size)}: the reply carries ${d.length} bytes of data, not ${size}`,
                  ),
                );
                return;
              }
              d.copy(out, offset);
              if (next >= length && inFlight === 0) resolve(out);
              else send();
            },
            (err) => {
              inFlight--;
              fail(err);
            },
            true,
          );
        }
      };
      send();
    });
  }

  /** Write any range, page piece by page piece, in order. */
  async writeMemory(gpa: bigint, data: Uint8Array): Promise<void> {
    for (const p of pagePieces(gpa, data.length))
      await this.writePhysical(p.gpa, data.subarray(p.offset, p.offset + p.size));
  }

  /** Restrict (or, with Access.RWX, free) guest pages; more than one message's worth goes as several. */
  async setPageAccess(entries: readonly PageAccess[], view = 0): Promise<void> {
    for (const payload of pageAccessPayloads(entries, view)) await this.noData(Msg.SET_PAGE_ACCESS, payload);
  }

  /** The memory slot that holds `gfn`: its first frame and its number of frames. */
  async queryPhysical(gfn: bigint): Promise<{ gfn: bigint; size: bigint }> {
    const d = await this.request(Msg.QUERY_PHYSICAL, encode(L.kvmi_query_physical, { gfn }));
    expectSize(Msg.QUERY_PHYSICAL, d, L.kvmi_query_physical_reply.size);
    return { gfn: d.readBigUInt64LE(0), size: d.readBigUInt64LE(8) };
  }

  // ---- commands (vCPU) ----

  async getVcpuInfo(vcpu: number): Promise<{ tscSpeed: bigint }> {
    const d = await this.request(Msg.GET_VCPU_INFO, vcpuPayload(vcpu));
    expectSize(Msg.GET_VCPU_INFO, d, L.kvmi_get_vcpu_info_reply.size);
    return { tscSpeed: d.readBigUInt64LE(0) };
  }

  /** One PAUSE_VCPU: the vCPU's PAUSE event follows; it stays out of the guest until that event is answered. */
  async pauseVcpu(vcpu: number, wait = true): Promise<void> {
    await this.noData(Msg.PAUSE_VCPU, vcpuPayload(vcpu, encode(L.kvmi_pause_vcpu, { wait: wait ? 1 : 0 })));
  }

  async controlEvents(vcpu: number, event: number, enable: boolean): Promise<void> {
    await this.noData(
      Msg.CONTROL_EVENTS,
      vcpuPayload(vcpu, encode(L.kvmi_control_events, { event_id: event, enable: enable ? 1 : 0 })),
      `CONTROL_EVENTS ${EVENT_NAMES.get(event) ?? event} on vCPU ${vcpu}`,
    );
  }

  async controlCr(vcpu: number, cr: number, enable: boolean): Promise<void> {
    await this.noData(
      Msg.CONTROL_CR,
      vcpuPayload(vcpu, encode(L.kvmi_control_cr, { cr, enable: enable ? 1 : 0 })),
    );
  }

  async controlMsr(vcpu: number, msr: number, enable: boolean): Promise<void> {
    await this.noData(
      Msg.CONTROL_MSR,
      vcpuPayload(vcpu, encode(L.kvmi_control_msr, { msr, enable: enable ? 1 : 0 })),
      `CONTROL_MSR ${hex(msr)} on vCPU ${vcpu}`,
    );
  }

  /**
   * Single-step `vcpu`. SINGLESTEP events come only while they are enabled too (controlEvents(vcpu,
   * Ev.SINGLESTEP, true)), as the kvmi-v7 kernel sends them.
   */
  async controlSinglestep(vcpu: number, enable: boolean): Promise<void> {
    await this.noData(
      Msg.VCPU_CONTROL_SINGLESTEP,
      vcpuPayload(vcpu, encode(L.kvmi_vcpu_control_singlestep, { enable: enable ? 1 : 0 })),
    );
  }

  /** General, segment and control registers, and the MSRs asked for (at most 1024). */
  async getRegisters(vcpu: number, msrs: readonly number[] = []): Promise<RegistersReply> {
    const max = Math.floor((MAX_PAYLOAD - L.kvmi_get_registers_reply.size) / L.kvm_msr_entry.size);
    if (msrs.length > max)
      throw new KvmiUsageError(`GET_REGISTERS: ${msrs.length} MSRs, at most ${max} per reply`);
    const req = Buffer.alloc(L.kvmi_get_registers.size + 4 * msrs.length);
    encode(L.kvmi_get_registers, { nmsrs: msrs.length }, req);
    msrs.forEach((m, i) => req.writeUInt32LE(m >>> 0, L.kvmi_get_registers.size + 4 * i));
    const d = await this.request(Msg.GET_REGISTERS, vcpuPayload(vcpu, req), `GET_REGISTERS on vCPU ${vcpu}`);
    return decodeRegisters(Msg.GET_REGISTERS, d, msrs);
  }

  async setRegisters(vcpu: number, regs: Regs): Promise<void> {
    await this.noData(Msg.SET_REGISTERS, vcpuPayload(vcpu, encodeRegs(regs)));
  }

  async getCpuid(
    vcpu: number,
    fn: number,
    index = 0,
  ): Promise<{ eax: number; ebx: number; ecx: number; edx: number }> {
    const d = await this.request(
      Msg.GET_CPUID,
      vcpuPayload(vcpu, encode(L.kvmi_get_cpuid, { function: fn, index })),
    );
    expectSize(Msg.GET_CPUID, d, L.kvmi_get_cpuid_reply.size);
    const o = L.kvmi_get_cpuid_reply.off;
    return {
      eax: d.readUInt32LE(o.eax),
      ebx: d.readUInt32LE(o.ebx),
      ecx: d.readUInt32LE(o.ecx),
      edx: d.readUInt32LE(o.edx),
    };
  }

  /** The vCPU's XSAVE area, as the VMM sends it (KVM's 4096-byte struct kvm_xsave). */
  async getXsave(vcpu: number): Promise<Buffer> {
    const d = await this.request(Msg.GET_XSAVE, vcpuPayload(vcpu));
    if (d.length % 4 !== 0) expectSize(Msg.GET_XSAVE, d, d.length - (d.length % 4));
    return d;
  }

  async setXsave(vcpu: number, area: Uint8Array): Promise<void> {
    await this.noData(Msg.VCPU_SET_XSAVE, vcpuPayload(vcpu, Buffer.from(area)));
  }

  async getXcr(vcpu: number, xcr = 0): Promise<bigint> {
    const d = await this.request(Msg.VCPU_GET_XCR, vcpuPayload(vcpu, encode(L.kvmi_vcpu_get_xcr, { xcr })));
    expectSize(Msg.VCPU_GET_XCR, d, L.kvmi_vcpu_get_xcr_reply.size);
    return d.readBigUInt64LE(0);
  }

  /** The memory type of `gpa` (MTRR encoding: 0 UC, 1 WC, 4 WT, 5 WP, 6 WB), asked of vCPU 0 as libkvmi does. */
  async getMtrrType(gpa: bigint, vcpu = 0): Promise<number> {
    const d = await this.request(Msg.GET_MTRR_TYPE, vcpuPayload(vcpu, encode(L.kvmi_get_mtrr_type, { gpa })));
    expectSize(Msg.GET_MTRR_TYPE, d, L.kvmi_get_mtrr_type_reply.size);
    return d[0];
  }

  async injectException(
    vcpu: number,
    e: { vector: number; errorCode?: number; address?: bigint },
  ): Promise<void> {
    await this.noData(
      Msg.INJECT_EXCEPTION,
      vcpuPayload(
        vcpu,
        encode(L.kvmi_inject_exception, {
          nr: e.vector,
          error_code: e.errorCode ?? 0,
          address: e.address ?? 0n,
        }),
      ),
    );
  }

  /** The guest-physical address of `gva` through the vCPU's paging, or undefined where it has none. */
  async translateGva(vcpu: number, gva: bigint): Promise<bigint | undefined> {
    const d = await this.request(
      Msg.VCPU_TRANSLATE_GVA,
      vcpuPayload(vcpu, encode(L.kvmi_vcpu_translate_gva, { gva })),
      `VCPU_TRANSLATE_GVA ${hex(gva)} on vCPU ${vcpu}`,
    );
    expectSize(Msg.VCPU_TRANSLATE_GVA, d, L.kvmi_vcpu_translate_gva_reply.size);
    const gpa = d.readBigUInt64LE(0);
    return gpa === NO_GPA ? undefined : gpa;
  }

  // ---- vmtool's extensions ----

  /** VMTOOL_GET_MEMORY_MAP: RAM, device windows and reserved ranges. */
  async getMemoryMap(): Promise<MemoryRange[]> {
    return decodeMemoryMap(Msg.VMTOOL_GET_MEMORY_MAP, await this.request(Msg.VMTOOL_GET_MEMORY_MAP));
  }

  /** VMTOOL_GET_RAM_MAPPING: where guest RAM can be mapped, or undefined when the VMM cannot share it. */
  async getRamMapping(): Promise<RamMapping | undefined> {
    try {
      return decodeRamMapping(Msg.VMTOOL_GET_RAM_MAPPING, await this.request(Msg.VMTOOL_GET_RAM_MAPPING));
    } catch (err) {
      if (err instanceof KvmiCommandError && err.err === -KVM_EOPNOTSUPP) return undefined;
      throw err;
    }
  }

  /** VMTOOL_TRANSLATE_EXPLAINED: the page walk for `gva`, level by level. */
  async translateExplained(vcpu: number, gva: bigint): Promise<TranslationWalk> {
    const d = await this.request(
      Msg.VMTOOL_TRANSLATE_EXPLAINED,
      vcpuPayload(vcpu, encode(L.vmtool_translate_explained, { gva })),
      `VMTOOL_TRANSLATE_EXPLAINED ${hex(gva)} on vCPU ${vcpu}`,
    );
    return decodeWalk(Msg.VMTOOL_TRANSLATE_EXPLAINED, d);
  }

  // ---- batches ----

  batch(): Batch {
    return new Batch(this);
  }

  /** @internal Send messages as libkvmi's batch does (see the top of this file). */
  async sendBatch(messages: BatchMessage[]): Promise<void> {
    if (messages.length === 0) return;
    const conn = this.connection;
    // A batch with one event reply only is sent as it is (libkvmi: batch_with_event_reply_only).
    const only = messages[0];
    if (messages.length === 1 && only.eventSeq !== undefined) {
      conn.write(frame(Msg.EVENT_REPLY, only.eventSeq, only.payload));
      return;
    }
    const wait = messages.every((m) => m.eventSeq === undefined);
    // Parts within libkvmi's limits; every part but the last is sent without waiting for a reply.
    const parts: BatchMessage[][] = [[]];
    let bytes = 0;
    for (const m of messages) {
      const size = 8 + m.payload.length;
      const cur = parts[parts.length - 1];
      if (cur.length > 0 && (cur.length >= BATCH_MAX_MESSAGES || bytes + size > BATCH_MAX_BYTES)) {
        parts.push([]);
        bytes = 0;
      }
      parts[parts.length - 1].push(m);
      bytes += size;
    }
    let last: Promise<Buffer> | undefined;
    parts.forEach((part, i) => {
      const isLast = i === parts.length - 1;
      const cmd = (enable: boolean, now: boolean) =>
        encode(L.kvmi_control_cmd_response, { enable: enable ? 1 : 0, now: now ? 1 : 0 });
      // libkvmi takes the first seq when the batch is made, then one per message, the last one at commit.
      const prefixSeq = conn.nextSeq();
      const frames = [frame(Msg.CONTROL_CMD_RESPONSE, prefixSeq, cmd(false, true))];
      for (const m of part) frames.push(frame(m.id, m.eventSeq ?? conn.nextSeq(), m.payload));
      const suffixSeq = conn.nextSeq();
      const waitHere = isLast && wait;
      frames.push(frame(Msg.CONTROL_CMD_RESPONSE, suffixSeq, cmd(true, waitHere)));
      if (waitHere)
        last = conn.expectReply(Msg.CONTROL_CMD_RESPONSE, suffixSeq, "the batch's CONTROL_CMD_RESPONSE");
      conn.write(Buffer.concat(frames));
    });
    if (last) expectSize(Msg.CONTROL_CMD_RESPONSE, await last, 0);
  }

  // ---- pause and resume ----

  /**
   * Pause every vCPU as libkvmi's kvmi_pause_all_vcpus does: one batch of PAUSE_VCPU wait=1, then (unless
   * `waitForEvents` is false) the PAUSE event of each. Events of other kinds that arrive meanwhile stay queued
   * for events(). A vCPU that waits in another event sends its PAUSE event only once that event is answered.
   */
  async pauseAll(
    opts: { count?: number; waitForEvents?: boolean; timeoutMs?: number } = {},
  ): Promise<Paused> {
    const count = opts.count ?? (await this.getGuestInfo()).vcpuCount;
    const vcpus = Array.from({ length: count }, (_, i) => i);
    const b = this.batch();
    for (const v of vcpus) b.pauseVcpu(v, true);
    await b.commit();
    if (opts.waitForEvents === false) return { vcpus, events: [] };
    return { vcpus, events: await this.pauseEvents(vcpus, opts.timeoutMs) };
  }

  /**
   * Pause every vCPU whatever they are doing: as pauseAll(), but every other event that comes before the
   * PAUSE events is handed to `other`, which must answer it (a vCPU waiting in an event sends its PAUSE
   * event only once that event is answered). UNHOOK is handed over too; it needs no answer.
   */
  async pauseAllAnswering(
    other: (ev: KvmiEvent) => void | Promise<void>,
    opts: { count?: number; timeoutMs?: number } = {},
  ): Promise<Paused> {
    const p = await this.pauseAll({ count: opts.count, waitForEvents: false });
    const waiting = new Set(p.vcpus);
    const timeoutMs = opts.timeoutMs ?? this.connection.replyTimeoutMs;
    while (waiting.size > 0) {
      const ev = await this.connection.nextEvent({ timeoutMs });
      if (!ev) throw this.noPauseEvent([...waiting][0], timeoutMs);
      if (ev.id === Ev.PAUSE_VCPU && waiting.has(ev.vcpu)) {
        waiting.delete(ev.vcpu);
        p.events.push(ev);
      } else await other(ev);
    }
    return p;
  }

  private noPauseEvent(vcpu: number, timeoutMs: number): Error {
    if (this.connection.closeReason) return this.connection.closeReason;
    // A VMM that paused a vCPU and never says so is taken as lost, as for a missing reply.
    const err = new KvmiTimeoutError(
      `vCPU ${vcpu}: no PAUSE event within ${timeoutMs / 1000} s after PAUSE_VCPU: the VMM is taken as lost`,
    );
    this.connection.lose(err);
    return err;
  }

  /** Pause one vCPU and wait for its PAUSE event. */
  async pause(vcpu: number, opts: { timeoutMs?: number } = {}): Promise<Paused> {
    await this.pauseVcpu(vcpu, true);
    return { vcpus: [vcpu], events: await this.pauseEvents([vcpu], opts.timeoutMs) };
  }

  private async pauseEvents(
    vcpus: number[],
    timeoutMs = this.connection.replyTimeoutMs,
  ): Promise<KvmiEvent[]> {
    const events: KvmiEvent[] = [];
    for (const v of vcpus) {
      const ev = await this.connection.nextEvent({
        timeoutMs,
        match: (e) => e.id === Ev.PAUSE_VCPU && e.vcpu === v,
      });
      if (!ev) throw this.noPauseEvent(v, timeoutMs);
      events.push(ev);
    }
    return events;
  }

  /** Let paused vCPUs go on: CONTINUE to each PAUSE event (as LibVMI's vmi_resume_vm). */
  resume(paused: Paused): void {
    for (const ev of paused.events) if (!this.answered.has(ev)) this.reply(ev, "continue");
  }

  // ---- events ----

  /** The next event (see KvmiConnection.nextEvent). */
  nextEvent(opts?: EventWait): Promise<KvmiEvent | undefined> {
    return this.connection.nextEvent(opts);
  }

  /**
   * Hand every event to `handler` as it is read from the socket, in order, with no promise or queue per event
   * (the fast way to answer many; events already queued go to it first). Waits for particular events
   * (pauseAll's PAUSE events, nextEvent with `match`) and plain nextEvent() calls still take theirs first. A
   * handler that throws ends the connection (KvmiInternalError). Returns a function that stops the handing
   * over: events are queued again.
   */
  handleEvents(handler: (ev: KvmiEvent) => void): () => void {
    return this.connection.handleEvents(handler);
  }

  /** Every event, in order, until the connection is over. */
  async *events(): AsyncGenerator<KvmiEvent, void, undefined> {
    for (;;) {
      const ev = await this.connection.nextEvent();
      if (!ev) return;
      yield ev;
    }
  }

  /** Enable or disable an event: per vCPU for vCPU events (every vCPU when `vcpu` is omitted), or the VM's. */
  async controlEvent(event: number, enable: boolean, vcpu?: number): Promise<void> {
    if (VM_EVENTS.has(event)) return this.controlVmEvents(event, enable);
    const vcpus =
      vcpu !== undefined
        ? [vcpu]
        : Array.from({ length: (await this.getGuestInfo()).vcpuCount }, (_, i) => i);
    for (const v of vcpus) await this.controlEvents(v, event, enable);
  }

  /**
   * Answer an event: CONTINUE, RETRY or CRASH, with the event's reply data (CR and MSR: the value really
   * written, default the guest's own; PF: the emulation context, default none). UNHOOK takes no reply.
   */
  reply(ev: KvmiEvent, action: ActionName | ActionValue = "continue", data?: EventReplyData): void {
    // The whole message in one buffer: the header is written into the payload's headroom.
    const b = this.prepareReply(ev, action, data, HEADER_SIZE);
    const H = L.kvmi_msg_hdr.off;
    b.writeUInt16LE(Msg.EVENT_REPLY, H.id);
    b.writeUInt16LE(b.length - HEADER_SIZE, H.size);
    b.writeUInt32LE(ev.seq >>> 0, H.seq);
    this.connection.write(b);
  }

  /** @internal The reply's payload (after `headroom` zero bytes); the event is marked as answered. */
  prepareReply(ev: KvmiEvent, action: ActionName | ActionValue, data?: EventReplyData, headroom = 0): Buffer {
    if (ev.kind === "unhook") throw new KvmiUsageError("an UNHOOK event takes no reply: unhook and close");
    if (this.answered.has(ev))
      throw new KvmiUsageError(`event seq ${ev.seq} (${ev.kind}) was already answered`);
    const payload = eventReplyPayload(ev, actionValue(action), data, headroom);
    this.answered.add(ev);
    return payload;
  }

  /** Whether reply() was called for this event. */
  isAnswered(ev: KvmiEvent): boolean {
    return this.answered.has(ev);
  }
}

function checkInPage(what: string, gpa: bigint, size: number): void {
  if (!Number.isInteger(size) || size < 0)
    throw new KvmiUsageError(`${what}: size ${size} is not a byte count`);
  if (gpa < 0n || gpa + BigInt(size) > 1n << 64n)
    throw new KvmiUsageError(`${what}: ${range(gpa, size)} wraps around`);
  const offset = Number(gpa % BigInt(PAGE_SIZE));
  if (offset + size > PAGE_SIZE)
    throw new KvmiUsageError(`${what}: ${range(gpa, size)} crosses a page boundary (one page per message)`);
}

/** A range cut at page boundaries. */
export function pagePieces(gpa: bigint, length: number): { gpa: bigint; offset: number; size: number }[] {
  const out: { gpa: bigint; offset: number; size: number }[] = [];
  let offset = 0;
  while (offset < length) {
    const at = gpa + BigInt(offset);
    const size = Math.min(length - offset, PAGE_SIZE - Number(at % BigInt(PAGE_SIZE)));
    out.push({ gpa: at, offset, size });
    offset += size;
  }
  return out;
}

export { Action };
