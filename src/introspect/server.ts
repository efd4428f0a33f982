// The KVMI server of `vmtool run --introspect`: vmtool plays the part the patched kernel plays for QEMU, on an
// unmodified KVM, over the VM-control core (src/debug/). Commands are served in order; events (a vCPU stopped
// for something the tool enabled) are sent as they come, interleaved with replies on the one socket; a vCPU
// with an event out waits, parked, for the tool's reply, and serves the tool's commands meanwhile.
//
// What an unmodified KVM cannot give a user-space VMM is answered as not possible (-KVM_EOPNOTSUPP), by
// CHECK_COMMAND / CHECK_EVENT and by the commands themselves: CR, XSETBV, descriptor-table and CPUID events,
// execute restrictions, EPT views, #VE, SPP, VMFUNC, remote mapping tokens (docs/introspection.md says why).
import { KVM_MP_STATE } from "../kvm/ioctls.js";
import { ResumeAction, StopKind, VmControl, type StopInfo } from "../debug/vm-control.js";
import { VmControlError, VmControlUnsupported } from "../debug/errors.js";
import type { Walk } from "../debug/paging.js";
import type { PageAccess } from "../vm/memory-slots.js";
import { SysError } from "../kvm/libc.js";
import { kvm_segment, kvm_sregs } from "../kvm/structs.js";
import type { Connection } from "./connection.js";
import {
  ACTION,
  EVENT,
  EVENT_ARCH_MSRS,
  EVENT_DATA,
  HEADER_SIZE,
  KVM_E,
  KVMI_VERSION,
  MAX_PAYLOAD,
  MSG,
  PAGE_ACCESS,
  SIZE,
  encodeHeader,
  encodeReply,
  zeroes,
  type Message,
} from "./protocol.js";

/** Commands served; every other known id is answered -KVM_EOPNOTSUPP (not possible here), unknown -KVM_ENOSYS. */
const SUPPORTED = new Set<number>([
  MSG.GET_VERSION,
  MSG.CHECK_COMMAND,
  MSG.CHECK_EVENT,
  MSG.GET_GUEST_INFO,
  MSG.GET_VCPU_INFO,
  MSG.PAUSE_VCPU,
  MSG.CONTROL_VM_EVENTS,
  MSG.CONTROL_EVENTS,
  MSG.CONTROL_MSR,
  MSG.GET_REGISTERS,
  MSG.SET_REGISTERS,
  MSG.GET_CPUID,
  MSG.GET_XSAVE,
  MSG.VCPU_SET_XSAVE,
  MSG.VCPU_GET_XCR,
  MSG.GET_MTRR_TYPE,
  MSG.READ_PHYSICAL,
  MSG.WRITE_PHYSICAL,
  MSG.SET_PAGE_ACCESS,
  MSG.INJECT_EXCEPTION,
  MSG.GET_MAX_GFN,
  MSG.QUERY_PHYSICAL,
  MSG.VCPU_TRANSLATE_GVA,
  MSG.VCPU_CONTROL_SINGLESTEP,
  MSG.CONTROL_CMD_RESPONSE,
  MSG.VMTOOL_GET_MEMORY_MAP,
  MSG.VMTOOL_GET_RAM_MAPPING,
  MSG.VMTOOL_TRANSLATE_EXPLAINED,
]);
/** Known to the dialect, not possible on an unmodified KVM from user space. */
const NOT_POSSIBLE = new Set<number>([
  MSG.CONTROL_CR,
  MSG.CONTROL_VE,
  MSG.GET_PAGE_ACCESS,
  MSG.GET_MAP_TOKEN,
  MSG.CONTROL_SPP,
  MSG.GET_PAGE_WRITE_BITMAP,
  MSG.SET_PAGE_WRITE_BITMAP,
  MSG.SET_VE_INFO_PAGE,
  MSG.GET_NEXT_AVAILABLE_GFN,
  MSG.SWITCH_EPT_VIEW,
  MSG.DISABLE_VE,
  MSG.GET_EPT_VIEW,
  MSG.CONTROL_EPT_VIEW,
  MSG.VCPU_ALLOC_GFN,
  MSG.VCPU_FREE_GFN,
  MSG.CREATE_EPT_VIEW,
  MSG.DESTROY_EPT_VIEW,
  MSG.VCPU_CHANGE_GFN,
]);
/** vCPU events a tool may enable with CONTROL_EVENTS. */
const CONTROLLABLE_EVENTS = new Set<number>([EVENT.BREAKPOINT, EVENT.MSR, EVENT.PF, EVENT.SINGLESTEP]);
/** Events an unmodified KVM gives user space no exit for. */
const IMPOSSIBLE_EVENTS = new Set<number>([
  EVENT.CR,
  EVENT.XSETBV,
  EVENT.DESCRIPTOR,
  EVENT.CPUID,
  EVENT.HYPERCALL,
  EVENT.CREATE_VCPU, // every vCPU of a vmtool VM exists before a tool can connect
]);
/** Events always sent (not controllable), and VM events (CONTROL_VM_EVENTS). */
const ALWAYS_EVENTS = new Set<number>([EVENT.PAUSE_VCPU, EVENT.TRAP]);
const VM_EVENTS = new Set<number>([EVENT.UNHOOK]);

/** Most PAUSE_VCPU commands waiting for their events per vCPU (more: -KVM_EBUSY, as KVMI answers). */
const MAX_PENDING_PAUSES = 16;
/** Where event seqs start (the tool picks its own command seqs; the two never need to differ, but it reads better). */
const FIRST_EVENT_SEQ = 0x1000_0000;

/** A command failed with this KVM error code (negated on the wire). */
class KvmiFailure extends Error {
  constructor(
    readonly code: number,
    why: string,
  ) {
    super(why);
  }
}
const fail = (code: number, why: string): never => {
  throw new KvmiFailure(code, why);
};

/** One event sent and not answered yet. */
interface OutstandingEvent {
  seq: number;
  event: number;
  vcpu: number;
  /** What the vCPU stopped for (undefined for PAUSE and TRAP events the server makes itself). */
  stop?: StopInfo;
  /** Sent (the reply timeout runs from then: gathering its registers takes time too). */
  sent: boolean;
}

/** Per-vCPU state the tool set. */
interface VcpuState {
  events: Set<number>;
  /** VCPU_CONTROL_SINGLESTEP: the vCPU steps while this is on and CONTROL_EVENTS enabled SINGLESTEP. */
  singlestep: boolean;
  /** PAUSE_VCPU commands whose PAUSE event has not been sent yet. */
  pauses: number;
  /** An exception injected by INJECT_EXCEPTION: its TRAP event is sent before the vCPU goes on. */
  trapPending: boolean;
  /** The event out, if any (the vCPU waits for its reply). */
  outstanding?: OutstandingEvent;
  /** Events waiting to be sent after the outstanding one is answered. */
  queue: { event: number; stop?: StopInfo }[];
  /** How the vCPU goes on once every event of this park is answered (an MSR event's value...). */
  resume: { action: number; arg: bigint };
  /**
   * The reply timeout: one timer per vCPU, restarted (refresh()) as each event is sent and never cleared by a
   * reply: when it fires with no event out, or one not sent yet, it does nothing. No timer made per event.
   */
  replyTimer?: NodeJS.Timeout;
}

export interface IntrospectionOptions {
  /** How long a vCPU waits for the reply to an event. */
  replyTimeoutMs: number;
  /** What a vCPU does when that time passes: go on (as CONTINUE) or stop the VM. */
  onTimeout: "continue" | "stop";
  /** Lines for standard error (the server's own notes: disconnects, timeouts, ignored replies). */
  log: (line: string) => void;
  /** Stop the whole run (onTimeout "stop", or a CRASH the core cannot do per vCPU). */
  stopRun: (why: string) => void;
}

export class KvmiServer {
  private readonly vcpus: VcpuState[];
  private repliesOn = true;
  private nextEventSeq = FIRST_EVENT_SEQ;
  private vmEvents = new Set<number>();
  private closed = false;

  constructor(
    private readonly core: VmControl,
    private readonly conn: Connection,
    private readonly opts: IntrospectionOptions,
  ) {
    this.vcpus = core.vcpus.map(() => ({
      events: new Set(),
      singlestep: false,
      pauses: 0,
      trapPending: false,
      queue: [],
      resume: { action: ResumeAction.CONTINUE, arg: 0n },
    }));
    core.catchInt3 = false;
    core.snapshotMsrs = EVENT_ARCH_MSRS;
    // Each stop is turned into its event as the vCPU reports it (no promise per event).
    core.onStop((stop) => {
      if (!this.closed) this.onStop(stop);
    });
    conn.onClose((why) => this.detach(why));
  }

  // ---- Messages from the tool ----

  /**
   * Serve one message, in order: at once when nothing needs a vCPU (memory, VM-wide commands, event replies),
   * else with a promise, and the next message is read once it is answered.
   */
  handle(m: Message): Promise<void> | undefined {
    if (this.closed) return undefined;
    if (m.id === MSG.EVENT_REPLY) {
      this.eventReply(m);
      return undefined;
    }
    // CONTROL_CMD_RESPONSE with now=1 applies to itself; with now=0 from the next command on.
    let replyThis = this.repliesOn;
    if (m.id === MSG.CONTROL_CMD_RESPONSE && m.payload.length >= 8 && m.payload[1] === 1)
      replyThis = m.payload[0] !== 0;
    let result: Uint8Array | undefined | Promise<Uint8Array | undefined>;
    try {
      if (m.id === MSG.READ_PHYSICAL) {
        this.readPhysical(m, replyThis);
        return undefined;
      }
      result = this.command(m);
    } catch (e) {
      this.replyError(m, replyThis, e);
      return undefined;
    }
    if (result instanceof Promise)
      return result.then(
        (data) => this.reply(m, replyThis, data),
        (e: unknown) => this.replyError(m, replyThis, e),
      );
    this.reply(m, replyThis, result);
    return undefined;
  }

  private reply(m: Message, replyThis: boolean, data: Uint8Array | undefined): void {
    if (replyThis) this.conn.send(encodeReply(m.id, m.seq, 0, data));
  }

  private replyError(m: Message, replyThis: boolean, e: unknown): void {
    if (!(e instanceof KvmiFailure)) this.opts.log(`introspection: message ${m.id}: ${(e as Error).message}`);
    if (replyThis) this.conn.send(encodeReply(m.id, m.seq, -this.errorCode(e)));
  }

  /** READ_PHYSICAL {u64 gpa; u64 size}: guest RAM copied straight into the reply (one buffer, one copy). */
  private readPhysical(m: Message, replyThis: boolean): void {
    const p = m.payload;
    this.expect(p, 16, []);
    const gpa = p.readBigUInt64LE(0);
    const size = p.readBigUInt64LE(8);
    if (size === 0n || size > BigInt(MAX_PAYLOAD - SIZE.errorCode))
      fail(KVM_E.INVAL, `size ${size}: 1 to ${MAX_PAYLOAD - SIZE.errorCode} bytes`);
    const n = Number(size);
    this.checkGpa(gpa, n);
    if (!replyThis) return; // served in order, not answered: reading changes nothing
    const b = Buffer.allocUnsafe(HEADER_SIZE + SIZE.errorCode + n);
    b.writeUInt16LE(MSG.READ_PHYSICAL, 0);
    b.writeUInt16LE(SIZE.errorCode + n, 2);
    b.writeUInt32LE(m.seq >>> 0, 4);
    b.writeBigUInt64LE(0n, HEADER_SIZE); // err 0, padding 0
    this.core.readPhysInto(Number(gpa), n, b, HEADER_SIZE + SIZE.errorCode);
    this.conn.send(b);
  }

  private errorCode(e: unknown): number {
    if (e instanceof KvmiFailure) return e.code;
    if (e instanceof VmControlUnsupported) return KVM_E.OPNOTSUPP;
    if (e instanceof VmControlError) return KVM_E.INVAL;
    if (e instanceof SysError) return e.errno === 14 ? KVM_E.FAULT : KVM_E.INVAL;
    return KVM_E.INVAL;
  }

  private command(m: Message): Uint8Array | undefined | Promise<Uint8Array | undefined> {
    const p = m.payload;
    switch (m.id) {
      case MSG.GET_VERSION: {
        const r = Buffer.alloc(16); // version, padding, kvmi_features (spp, vmfunc, eptp, ve: none)
        r.writeUInt32LE(KVMI_VERSION, 0);
        return r;
      }
      case MSG.CHECK_COMMAND:
      case MSG.CHECK_EVENT: {
        this.expect(p, 8, [2, 8]);
        const id = p.readUInt16LE(0);
        if (m.id === MSG.CHECK_COMMAND) {
          if (SUPPORTED.has(id) || id === MSG.EVENT_REPLY) return undefined;
          return fail(NOT_POSSIBLE.has(id) ? KVM_E.OPNOTSUPP : KVM_E.NOENT, `command ${id}`);
        }
        if (CONTROLLABLE_EVENTS.has(id) || ALWAYS_EVENTS.has(id) || VM_EVENTS.has(id)) return undefined;
        return fail(IMPOSSIBLE_EVENTS.has(id) ? KVM_E.OPNOTSUPP : KVM_E.NOENT, `event ${id}`);
      }
      case MSG.GET_GUEST_INFO: {
        const r = Buffer.alloc(16);
        r.writeUInt32LE(this.core.vcpus.length, 0);
        return r;
      }
      case MSG.CONTROL_CMD_RESPONSE: {
        this.expect(p, 8, [2, 8]);
        if (p[0] > 1 || p[1] > 1) fail(KVM_E.INVAL, "enable and now are 0 or 1");
        this.repliesOn = p[0] !== 0;
        return undefined;
      }
      case MSG.CONTROL_VM_EVENTS: {
        this.expect(p, 8, [3, 8]);
        const id = p.readUInt16LE(0);
        if (p[2] > 1) fail(KVM_E.INVAL, "enable is 0 or 1");
        if (!VM_EVENTS.has(id))
          fail(id === EVENT.CREATE_VCPU ? KVM_E.OPNOTSUPP : KVM_E.INVAL, `VM event ${id}`);
        if (p[2]) this.vmEvents.add(id);
        else this.vmEvents.delete(id);
        return undefined;
      }
      case MSG.WRITE_PHYSICAL: {
        if (p.length < 16) fail(KVM_E.INVAL, "short WRITE_PHYSICAL");
        const gpa = p.readBigUInt64LE(0);
        const size = p.readBigUInt64LE(8);
        if (size === 0n || BigInt(p.length - 16) !== size)
          fail(KVM_E.INVAL, `size ${size} but ${p.length - 16} bytes given`);
        this.checkGpa(gpa, Number(size));
        this.core.writePhys(Number(gpa), p.subarray(16));
        return undefined;
      }
      case MSG.GET_MAX_GFN: {
        const r = Buffer.alloc(8);
        r.writeBigUInt64LE(BigInt(Math.ceil(this.core.ramSize / 4096)), 0);
        return r;
      }
      case MSG.QUERY_PHYSICAL: {
        this.expect(p, 8, []);
        const gfn = p.readBigUInt64LE(0);
        if (gfn >= BigInt(this.core.ramSize / 4096))
          fail(KVM_E.NOENT, `gfn 0x${gfn.toString(16)} is not RAM`);
        const r = Buffer.alloc(16);
        r.writeBigUInt64LE(0n, 0); // one memory slot: all of RAM from gfn 0
        r.writeBigUInt64LE(BigInt(this.core.ramSize), 8);
        return r;
      }
      case MSG.SET_PAGE_ACCESS:
        return this.setPageAccess(p);
      case MSG.VMTOOL_GET_MEMORY_MAP: {
        const r = Buffer.alloc(8 + 24);
        r.writeUInt32LE(1, 0);
        r.writeBigUInt64LE(0n, 8);
        r.writeBigUInt64LE(BigInt(this.core.ramSize), 16);
        r.writeUInt32LE(1, 24); // RAM
        return r;
      }
      case MSG.VMTOOL_GET_RAM_MAPPING: {
        this.expect(p, 0, []);
        const map = this.core.ramMapping();
        if (!map) return fail(KVM_E.OPNOTSUPP, "guest RAM is not a file another process can map");
        const r = Buffer.alloc(24); // {u32 pid; s32 fd; u64 size; u64 gpa}
        r.writeUInt32LE(map.pid, 0);
        r.writeInt32LE(map.fd, 4);
        r.writeBigUInt64LE(BigInt(map.size), 8);
        r.writeBigUInt64LE(0n, 16);
        return r;
      }
      default:
        break;
    }
    if (NOT_POSSIBLE.has(m.id)) fail(KVM_E.OPNOTSUPP, `command ${m.id} is not possible on an unmodified KVM`);
    if (!SUPPORTED.has(m.id)) fail(KVM_E.NOSYS, `unknown command ${m.id}`);
    return this.vcpuCommand(m);
  }

  /** Commands that start with struct kvmi_vcpu_hdr. */
  private async vcpuCommand(m: Message): Promise<Uint8Array | undefined> {
    const p = m.payload;
    if (p.length < SIZE.vcpuHdr) fail(KVM_E.INVAL, "no vCPU header");
    if (!zeroes(p, 2, 8)) fail(KVM_E.INVAL, "vCPU header padding is not zero");
    const vcpu = p.readUInt16LE(0);
    if (vcpu >= this.core.vcpus.length) fail(KVM_E.INVAL, `no vCPU ${vcpu}`);
    const a = p.subarray(SIZE.vcpuHdr);
    const st = this.vcpus[vcpu];
    switch (m.id) {
      case MSG.GET_VCPU_INFO: {
        const hz = await this.onParked(vcpu, () => this.core.tscHz(vcpu));
        const r = Buffer.alloc(8);
        r.writeBigUInt64LE(BigInt(hz), 0);
        return r;
      }
      case MSG.PAUSE_VCPU: {
        this.expect(a, 8, [1, 8]);
        if (a[0] > 1) fail(KVM_E.INVAL, "wait is 0 or 1");
        if (st.pauses >= MAX_PENDING_PAUSES) fail(KVM_E.BUSY, "too many pauses waiting");
        st.pauses++;
        const parked = this.core.pause(vcpu).then(() => this.pump(vcpu));
        if (a[0] === 1) await parked;
        return undefined;
      }
      case MSG.CONTROL_EVENTS: {
        this.expect(a, 8, [3, 8]);
        const id = a.readUInt16LE(0);
        if (a[2] > 1) fail(KVM_E.INVAL, "enable is 0 or 1");
        if (IMPOSSIBLE_EVENTS.has(id))
          fail(KVM_E.OPNOTSUPP, `event ${id}: no exit reaches user space for it`);
        if (!CONTROLLABLE_EVENTS.has(id)) fail(KVM_E.INVAL, `event ${id} cannot be controlled`);
        const stepped = stepping(st);
        if (a[2]) st.events.add(id);
        else st.events.delete(id);
        this.core.catchInt3 = this.vcpus.some((v) => v.events.has(EVENT.BREAKPOINT));
        // SINGLESTEP events gate the stepping (as the kvmi-v7 kernel sends them only when enabled): a running
        // vCPU whose stepping this starts is stopped and goes on stepping.
        if (stepping(st) && !stepped) await this.onParked(vcpu, () => Promise.resolve());
        return undefined;
      }
      case MSG.CONTROL_MSR: {
        this.expect(a, 8, [1, 4]);
        if (a[0] > 1) fail(KVM_E.INVAL, "enable is 0 or 1");
        const msr = a.readUInt32LE(4);
        if (!(msr <= 0x1fff || (msr >= 0xc0000000 && msr <= 0xc0001fff)))
          fail(KVM_E.INVAL, `MSR 0x${msr.toString(16)} is outside 0-0x1fff and 0xc0000000-0xc0001fff`);
        try {
          this.core.interceptMsr(msr, a[0] ? { write: true } : {});
        } catch (e) {
          if (e instanceof VmControlUnsupported) throw e;
          fail(KVM_E.NOMEM, (e as Error).message);
        }
        return undefined;
      }
      case MSG.GET_REGISTERS: {
        if (a.length < 8) fail(KVM_E.INVAL, "short GET_REGISTERS");
        const n = a.readUInt16LE(0);
        if (!zeroes(a, 2, 8)) fail(KVM_E.INVAL, "padding is not zero");
        if (a.length !== 8 + 4 * n) fail(KVM_E.INVAL, `${n} MSRs asked, ${(a.length - 8) / 4} given`);
        const reply = 8 + SIZE.kvmRegs + SIZE.kvmSregs + 8 + 16 * n;
        if (reply + SIZE.errorCode > MAX_PAYLOAD) fail(KVM_E.E2BIG, `${n} MSRs do not fit in one reply`);
        const idx = Array.from({ length: n }, (_, i) => a.readUInt32LE(8 + 4 * i));
        return this.onParked(vcpu, async () => {
          const { regs, sregs } = await this.core.rawRegs(vcpu);
          const values = await this.core.msrs(vcpu, idx);
          const r = Buffer.alloc(reply);
          r.writeUInt32LE(modeOf(sregs), 0);
          r.set(regs, 8);
          r.set(sregs, 8 + SIZE.kvmRegs);
          const mo = 8 + SIZE.kvmRegs + SIZE.kvmSregs;
          const known = idx.filter((i) => values.has(i));
          r.writeUInt32LE(known.length, mo);
          known.forEach((i, k) => {
            r.writeUInt32LE(i >>> 0, mo + 8 + 16 * k);
            r.writeBigUInt64LE(values.get(i) ?? 0n, mo + 8 + 16 * k + 8);
          });
          return r.subarray(0, mo + 8 + 16 * known.length);
        });
      }
      case MSG.SET_REGISTERS: {
        this.expect(a, SIZE.kvmRegs, []);
        await this.onParked(vcpu, () => this.core.setRawRegs(vcpu, a));
        return undefined;
      }
      case MSG.GET_CPUID: {
        this.expect(a, 8, []);
        const fn = a.readUInt32LE(0);
        const index = a.readUInt32LE(4);
        const table = await this.onParked(vcpu, () => this.core.cpuid(vcpu));
        // KVM_CPUID_FLAG_SIGNIFCANT_INDEX (1): the leaf has subleaves, else index does not matter.
        const e = table.find((x) => x.function === fn && ((x.flags & 1) === 0 || x.index === index));
        if (!e) fail(KVM_E.NOENT, `CPUID leaf 0x${fn.toString(16)} index ${index}`);
        const r = Buffer.alloc(16);
        if (e) [e.eax, e.ebx, e.ecx, e.edx].forEach((v, i) => r.writeUInt32LE(v >>> 0, 4 * i));
        return r;
      }
      case MSG.GET_XSAVE:
        return this.onParked(vcpu, () => this.core.xsave(vcpu));
      case MSG.VCPU_SET_XSAVE: {
        this.expect(a, SIZE.xsave, []);
        await this.onParked(vcpu, () => this.core.setXsave(vcpu, a));
        return undefined;
      }
      case MSG.VCPU_GET_XCR: {
        this.expect(a, 8, [1, 8]);
        if (a[0] !== 0) fail(KVM_E.INVAL, `XCR${a[0]}: only XCR0 exists`);
        const v = await this.onParked(vcpu, () => this.core.xcr0(vcpu));
        const r = Buffer.alloc(8);
        r.writeBigUInt64LE(v, 0);
        return r;
      }
      case MSG.GET_MTRR_TYPE: {
        this.expect(a, 8, []);
        const gpa = a.readBigUInt64LE(0);
        const type = await this.onParked(vcpu, () => this.mtrrType(vcpu, gpa));
        const r = Buffer.alloc(8);
        r[0] = type;
        return r;
      }
      case MSG.INJECT_EXCEPTION: {
        this.expect(a, 16, [1, 4]);
        const nr = a[0];
        const code = a.readUInt32LE(4);
        const address = a.readBigUInt64LE(8);
        if (nr > 31) fail(KVM_E.INVAL, `vector ${nr}`);
        await this.onParked(vcpu, () =>
          this.core.injectException(vcpu, nr, hasErrorCode(nr) ? code : undefined, address),
        );
        st.trapPending = true;
        if (this.core.vcpus[vcpu].parked && !st.outstanding) this.pump(vcpu);
        return undefined;
      }
      case MSG.VCPU_TRANSLATE_GVA: {
        this.expect(a, 8, []);
        const gva = a.readBigUInt64LE(0);
        const gpa = await this.onParked(vcpu, () => this.core.translate(vcpu, gva));
        const r = Buffer.alloc(8);
        r.writeBigUInt64LE(gpa ?? 0xffff_ffff_ffff_ffffn, 0);
        return r;
      }
      case MSG.VMTOOL_TRANSLATE_EXPLAINED: {
        this.expect(a, 8, []);
        const gva = a.readBigUInt64LE(0);
        return encodeWalk(await this.onParked(vcpu, () => this.core.walk(vcpu, gva)));
      }
      case MSG.VCPU_CONTROL_SINGLESTEP: {
        this.expect(a, 8, [1, 8]);
        if (a[0] > 1) fail(KVM_E.INVAL, "enable is 0 or 1");
        const stepped = stepping(st);
        st.singlestep = a[0] === 1;
        // As the kernel runs the command on the vCPU: a running vCPU is stopped for it, and goes on stepping
        // (when SINGLESTEP events are enabled for it); a parked one steps when it goes on.
        if (stepping(st) && !stepped) await this.onParked(vcpu, () => Promise.resolve());
        return undefined;
      }
      default:
        return fail(KVM_E.NOSYS, `command ${m.id}`);
    }
  }

  /** Check a fixed-size request: its length, and that the byte ranges in `pad` ([from, to), ...) are zero. */
  private expect(p: Buffer, size: number, pad: number[]): void {
    if (p.length !== size) fail(KVM_E.INVAL, `${p.length} bytes, expected ${size}`);
    for (let i = 0; i + 1 < pad.length; i += 2)
      if (!zeroes(p, pad[i], pad[i + 1])) fail(KVM_E.INVAL, "padding is not zero");
  }

  private checkGpa(gpa: bigint, size: number): void {
    if (gpa + BigInt(size) > BigInt(this.core.ramSize))
      fail(KVM_E.NOENT, `0x${gpa.toString(16)}+${size} is not inside guest RAM`);
  }

  /** A vCPU command on a running vCPU: it is paused for the command, then goes on (as the kernel does). */
  private async onParked<T>(vcpu: number, fn: () => Promise<T>): Promise<T> {
    const link = this.core.vcpus[vcpu];
    if (link.parked) return fn();
    await this.core.pause(vcpu);
    try {
      return await fn();
    } finally {
      const st = this.vcpus[vcpu];
      if (!st.outstanding && st.queue.length === 0) {
        if (stepping(st)) link.resume(ResumeAction.STEP);
        else link.resume();
      }
    }
  }

  private async setPageAccess(p: Buffer): Promise<undefined> {
    if (p.length < 8) fail(KVM_E.INVAL, "short SET_PAGE_ACCESS");
    const view = p.readUInt16LE(0);
    const count = p.readUInt16LE(2);
    if (!zeroes(p, 4, 8)) fail(KVM_E.INVAL, "padding is not zero");
    if (view !== 0) fail(KVM_E.OPNOTSUPP, `EPT view ${view}: only view 0 exists without EPT views`);
    if (p.length !== 8 + 16 * count) fail(KVM_E.INVAL, `${count} entries, ${(p.length - 8) / 16} given`);
    // Check every entry first: all or nothing.
    const entries: { gpa: number; len: number; access: PageAccess }[] = [];
    for (let i = 0; i < count; i++) {
      const at = 8 + 16 * i;
      const gpa = p.readBigUInt64LE(at);
      const access = p[at + 8];
      if (!zeroes(p, at + 9, at + 16) || access > 7) fail(KVM_E.INVAL, "bad page access entry");
      if ((access & PAGE_ACCESS.X) === 0)
        fail(KVM_E.OPNOTSUPP, "execute restrictions cannot be made without EPT");
      if ((access & PAGE_ACCESS.R) === 0 && access & PAGE_ACCESS.W)
        fail(KVM_E.INVAL, "a page cannot be writable and not readable");
      this.checkGpa(gpa & ~0xfffn, 4096);
      const a = access & PAGE_ACCESS.R ? (access & PAGE_ACCESS.W ? "rw" : "r") : "none";
      entries.push({ gpa: Number(gpa & ~0xfffn), len: 4096, access: a });
    }
    await this.core.changePageAccess(entries);
    return undefined;
  }

  /** The memory type of `gpa` from the vCPU's MTRRs (Intel SDM vol. 3A, 12.11). */
  private async mtrrType(vcpu: number, gpa: bigint): Promise<number> {
    const m = await this.core.msrs(vcpu, [
      0xfe,
      0x2ff,
      ...range(0x200, 16),
      0x250,
      0x258,
      0x259,
      ...range(0x268, 8),
    ]);
    const def = m.get(0x2ff) ?? 0n;
    if ((def & 0x800n) === 0n) return 0; // MTRRs disabled: UC
    const fixedOn = (def & 0x400n) !== 0n && ((m.get(0xfe) ?? 0n) & 0x100n) !== 0n;
    if (fixedOn && gpa < 0x100000n) {
      const byteOf = (msr: number, i: number) => Number(((m.get(msr) ?? 0n) >> BigInt(8 * i)) & 0xffn);
      if (gpa < 0x80000n) return byteOf(0x250, Number(gpa / 0x10000n));
      if (gpa < 0xc0000n) {
        const i = Number((gpa - 0x80000n) / 0x4000n);
        return byteOf(0x258 + (i >> 3), i & 7);
      }
      const i = Number((gpa - 0xc0000n) / 0x1000n);
      return byteOf(0x268 + (i >> 3), i & 7);
    }
    const vcnt = Number((m.get(0xfe) ?? 0n) & 0xffn);
    const types: number[] = [];
    for (let i = 0; i < Math.min(vcnt, 8); i++) {
      const base = m.get(0x200 + 2 * i) ?? 0n;
      const mask = m.get(0x201 + 2 * i) ?? 0n;
      if ((mask & 0x800n) === 0n) continue;
      const mk = mask & ~0xfffn;
      if ((gpa & mk) === (base & mk)) types.push(Number(base & 0xffn));
    }
    if (types.length === 0) return Number(def & 0xffn);
    if (types.length === 1) return types[0];
    if (types.includes(0)) return 0; // UC wins
    if (types.every((t) => t === 6 || t === 4)) return types.includes(4) ? 4 : 6; // WT over WB
    return types[0];
  }

  // ---- Events ----

  /** A stop of the core's: its event, or it goes on when the tool did not ask for that event. */
  private onStop(stop: StopInfo): void {
    const st = this.vcpus[stop.vcpu];
    const event = this.eventFor(stop);
    if (event === undefined) {
      this.passOn(stop);
      return;
    }
    st.queue.push({ event, stop });
    this.pump(stop.vcpu);
  }

  /** Which event a stop is, if the tool enabled it. */
  private eventFor(stop: StopInfo): number | undefined {
    const on = this.vcpus[stop.vcpu].events;
    switch (stop.kind) {
      case StopKind.SW_BREAKPOINT:
      case StopKind.INT3:
        return on.has(EVENT.BREAKPOINT) ? EVENT.BREAKPOINT : undefined;
      case StopKind.DEBUG_OTHER:
        return stop.code === 3 && on.has(EVENT.BREAKPOINT) ? EVENT.BREAKPOINT : undefined;
      case StopKind.SINGLESTEP:
        return stepping(this.vcpus[stop.vcpu]) ? EVENT.SINGLESTEP : undefined;
      case StopKind.MSR_WRITE:
        return on.has(EVENT.MSR) ? EVENT.MSR : undefined;
      case StopKind.PAGE_WRITE:
      case StopKind.PAGE_READ:
        return on.has(EVENT.PF) ? EVENT.PF : undefined;
      default:
        return undefined;
    }
  }

  /** A stop the tool did not ask to hear about: the guest goes on as it would have without the tool. */
  private passOn(stop: StopInfo): void {
    const link = this.core.vcpus[stop.vcpu];
    if (stop.kind === StopKind.INT3 || (stop.kind === StopKind.DEBUG_OTHER && stop.code === 3)) {
      void this.reinjectBreakpoint(stop.vcpu).then(() => this.finish(stop.vcpu));
      return;
    }
    if (stop.kind === StopKind.FAULT) link.resume(ResumeAction.CRASH);
    else this.finish(stop.vcpu);
  }

  /** The guest's own INT3 goes back to the guest: #BP, after the instruction (it is a trap). */
  private async reinjectBreakpoint(vcpu: number): Promise<void> {
    try {
      const regs = await this.core.regs(vcpu);
      await this.core.setRegs(vcpu, { rip: regs.rip + 1n });
      await this.core.injectException(vcpu, 3);
    } catch (e) {
      this.opts.log(`introspection: could not pass the guest's INT3 back to it: ${(e as Error).message}`);
    }
  }

  /** Send the next event of `vcpu` if none is out (PAUSE events for pause commands come first, then TRAP). */
  private pump(vcpu: number): void {
    const st = this.vcpus[vcpu];
    if (this.closed || st.outstanding) return;
    const link = this.core.vcpus[vcpu];
    if (!link.parked) return;
    let next: { event: number; stop?: StopInfo } | undefined;
    if (st.pauses > 0) {
      st.pauses--;
      next = { event: EVENT.PAUSE_VCPU };
    } else if (st.trapPending) {
      st.trapPending = false;
      next = { event: EVENT.TRAP };
    } else next = st.queue.shift();
    if (!next) return;
    this.sendEvent(vcpu, next.event, next.stop);
  }

  private sendEvent(vcpu: number, event: number, stop?: StopInfo): void {
    const st = this.vcpus[vcpu];
    const seq = this.nextEventSeq++ >>> 0;
    const out: OutstandingEvent = { seq, event, vcpu, stop, sent: false };
    st.outstanding = out;
    // From the park's snapshot at once when it holds all the event needs (no promise, no command).
    const now = this.encodeEventNow(seq, vcpu, event, stop);
    if (now) {
      this.sent(st, out, now);
      return;
    }
    this.encodeEvent(seq, vcpu, event, stop).then(
      (msg) => this.sent(st, out, msg),
      (e: unknown) => {
        // The vCPU went away (the run is ending): nothing to report.
        if (st.outstanding === out) st.outstanding = undefined;
        this.opts.log(`introspection: event ${event} of vCPU ${vcpu} not sent: ${(e as Error).message}`);
      },
    );
  }

  private sent(st: VcpuState, out: OutstandingEvent, msg: Buffer): void {
    if (this.closed || st.outstanding !== out) return;
    this.conn.send(msg);
    out.sent = true;
    if (st.replyTimer) st.replyTimer.refresh();
    else st.replyTimer = setTimeout(() => this.timedOut(out.vcpu), this.opts.replyTimeoutMs).unref();
  }

  /**
   * The event's header, struct kvmi_event (size, vcpu, event, then kvmi_event_arch: mode, regs, sregs, 9
   * MSRs), in one buffer with room for the event's own data after it.
   */
  private eventHead(seq: number, vcpu: number, event: number, regs: Uint8Array, sregs: Buffer): Buffer {
    const dataSize = EVENT_DATA[event as keyof typeof EVENT_DATA].data;
    const size = SIZE.event + dataSize;
    const b = Buffer.alloc(HEADER_SIZE + size);
    b.writeUInt16LE(MSG.EVENT, 0);
    b.writeUInt16LE(size, 2);
    b.writeUInt32LE(seq >>> 0, 4);
    const e = HEADER_SIZE;
    b.writeUInt16LE(SIZE.event, e);
    b.writeUInt16LE(vcpu, e + 2);
    b[e + 4] = event;
    b[e + 8] = modeOf(sregs);
    b.set(regs, e + 16);
    b.set(sregs, e + 16 + SIZE.kvmRegs);
    return b;
  }

  /** Where the nine MSRs of kvmi_event_arch go in eventHead()'s buffer. */
  private static readonly MSRS_AT = HEADER_SIZE + 16 + SIZE.kvmRegs + SIZE.kvmSregs;

  /**
   * The whole event message from what the vCPU thread read when it parked, or undefined when that is not
   * enough (no snapshot, or an event that needs more: a breakpoint's GPA, a TRAP's exception).
   */
  private encodeEventNow(seq: number, vcpu: number, event: number, stop?: StopInfo): Buffer | undefined {
    if (event !== EVENT.MSR && event !== EVENT.PF && event !== EVENT.SINGLESTEP && event !== EVENT.PAUSE_VCPU)
      return undefined;
    const snap = this.core.vcpus[vcpu].snapshot();
    if (!snap) return undefined;
    const old = event === EVENT.MSR ? snap.msrs.get(stop?.code ?? 0) : 0n;
    if (old === undefined || !EVENT_ARCH_MSRS.every((m) => snap.msrs.has(m))) return undefined;
    const b = this.eventHead(seq, vcpu, event, snap.regs, snap.sregs);
    for (let i = 0; i < EVENT_ARCH_MSRS.length; i++)
      b.writeBigUInt64LE(snap.msrs.get(EVENT_ARCH_MSRS[i]) ?? 0n, KvmiServer.MSRS_AT + 8 * i);
    this.eventData(b, event, stop, old);
    return b;
  }

  /** The event's own data of MSR, PF and SINGLESTEP events (`old`: the MSR's value before the write). */
  private eventData(b: Buffer, event: number, stop: StopInfo | undefined, old: bigint): void {
    const d = HEADER_SIZE + SIZE.event;
    switch (event) {
      case EVENT.MSR:
        b.writeUInt32LE(stop?.code ?? 0, d);
        b.writeBigUInt64LE(old, d + 8);
        b.writeBigUInt64LE(stop?.value ?? 0n, d + 16);
        break;
      case EVENT.PF:
        b.writeBigUInt64LE(0xffff_ffff_ffff_ffffn, d); // the guest-virtual address is not known from an MMIO exit
        b.writeBigUInt64LE(stop?.addr ?? 0n, d + 8);
        b[d + 16] = stop?.kind === StopKind.PAGE_WRITE ? PAGE_ACCESS.W : PAGE_ACCESS.R;
        break;
      default:
        break; // SINGLESTEP: failed = 0
    }
  }

  /**
   * The whole message, header included, in one buffer. The registers and MSRs come from what the vCPU thread
   * read when it parked (the core's snapshot) when it can: no command to the vCPU for them.
   */
  private async encodeEvent(seq: number, vcpu: number, event: number, stop?: StopInfo): Promise<Buffer> {
    const { regs, sregs } = await this.core.rawRegs(vcpu);
    const msrs = await this.core.msrs(vcpu, EVENT_ARCH_MSRS);
    const b = this.eventHead(seq, vcpu, event, regs, sregs);
    for (let i = 0; i < EVENT_ARCH_MSRS.length; i++)
      b.writeBigUInt64LE(msrs.get(EVENT_ARCH_MSRS[i]) ?? 0n, KvmiServer.MSRS_AT + 8 * i);
    const d = HEADER_SIZE + SIZE.event;
    switch (event) {
      case EVENT.BREAKPOINT: {
        const linear = stop?.addr ?? 0n;
        const gpa = (await this.core.translate(vcpu, linear)) ?? linear;
        b.writeBigUInt64LE(gpa, d);
        b[d + 8] = 1; // INT3's length
        break;
      }
      case EVENT.MSR: {
        const msr = stop?.code ?? 0;
        this.eventData(b, event, stop, (await this.core.msrs(vcpu, [msr])).get(msr) ?? 0n);
        break;
      }
      case EVENT.TRAP: {
        const ev = await this.core.vcpuEvents(vcpu);
        const s = await this.core.sregs(vcpu);
        b[d] = ev.exception.nr;
        b.writeUInt32LE(ev.exception.errorCode >>> 0, d + 4);
        b.writeBigUInt64LE(s.cr2, d + 8);
        break;
      }
      default:
        this.eventData(b, event, stop, 0n);
        break;
    }
    return b;
  }

  /** EVENT_REPLY: vCPU header, {action, event}, then the event's own reply data. */
  private eventReply(m: Message): void {
    const p = m.payload;
    const st = this.vcpus.find((v) => v.outstanding?.seq === m.seq);
    const out = st?.outstanding;
    if (!st || !out) {
      this.opts.log(`introspection: a reply to event seq ${m.seq}, which is not waiting for one: ignored`);
      return;
    }
    const expected = SIZE.vcpuHdr + SIZE.eventReply + EVENT_DATA[out.event as keyof typeof EVENT_DATA].reply;
    const action = p.length >= 16 ? p[8] : -1;
    if (
      p.length !== expected ||
      p.readUInt16LE(0) !== out.vcpu ||
      !zeroes(p, 2, 8) ||
      p[9] !== out.event ||
      !zeroes(p, 10, 16) ||
      action < 0 ||
      action > ACTION.CRASH
    ) {
      this.opts.log(
        `introspection: a malformed reply to event ${out.event} (seq ${m.seq}): ignored, still waiting`,
      );
      return;
    }
    st.outstanding = undefined;
    this.act(out, action, p.subarray(16));
  }

  /** Do what the reply to `out` says, then send the vCPU's next event or let it go on. */
  private act(out: OutstandingEvent, action: number, data: Buffer): void {
    const vcpu = out.vcpu;
    const st = this.vcpus[vcpu];
    if (action === ACTION.CRASH) {
      st.resume = { action: ResumeAction.CRASH, arg: 0n };
      this.finish(vcpu);
      return;
    }
    if (out.event === EVENT.MSR && out.stop)
      st.resume = { action: ResumeAction.SET_VALUE, arg: data.readBigUInt64LE(0) };
    if (out.event === EVENT.BREAKPOINT && action === ACTION.CONTINUE) {
      // CONTINUE: the INT3 was the guest's own: it gets its #BP. RETRY: the tool's (it has moved RIP back).
      void this.reinjectBreakpoint(vcpu).then(() => this.finish(vcpu));
      return;
    }
    if (out.event === EVENT.PF && out.stop && action === ACTION.RETRY) {
      // The instruction is tried again: if the tool left the page protected, it stops again.
      const still = this.core.pageAccess(Number(out.stop.addr));
      if (out.stop.kind === StopKind.PAGE_WRITE ? still !== "rw" : still === "none") {
        st.queue.unshift({ event: EVENT.PF, stop: out.stop });
        this.pump(vcpu);
        return;
      }
    }
    this.finish(vcpu);
  }

  /** Send the vCPU's next event, or, when every event of its park is answered, let it go on as decided. */
  private finish(vcpu: number): void {
    const st = this.vcpus[vcpu];
    if (st.outstanding) return;
    if (st.pauses > 0 || st.trapPending || st.queue.length > 0) {
      this.pump(vcpu);
      return;
    }
    const r = st.resume;
    st.resume = { action: ResumeAction.CONTINUE, arg: 0n };
    this.resumeVcpu(vcpu, r.action, r.arg);
  }

  private resumeVcpu(vcpu: number, action: number = ResumeAction.CONTINUE, arg = 0n): void {
    const st = this.vcpus[vcpu];
    if (st.pauses > 0 || st.trapPending || st.queue.length > 0 || st.outstanding) {
      this.pump(vcpu);
      return;
    }
    const link = this.core.vcpus[vcpu];
    if (stepping(st) && action === ResumeAction.CONTINUE) link.resume(ResumeAction.STEP);
    else link.resume(action, arg);
  }

  /** The vCPU's reply timer fired: the event sent when it was last restarted, if still out, has timed out. */
  private timedOut(vcpu: number): void {
    const st = this.vcpus[vcpu];
    const out = st.outstanding;
    if (!out?.sent || this.closed) return;
    st.outstanding = undefined;
    this.opts.log(
      `introspection: no reply to event ${out.event} of vCPU ${vcpu} in ${this.opts.replyTimeoutMs / 1000} s: ${this.opts.onTimeout === "stop" ? "stopping the VM" : "the vCPU goes on"}`,
    );
    if (this.opts.onTimeout === "stop") this.opts.stopRun("no reply from the introspection tool in time");
    else this.finish(vcpu);
  }

  // ---- End ----

  /** The VM is ending or vmtool stops: UNHOOK (if asked for), then the connection is closed. */
  unhook(): void {
    if (this.closed) return;
    if (this.vmEvents.has(EVENT.UNHOOK)) {
      const b = Buffer.alloc(SIZE.event);
      b.writeUInt16LE(SIZE.event, 0);
      b[4] = EVENT.UNHOOK;
      this.conn.send(Buffer.concat([encodeHeader(MSG.EVENT, b.length, this.nextEventSeq++), b]));
    }
    this.detach("unhooked");
    this.conn.close("unhooked");
  }

  /** The tool went away (or unhook): everything it set is removed and the guest goes on. */
  private detach(why: string): void {
    if (this.closed) return;
    this.closed = true;
    for (const st of this.vcpus) clearTimeout(st.replyTimer);
    if (why !== "unhooked") this.opts.log(`introspection: ${why}; the guest goes on`);
    this.core.detach().catch((e: unknown) => this.opts.log(`introspection: detach: ${(e as Error).message}`));
  }

  /** Whether every AP started (for callers that wait for CREATE_VCPU-like moments); vCPUs never woken stay so. */
  async startedVcpus(): Promise<number> {
    let n = 0;
    for (let i = 0; i < this.core.vcpus.length; i++)
      if ((await this.onParked(i, () => this.core.mpState(i))) !== KVM_MP_STATE.UNINITIALIZED) n++;
    return n;
  }
}

/**
 * Whether a vCPU single-steps: VCPU_CONTROL_SINGLESTEP turned it on and SINGLESTEP events are enabled for it.
 * The kvmi-v7 kernel steps with the first alone but sends an event only with the second; stepping that no
 * event reports would only slow the guest (and hold off its interrupts), so vmtool steps only with both.
 */
function stepping(st: VcpuState): boolean {
  return st.singlestep && st.events.has(EVENT.SINGLESTEP);
}

/** kvmi's mode: 8 for 64-bit code (CS.L), 4 for 32-bit code (CS.D/B), else 2 (struct kvm_sregs as KVM gives it). */
function modeOf(sregs: Buffer): number {
  const cs = kvm_sregs.off.cs;
  return sregs[cs + kvm_segment.off.l] ? 8 : sregs[cs + kvm_segment.off.db] ? 4 : 2;
}

function hasErrorCode(vector: number): boolean {
  return [8, 10, 11, 12, 13, 14, 17, 21, 29, 30].includes(vector);
}

function range(start: number, n: number): number[] {
  return Array.from({ length: n }, (_, i) => start + i);
}

/** VMTOOL_TRANSLATE_EXPLAINED's numbers for paging.ts's names (docs/introspection.md, "vmtool's own commands"). */
const WALK_MODE = { none: 0, "32-bit": 1, pae: 2, "4-level": 3, "5-level": 4, invalid: 5 } as const;
const WALK_LEVEL = { PTE: 1, PDE: 2, PDPTE: 3, PML4E: 4, PML5E: 5 } as const;
const WALK_STOP = {
  "not-present": 1,
  "reserved-bit": 2,
  "non-canonical": 3,
  "outside-ram": 4,
  "address-width": 5,
  "invalid-state": 6,
} as const;

/**
 * {u32 mode; u32 levels; u64 gpa (~0 if none); u32 stop_reason (0: translated); u32 pad} + levels x
 * {u32 level_kind; u32 pad; u64 entry_gpa; u64 entry_value}, top level first.
 */
function encodeWalk(w: Walk): Buffer {
  const b = Buffer.alloc(24 + 24 * w.entries.length);
  b.writeUInt32LE(WALK_MODE[w.mode], 0);
  b.writeUInt32LE(w.entries.length, 4);
  b.writeBigUInt64LE(w.ok ? w.gpa : 0xffff_ffff_ffff_ffffn, 8);
  b.writeUInt32LE(w.ok ? 0 : WALK_STOP[w.reason], 16);
  w.entries.forEach((e, i) => {
    const at = 24 + 24 * i;
    b.writeUInt32LE(WALK_LEVEL[e.level], at);
    b.writeBigUInt64LE(e.gpa, at + 8);
    b.writeBigUInt64LE(e.raw, at + 16);
  });
  return b;
}
