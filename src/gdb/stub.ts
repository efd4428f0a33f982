// vmtool's GDB remote stub: one gdb at a time drives the VM through the VM-control core (src/debug/). All-stop:
// whenever one vCPU stops (a breakpoint, a step, a watchpoint, Ctrl-C, a fault), every vCPU is stopped before
// gdb hears of it. vCPUs are gdb's threads (thread N+1 is vCPU N).
//
// How each thing is done:
//   - software breakpoints (Z0): planted by the core with the backend's method (0xF1 caught as an emulation
//     failure on kvm_pvm, 0xCC with KVM_GUESTDBG_USE_SW_BP on VMX/SVM); planted bytes never show in reads;
//   - hardware breakpoints (Z1): DR0-DR3;
//   - watchpoints (Z2 write, Z3 read, Z4 access): DR7 where the backend fires data breakpoints; else the pages
//     are protected (write: read-only memory slot; read and access: no slot), every access to them stops the
//     vCPU before it happens, the stub checks the range, lets the access happen, and stops after the
//     instruction (a single step completed at once), so gdb sees the stop at the next instruction;
//   - single steps (s, vCont;s, vCont;r) with interrupts held off unless `monitor sstep irq on`;
//   - a guest's own int3 is given back to the guest as the #BP it is;
//   - faults (triple fault, emulation failure, failed entry) stop the VM for gdb instead of ending it.
import type { Socket } from "node:net";
import { VmControl, ResumeAction, StopKind, type StopInfo } from "../debug/vm-control.js";
import { VmControlError, VmControlUnsupported } from "../debug/errors.js";
import { KVM_EXIT, exitReasonName } from "../kvm/ioctls.js";
import {
  PacketReader,
  escapeBinary,
  framePacket,
  fromHex,
  parseHexNumber,
  toHex,
  unescapeBinary,
} from "./packets.js";
import {
  archForMode,
  cpuMode,
  layoutMismatch,
  registerBytes,
  registerLayout,
  targetXml,
  type CpuState,
  type GdbArch,
  type RegisterDef,
  type StatePart,
} from "./registers.js";
import { runMonitorCommand, type MonitorContext } from "./monitor.js";

/** The largest packet body gdb may send (advertised as PacketSize). */
export const PACKET_SIZE = 0x4000;
/** Most watchpoints at once (the page method has no register limit). */
const MAX_WATCHES = 32;
const MSR_KERNEL_GS_BASE = 0xc0000102;
const SIGINT = 2;
const SIGILL = 4;
const SIGTRAP = 5;
const SIGABRT = 6;
const SIGSEGV = 11;

export interface StubOptions {
  /** A fixed architecture for the target description (else chosen from the vCPU's mode at connect). */
  arch?: GdbArch;
  /** vmtool's own messages (stderr). */
  log: (line: string) => void;
  /** gdb's `kill`: end the run. */
  onKill: () => void;
}

type WatchKind = "write" | "read" | "access";

interface Watch {
  linear: bigint;
  len: number;
  kind: WatchKind;
  /** Page method: the watched guest-physical ranges and the pages protected for them. */
  gpas: { gpa: number; len: number }[];
  /** DR method: the debug register. */
  slot?: number;
}

/** How one vCPU is to go on (vCont's actions). */
type Resume = { kind: "continue" } | { kind: "step" } | { kind: "range"; start: bigint; end: bigint };

/** What a vCPU is in the middle of, for the stub (between its resume and the stop gdb hears of). */
interface InFlight {
  /** A watchpoint was hit: the access is being let through, the step after it ends the stop. */
  watch?: { kind: WatchKind; addr: bigint };
  range?: { start: bigint; end: bigint };
  /** gdb asked for a step (or range step) of this vCPU. */
  stepping?: boolean;
}

export class GdbStub {
  private session: Session | undefined;
  private readonly events: StopInfo[] = [];
  private eventWaiter: (() => void) | undefined;
  private ended = false;
  /** gdb said `kill`. */
  killed = false;

  constructor(
    readonly control: VmControl,
    readonly opts: StubOptions,
  ) {
    void this.pump();
  }

  /** Every stop the core reports, in order, into this.events. */
  private async pump(): Promise<void> {
    for (;;) {
      const s = await this.control.nextStop();
      if (!s) break;
      this.events.push(s);
      if (!this.session) this.unattendedStop();
      this.eventWaiter?.();
    }
    this.ended = true;
    this.eventWaiter?.();
  }

  /** A stop with no gdb attached (a breakpoint hit while gdb was going away): let the vCPU go on. */
  unattendedStop(): void {
    while (this.events.length > 0) {
      const s = this.events.shift();
      if (!s) continue;
      if (s.kind === StopKind.DEBUG_OTHER && s.code === 3)
        void this.reinjectBreakpoint(s.vcpu)
          .catch((e: unknown) => this.opts.log(`gdb: ${(e as Error).message}`))
          .finally(() => this.control.resume(s.vcpu, ResumeAction.CONTINUE));
      else this.control.resume(s.vcpu, ResumeAction.CONTINUE);
    }
  }

  /** A guest int3 (0xCC at RIP, or RIP just past it): #BP delivered to the guest with RIP after the int3. */
  async reinjectBreakpoint(i: number): Promise<void> {
    const c = this.control;
    const regs = await c.regs(i);
    const sregs = await c.sregs(i);
    const gpa = await c.translate(i, BigInt.asUintN(64, sregs.cs.base + regs.rip));
    if (gpa !== undefined && gpa < BigInt(c.ramSize) && c.readPhys(Number(gpa), 1)[0] === 0xcc)
      await c.setRegs(i, { rip: regs.rip + 1n });
    await c.injectException(i, 3);
  }

  /** The next event (undefined once the run is over), or undefined at once if `signal` fired. */
  async nextEvent(signal: { fired: boolean; wake?: () => void }): Promise<StopInfo | undefined> {
    for (;;) {
      const e = this.events.shift();
      if (e) return e;
      if (this.ended || signal.fired) return undefined;
      await new Promise<void>((resolve) => {
        this.eventWaiter = resolve;
        signal.wake = resolve;
      });
      this.eventWaiter = undefined;
    }
  }

  /** Events to be looked at again, before any new one. */
  requeue(list: StopInfo[]): void {
    this.events.unshift(...list);
  }

  takeQueuedEvents(): StopInfo[] {
    return this.events.splice(0);
  }

  get runOver(): boolean {
    return this.ended;
  }

  /**
   * A new gdb connection: served if none is, else refused. A gdb that reconnects may connect before its old
   * connection's end is seen here: a connection is refused only if the old one is still there when the new
   * one's first packet has arrived.
   */
  attach(socket: Socket, peer: string): void {
    if (this.ended) {
      socket.destroy();
      return;
    }
    if (!this.session) {
      this.serve(socket, peer, []);
      return;
    }
    const chunks: Buffer[] = [];
    const reader = new PacketReader(PACKET_SIZE + 64);
    let decided = false;
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      if (decided || !reader.feed(chunk).some((e) => e.kind === "packet")) return;
      decided = true;
      if (this.session && !this.session.closed) {
        socket.off("data", onData);
        this.opts.log(`gdb: a second debugger (${peer}) was refused: one is attached`);
        refuse(socket);
        return;
      }
      socket.off("data", onData);
      socket.pause();
      this.waitingSocket = () => this.serve(socket, peer, chunks);
      if (!this.session) this.takeWaiting();
    };
    socket.on("data", onData);
    socket.on("error", () => undefined);
  }

  private waitingSocket: (() => void) | undefined;

  private takeWaiting(): void {
    const w = this.waitingSocket;
    this.waitingSocket = undefined;
    w?.();
  }

  private serve(socket: Socket, peer: string, initial: Buffer[]): void {
    this.opts.log(`gdb: debugger attached (${peer})`);
    this.session = new Session(this, socket, initial, () => {
      this.session = undefined;
      this.opts.log("gdb: debugger detached");
      this.unattendedStop();
      this.takeWaiting();
    });
  }

  /** The run is over with exit `status`: tell gdb (W packet) and close. */
  async runEnded(status: number): Promise<void> {
    this.control.close();
    await this.session?.runEnded(status);
  }
}

/** Answer a refused connection's first packet (already received) with an error, then close. */
function refuse(socket: Socket): void {
  socket.on("error", () => undefined);
  socket.write("+");
  socket.end(framePacket("E.vmtool: another gdb is attached to this VM (one at a time)"));
  setTimeout(() => socket.destroy(), 2000).unref();
}

class StubError extends Error {
  constructor(readonly reply: string) {
    super(reply);
  }
}

class Session implements MonitorContext {
  closed = false;
  private readonly reader = new PacketReader(PACKET_SIZE + 64);
  private noAck = false;
  private lastSent: Buffer | undefined;
  private work: Promise<void> = Promise.resolve();
  readonly control: VmControl;
  arch: GdbArch = "i386:x86-64";
  private layout: RegisterDef[] = [];
  /** Thread for register and memory access (Hg), and for c/s (Hc); 0-based vCPU indexes. */
  private gThread = 0;
  private cThread = 0;
  /** The vCPU of the last stop reported. */
  private lastStopVcpu = 0;
  private lastStopReply = "S05";
  private running = false;
  private resumesQueued = 0;
  private interruptQueued = false;
  private interrupt: { fired: boolean; wake?: () => void } = { fired: false };
  private readonly state = new Map<number, CpuState>();
  private readonly watches: Watch[] = [];
  private readonly hwBreaks = new Map<bigint, number>();
  private readonly swBreaks = new Set<bigint>();
  private readonly inFlight = new Map<number, InFlight>();
  /** Events of vCPUs that stopped while the VM was being stopped for another one. */
  private deferred: StopInfo[] = [];
  /** Modes already told about (a console message at the stop where the guest's mode no longer fits). */
  private readonly toldModes = new Set<string>();
  physMode = false;
  stepIrq = false;
  private xmlCache = "";

  constructor(
    private readonly stub: GdbStub,
    private readonly socket: Socket,
    initial: Buffer[],
    private readonly onClose: () => void,
  ) {
    this.control = stub.control;
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.resume();
    socket.on("error", () => this.close());
    socket.on("close", () => this.close());
    // gdb expects a stopped target when it connects.
    this.work = this.work.then(() => this.connect()).catch((e: unknown) => this.fail(e));
    for (const c of initial) this.onData(c);
  }

  private async connect(): Promise<void> {
    await this.control.pause();
    this.control.stopOnFault = true;
    for (const e of this.stub.takeQueuedEvents()) this.control.resume(e.vcpu, ResumeAction.CONTINUE);
    await this.control.pause();
    const first = this.firstLiveVcpu();
    let arch = this.stub.opts.arch;
    if (!arch) {
      const st = await this.cpu(first);
      arch = archForMode(narrowMode(cpuMode(st.sregs, st.regs.rflags)));
    }
    this.arch = arch;
    this.layout = registerLayout(arch);
    this.xmlCache = targetXml(arch);
    this.gThread = this.cThread = this.lastStopVcpu = first;
    this.lastStopReply = `T${hex2(SIGTRAP)}thread:${tid(first)};`;
  }

  private firstLiveVcpu(): number {
    const i = this.control.vcpus.findIndex((v) => v.parked);
    return i < 0 ? 0 : i;
  }

  private fail(e: unknown): void {
    this.stub.opts.log(`gdb: ${(e as Error).message}`);
    this.socket.destroy();
    this.close();
  }

  // ---- The wire ----

  private onData(chunk: Buffer): void {
    for (const ev of this.reader.feed(chunk)) {
      switch (ev.kind) {
        case "ack":
          break;
        case "nak":
          if (this.lastSent && !this.noAck) this.socket.write(this.lastSent);
          break;
        case "interrupt":
          this.onInterrupt();
          break;
        case "bad-checksum":
          if (!this.noAck) this.socket.write("-");
          break;
        case "too-long":
          if (!this.noAck) this.socket.write("+");
          this.send("E.packet too long");
          break;
        case "packet": {
          if (!this.noAck) this.socket.write("+");
          const body = ev.body;
          const resumes = /^([cCsS]|vCont;)/.test(body.toString("latin1", 0, 6));
          if (resumes) this.resumesQueued++;
          this.work = this.work
            .then(async () => {
              if (resumes) this.resumesQueued--;
              const reply = await this.handle(body);
              if (reply !== undefined) this.send(reply);
            })
            .catch((e: unknown) => {
              if (e instanceof StubError) this.send(e.reply);
              else if (e instanceof VmControlError) this.send(`E.${oneLine(e.message)}`);
              else this.fail(e);
            });
        }
      }
    }
  }

  send(body: string | Buffer): void {
    if (this.closed) return;
    const p = framePacket(body);
    this.lastSent = p;
    this.socket.write(p);
  }

  /** A console message for the gdb user (an O packet: only while gdb waits for a stop reply). */
  private console(text: string): void {
    this.send(`O${toHex(Buffer.from(text))}`);
  }

  private onInterrupt(): void {
    // A resume packet read but not handled yet: the interrupt is for the run it starts.
    if (!this.running && this.resumesQueued > 0) this.interruptQueued = true;
    if (!this.running) return;
    this.interrupt.fired = true;
    this.interrupt.wake?.();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.interrupt.fired = true;
    this.interrupt.wake?.();
    this.socket.destroy();
    // Leave the VM as it is (stopped or running) with nothing of this gdb's left in it.
    this.work = this.work.then(() => this.removeEverything()).finally(() => this.onClose());
  }

  private async removeEverything(): Promise<void> {
    try {
      for (const a of this.swBreaks) this.control.removeSwBreakpoint(a);
      this.swBreaks.clear();
      for (const slot of this.hwBreaks.values()) this.control.clearHwBreakpoint(slot);
      this.hwBreaks.clear();
      for (const w of [...this.watches]) await this.dropWatch(w);
      this.inFlight.clear();
      this.control.stopOnFault = false;
      this.control.exitBreakTaken();
    } catch (e) {
      this.stub.opts.log(`gdb: cleaning up: ${(e as Error).message}`);
    }
  }

  async runEnded(status: number): Promise<void> {
    if (this.closed) return;
    if (!this.stub.killed) this.send(`W${hex2(status & 0xff)}`);
    await new Promise<void>((resolve) => this.socket.end(resolve));
    this.close();
  }

  // ---- Packets ----

  private async handle(body: Buffer): Promise<string | undefined> {
    if (this.closed) return;
    const text = body.toString("latin1");
    const c = text[0] ?? "";
    switch (c) {
      case "?":
        return this.lastStopReply;
      case "g":
        return await this.readAllRegisters();
      case "G":
        return await this.writeAllRegisters(text.slice(1));
      case "p":
        return await this.readRegister(text.slice(1));
      case "P":
        return await this.writeRegister(text.slice(1));
      case "m":
        return await this.readMemory(text.slice(1));
      case "M":
        return await this.writeMemoryHex(text.slice(1));
      case "X":
        return await this.writeMemoryBinary(body.subarray(1));
      case "Z":
      case "z":
        return await this.breakpoint(c === "Z", text.slice(1));
      case "H":
        return this.setThread(text.slice(1));
      case "T":
        return this.threadAlive(text.slice(1)) ? "OK" : "E01";
      case "c":
      case "C":
      case "s":
      case "S":
        return this.simpleResume(c, text.slice(1));
      case "D":
        await this.detach();
        return undefined;
      case "k":
        await this.kill();
        return undefined;
      case "q":
        return this.query(text);
      case "Q":
        if (text === "QStartNoAckMode") {
          this.send("OK");
          this.noAck = true;
          return undefined;
        }
        return "";
      case "v":
        return await this.vPacket(text);
      default:
        return "";
    }
  }

  private async query(text: string): Promise<string | undefined> {
    if (text.startsWith("qSupported"))
      return `PacketSize=${PACKET_SIZE.toString(16)};qXfer:features:read+;QStartNoAckMode+;swbreak+;hwbreak+;vContSupported+`;
    if (text.startsWith("qXfer:features:read:")) return this.xferFeatures(text.slice(20));
    if (text === "qAttached" || text.startsWith("qAttached:")) return "1";
    if (text === "qC") return `QC${tid(this.lastStopVcpu)}`;
    if (text === "qfThreadInfo") return `m${this.control.vcpus.map((v) => tid(v.index)).join(",")}`;
    if (text === "qsThreadInfo") return "l";
    if (text.startsWith("qThreadExtraInfo,")) return this.threadExtraInfo(text.slice(17));
    if (text === "qOffsets") return "Text=0;Data=0;Bss=0";
    if (text === "qSymbol::") return "OK";
    if (text === "qTStatus") return "";
    if (text.startsWith("qRcmd,")) return this.monitor(text.slice(6));
    return "";
  }

  private xferFeatures(rest: string): string {
    const m = /^([^:]+):([0-9a-fA-F]+),([0-9a-fA-F]+)$/.exec(rest);
    if (!m) return "E00";
    if (m[1] !== "target.xml") return "E00";
    const off = parseInt(m[2], 16);
    const len = Math.min(parseInt(m[3], 16), PACKET_SIZE - 8);
    const data = Buffer.from(this.xmlCache, "latin1");
    if (off > data.length) return "E00";
    const part = data.subarray(off, off + len);
    return Buffer.concat([Buffer.from(off + len >= data.length ? "l" : "m"), escapeBinary(part)]).toString(
      "latin1",
    );
  }

  private async vPacket(text: string): Promise<string | undefined> {
    if (text === "vCont?") return "vCont;c;C;s;S;t;r";
    if (text.startsWith("vCont;")) return this.vCont(text.slice(6));
    if (text.startsWith("vKill")) {
      this.send("OK");
      await this.kill();
      return undefined;
    }
    if (text === "vMustReplyEmpty") return "";
    if (text === "vCtrlC") {
      this.onInterrupt();
      return "OK";
    }
    return "";
  }

  // ---- Threads ----

  /** A gdb thread id to a vCPU index: -1 all, undefined none/bad. */
  private parseThread(t: string): number | undefined {
    if (t === "-1") return -1;
    if (t === "0") return this.lastStopVcpu;
    const n = /^[0-9a-fA-F]+$/.test(t) ? parseInt(t, 16) : NaN;
    if (!Number.isInteger(n) || n < 1 || n > this.control.vcpus.length) return undefined;
    return n - 1;
  }

  private setThread(rest: string): string {
    const which = rest[0];
    const t = this.parseThread(rest.slice(1));
    if (t === undefined) return "E01";
    const index = t === -1 ? this.lastStopVcpu : t;
    if (which === "g") this.gThread = index;
    else if (which === "c") this.cThread = index;
    else return "E01";
    return "OK";
  }

  private threadAlive(t: string): boolean {
    const i = this.parseThread(t);
    return i !== undefined && i >= 0 && !this.control.link(i).stopped;
  }

  private async threadExtraInfo(t: string): Promise<string> {
    const i = this.parseThread(t);
    if (i === undefined || i < 0) return "E01";
    let text = `vCPU ${i}`;
    const link = this.control.link(i);
    if (link.stopped) text += ", ended";
    else if (link.parked) {
      const st = await this.cpu(i);
      const mode = cpuMode(st.sregs, st.regs.rflags);
      const mp = await this.control.mpState(i);
      text += `, ${modeText(mode)}${mp === 1 ? ", waiting for INIT-SIPI" : mp === 3 ? ", halted" : mp === 4 ? ", waiting for SIPI" : ""}, stopped`;
    } else text += ", running";
    return toHex(Buffer.from(text));
  }

  // ---- Registers ----

  /** The state of parked vCPU `i`, read once per stop. */
  async cpu(i: number): Promise<CpuState> {
    const have = this.state.get(i);
    if (have) return have;
    const c = this.control;
    const [regs, sregs, fpu, dr, msrs] = await Promise.all([
      c.regs(i),
      c.sregs(i),
      c.fpu(i),
      c.debugRegs(i),
      c.msrs(i, [MSR_KERNEL_GS_BASE]),
    ]);
    const s: CpuState = { regs, sregs, fpu, dr, kGsBase: msrs.get(MSR_KERNEL_GS_BASE) ?? 0n };
    this.state.set(i, s);
    return s;
  }

  private async writeBack(i: number, s: CpuState, parts: Set<StatePart>): Promise<void> {
    const c = this.control;
    if (parts.has("sregs")) await c.setSregs(i, s.sregs);
    if (parts.has("regs")) await c.setRegs(i, s.regs);
    if (parts.has("fpu")) await c.setFpu(i, s.fpu);
    if (parts.has("dr")) await c.setDebugRegs(i, s.dr);
    if (parts.has("kgsbase")) await c.setMsr(i, MSR_KERNEL_GS_BASE, s.kGsBase);
    this.state.delete(i);
  }

  private async readAllRegisters(): Promise<string> {
    const s = await this.cpu(this.gThread);
    return this.layout.map((r) => registerBytes(r, s).toString("hex")).join("");
  }

  private async writeAllRegisters(hex: string): Promise<string> {
    const data = fromHex(hex);
    if (!data) return "E01";
    const s = await this.cpu(this.gThread);
    const parts = new Set<StatePart>();
    let off = 0;
    for (const r of this.layout) {
      const n = r.bits / 8;
      if (off + n > data.length) break;
      const v = data.subarray(off, off + n);
      off += n;
      if (!registerBytes(r, s).equals(v) && r.set) {
        const p = r.set(s, Buffer.from(v));
        if (p) parts.add(p);
      }
    }
    await this.writeBack(this.gThread, s, parts);
    return "OK";
  }

  private async readRegister(rest: string): Promise<string> {
    const n = parseInt(rest, 16);
    const r = this.layout[n] as RegisterDef | undefined;
    if (!r || !/^[0-9a-fA-F]+$/.test(rest)) return "E01";
    return registerBytes(r, await this.cpu(this.gThread)).toString("hex");
  }

  private async writeRegister(rest: string): Promise<string> {
    const m = /^([0-9a-fA-F]+)=([0-9a-fA-F]*)$/.exec(rest);
    if (!m) return "E01";
    const r = this.layout[parseInt(m[1], 16)] as RegisterDef | undefined;
    const v = fromHex(m[2]);
    if (!r || !v || v.length !== r.bits / 8) return "E01";
    if (!r.set) return "E01";
    const s = await this.cpu(this.gThread);
    const p = r.set(s, v);
    if (p) await this.writeBack(this.gThread, s, new Set([p]));
    return "OK";
  }

  // ---- Memory ----

  private parseAddrLen(text: string): { addr: bigint; len: number } | undefined {
    const m = /^([0-9a-fA-F]{1,16}),([0-9a-fA-F]{1,8})$/.exec(text);
    if (!m) return undefined;
    return { addr: BigInt(`0x${m[1]}`), len: parseInt(m[2], 16) };
  }

  /** Bytes at `addr`: gdb's addresses are linear (virtual) unless `monitor phys on`. Short on an unmapped page. */
  async readGuest(addr: bigint, len: number): Promise<Uint8Array> {
    const out: Uint8Array[] = [];
    let done = 0;
    while (done < len) {
      const at = BigInt.asUintN(64, addr + BigInt(done));
      const n = Math.min(len - done, 4096 - Number(at & 0xfffn));
      let gpa: bigint | undefined = at;
      if (!this.physMode) gpa = await this.control.translate(this.gThread, at);
      if (gpa === undefined || gpa + BigInt(n) > BigInt(this.control.ramSize)) break;
      out.push(this.control.readPhys(Number(gpa), n));
      done += n;
    }
    return Buffer.concat(out);
  }

  private async writeGuest(addr: bigint, data: Uint8Array): Promise<boolean> {
    let done = 0;
    while (done < data.length) {
      const at = BigInt.asUintN(64, addr + BigInt(done));
      const n = Math.min(data.length - done, 4096 - Number(at & 0xfffn));
      let gpa: bigint | undefined = at;
      if (!this.physMode) gpa = await this.control.translate(this.gThread, at);
      if (gpa === undefined || gpa + BigInt(n) > BigInt(this.control.ramSize)) return false;
      this.control.writePhys(Number(gpa), data.subarray(done, done + n));
      done += n;
    }
    return true;
  }

  private async readMemory(rest: string): Promise<string> {
    const a = this.parseAddrLen(rest);
    if (!a) return "E01";
    const len = Math.min(a.len, PACKET_SIZE / 2);
    const bytes = await this.readGuest(a.addr, len);
    if (bytes.length === 0 && len > 0) return "E14";
    return toHex(bytes);
  }

  private async writeMemoryHex(rest: string): Promise<string> {
    const colon = rest.indexOf(":");
    const a = this.parseAddrLen(rest.slice(0, colon));
    const data = fromHex(rest.slice(colon + 1));
    if (colon < 0 || !a || !data || data.length !== a.len) return "E01";
    return (await this.writeGuest(a.addr, data)) ? "OK" : "E14";
  }

  private async writeMemoryBinary(rest: Buffer): Promise<string> {
    const colon = rest.indexOf(0x3a);
    if (colon < 0) return "E01";
    const a = this.parseAddrLen(rest.subarray(0, colon).toString("latin1"));
    const data = unescapeBinary(rest.subarray(colon + 1));
    if (!a || !data || data.length !== a.len) return "E01";
    if (a.len === 0) return "OK";
    return (await this.writeGuest(a.addr, data)) ? "OK" : "E14";
  }

  // ---- Breakpoints and watchpoints ----

  private async breakpoint(insert: boolean, rest: string): Promise<string> {
    const m = /^([0-4]),([0-9a-fA-F]{1,16}),([0-9a-fA-F]{1,8})(;.*)?$/.exec(rest);
    if (!m) return "E01";
    const type = Number(m[1]);
    const addr = BigInt(`0x${m[2]}`);
    const kind = parseInt(m[3], 16);
    if (type === 0) {
      if (!insert) {
        if (this.swBreaks.delete(addr)) this.control.removeSwBreakpoint(addr);
        return "OK";
      }
      if (this.swBreaks.has(addr)) return "OK";
      try {
        await this.control.addSwBreakpoint(addr, this.gThread);
      } catch (e) {
        if (e instanceof VmControlError) return `E.${oneLine(e.message)}`;
        throw e;
      }
      this.swBreaks.add(addr);
      return "OK";
    }
    if (type === 1) {
      const have = this.hwBreaks.get(addr);
      if (!insert) {
        if (have !== undefined) {
          this.control.clearHwBreakpoint(have);
          this.hwBreaks.delete(addr);
        }
        return "OK";
      }
      if (have !== undefined) return "OK";
      const slot = this.control.freeHwSlot();
      if (slot === undefined) return "E.all four debug registers are in use";
      this.control.setHwBreakpoint(slot, addr, "exec");
      this.hwBreaks.set(addr, slot);
      return "OK";
    }
    const wkind: WatchKind = type === 2 ? "write" : type === 3 ? "read" : "access";
    if (!insert) {
      const w = this.watches.find((x) => x.linear === addr && x.len === kind && x.kind === wkind);
      if (w) await this.dropWatch(w);
      return "OK";
    }
    return this.addWatch(addr, kind, wkind);
  }

  private async addWatch(linear: bigint, len: number, kind: WatchKind): Promise<string> {
    if (len < 1 || len > 4096) return "E.watchpoint length must be 1..4096 bytes";
    if (this.watches.length >= MAX_WATCHES) return `E.at most ${MAX_WATCHES} watchpoints`;
    if (this.control.methods.dataWatchpointsInDr7) {
      // x86 debug registers: aligned 1, 2, 4 or 8 bytes, write or read/write (no read-only: gdb retries as Z4).
      if (kind === "read") return "";
      if (![1, 2, 4, 8].includes(len) || linear % BigInt(len) !== 0n)
        return "E.not an aligned 1, 2, 4 or 8 bytes";
      const slot = this.control.freeHwSlot();
      if (slot === undefined) return "E.all four debug registers are in use";
      this.control.setHwBreakpoint(slot, linear, kind === "write" ? "write" : "access", len as 1 | 2 | 4 | 8);
      this.watches.push({ linear, len, kind, gpas: [], slot });
      return "OK";
    }
    // The page method: the guest-physical bytes now behind the linear range (translated through the vCPU).
    const gpas: { gpa: number; len: number }[] = [];
    let done = 0;
    while (done < len) {
      const at = linear + BigInt(done);
      const n = Math.min(len - done, 4096 - Number(at & 0xfffn));
      const gpa = this.physMode ? at : await this.control.translate(this.gThread, at);
      if (gpa === undefined || gpa + BigInt(n) > BigInt(this.control.ramSize))
        return `E.watchpoint at 0x${at.toString(16)}: the address is not mapped to guest RAM`;
      gpas.push({ gpa: Number(gpa), len: n });
      done += n;
    }
    const w: Watch = { linear, len, kind, gpas };
    this.watches.push(w);
    await this.protectFor();
    return "OK";
  }

  private async dropWatch(w: Watch): Promise<void> {
    const i = this.watches.indexOf(w);
    if (i >= 0) this.watches.splice(i, 1);
    if (w.slot !== undefined) this.control.clearHwBreakpoint(w.slot);
    else await this.protectFor(w);
  }

  /** Page protection as the watches need it (and `released`'s pages given back where no watch needs them). */
  private async protectFor(released?: Watch): Promise<void> {
    const want = new Map<number, "r" | "none">();
    for (const w of this.watches)
      for (const g of w.gpas)
        for (let p = g.gpa & ~0xfff; p < g.gpa + g.len; p += 4096) {
          const access = w.kind === "write" ? "r" : "none";
          if (want.get(p) !== "none") want.set(p, access);
        }
    const changes: { gpa: number; len: number; access: "r" | "none" | "rw" }[] = [];
    for (const [page, access] of want)
      if (this.control.pageAccess(page) !== access) changes.push({ gpa: page, len: 4096, access });
    for (const g of released?.gpas ?? [])
      for (let p = g.gpa & ~0xfff; p < g.gpa + g.len; p += 4096)
        if (!want.has(p)) changes.push({ gpa: p, len: 4096, access: "rw" });
    if (changes.length > 0) await this.control.changePageAccess(changes);
  }

  /** The watch (page method) that an access of `len` bytes at guest-physical `gpa` hits. */
  private watchHit(gpa: bigint, len: number, write: boolean): { watch: Watch; addr: bigint } | undefined {
    const a = Number(gpa);
    for (const w of this.watches) {
      if (w.slot !== undefined) continue;
      if (write ? w.kind === "read" : w.kind === "write") continue;
      let off = 0;
      for (const g of w.gpas) {
        if (a < g.gpa + g.len && g.gpa < a + len)
          return { watch: w, addr: w.linear + BigInt(off + Math.max(0, a - g.gpa)) };
        off += g.len;
      }
    }
    return undefined;
  }

  // ---- Running and stopping ----

  private async simpleResume(c: string, rest: string): Promise<string | undefined> {
    // c [addr], C sig[;addr], s [addr], S sig[;addr]: the Hc thread steps, or every vCPU continues.
    let addrText = rest;
    if (c === "C" || c === "S") addrText = rest.includes(";") ? rest.slice(rest.indexOf(";") + 1) : "";
    const plan = new Map<number, Resume>();
    if (c === "s" || c === "S") plan.set(this.cThread, { kind: "step" });
    else for (const v of this.control.vcpus) plan.set(v.index, { kind: "continue" });
    if (addrText !== "") {
      const a = parseHexNumber(addrText);
      if (a === undefined) return "E01";
      await this.control.setRegs(this.cThread, { rip: a });
    }
    this.resume(plan);
    return undefined;
  }

  private vCont(rest: string): string | undefined {
    const plan = new Map<number, Resume>();
    for (const part of rest.split(";")) {
      const [action, thread] = part.split(":");
      let r: Resume;
      const a = action[0];
      if (a === "c" || a === "C") r = { kind: "continue" };
      else if (a === "s" || a === "S") r = { kind: "step" };
      else if (a === "r") {
        const m = /^r([0-9a-fA-F]{1,16}),([0-9a-fA-F]{1,16})$/.exec(action);
        if (!m) return "E01";
        r = { kind: "range", start: BigInt(`0x${m[1]}`), end: BigInt(`0x${m[2]}`) };
      } else if (a === "t") continue;
      else return "E01";
      const targets =
        thread === undefined || thread === "-1"
          ? this.control.vcpus.map((v) => v.index)
          : [this.parseThread(thread)].filter((x): x is number => x !== undefined && x >= 0);
      if (thread !== undefined && targets.length === 0) return "E01";
      // The leftmost action for a thread wins.
      for (const t of targets) if (!plan.has(t)) plan.set(t, r);
    }
    this.resume(plan);
    return undefined;
  }

  private resume(plan: Map<number, Resume>): void {
    this.state.clear();
    this.interrupt = { fired: this.interruptQueued };
    this.interruptQueued = false;
    this.running = true;
    const again = this.deferred.filter((e) => plan.has(e.vcpu));
    this.deferred = this.deferred.filter((e) => !plan.has(e.vcpu));
    for (const [i, r] of plan) {
      const link = this.control.link(i);
      if (!link.parked) continue;
      const f: InFlight = {};
      if (r.kind === "step" || r.kind === "range") f.stepping = true;
      if (r.kind === "range") f.range = { start: r.start, end: r.end };
      this.inFlight.set(i, f);
      // A vCPU parked at an event gdb has not heard of: the event is looked at again first.
      if (again.some((e) => e.vcpu === i)) continue;
      if (f.stepping) this.control.step(i, this.stepIrq);
      else this.control.resume(i, ResumeAction.CONTINUE);
    }
    this.stub.requeue(again);
    void this.waitForStop();
  }

  /** Wait for the stop gdb is to hear of; stop every vCPU; send the stop reply. */
  private async waitForStop(): Promise<void> {
    let reply: string | undefined;
    try {
      for (;;) {
        const e = await this.stub.nextEvent(this.interrupt);
        if (this.closed) return;
        if (e) {
          reply = await this.onEvent(e, false);
          if (reply !== undefined) break;
          continue;
        }
        if (this.stub.runOver) return; // runEnded() sends the W packet
        // Ctrl-C: stop everything; an event that came meanwhile is what gdb hears of.
        await this.control.pause();
        for (const q of this.stub.takeQueuedEvents()) {
          if (reply === undefined) reply = await this.onEvent(q, true);
          else this.deferred.push(q);
        }
        reply ??= this.reportStop(this.cThread, SIGINT);
        break;
      }
      await this.control.pause();
      // Stops of other vCPUs that came meanwhile: each vCPU stays parked at its event, which is dealt with
      // when it is next resumed.
      this.deferred.push(...this.stub.takeQueuedEvents());
    } catch (err) {
      if (this.closed) return;
      this.stub.opts.log(`gdb: ${(err as Error).message}`);
      reply ??= this.reportStop(this.lastStopVcpu, SIGABRT);
    }
    this.running = false;
    this.state.clear();
    this.inFlight.clear();
    this.lastStopReply = reply;
    await this.modeNotice(this.lastStopVcpu);
    this.send(reply);
  }

  private reportStop(i: number, sig: number, extra = ""): string {
    this.lastStopVcpu = this.gThread = this.cThread = i;
    return `T${hex2(sig)}thread:${tid(i)};${extra}`;
  }

  /**
   * What to do with one stop of a vCPU: the stop reply for gdb, or undefined: the stub dealt with it and the
   * vCPU went on, or (`stopping`: the VM is being stopped) it stays parked at its event, deferred to when the
   * vCPU is next resumed.
   */
  private async onEvent(e: StopInfo, stopping: boolean): Promise<string | undefined> {
    const i = e.vcpu;
    const f = this.inFlight.get(i) ?? {};
    const report = (sig: number, extra = ""): string => this.reportStop(i, sig, extra);
    const goOn = (action: number = ResumeAction.CONTINUE): string | undefined => {
      if (stopping) this.deferred.push(e);
      else this.control.resume(i, action);
      return undefined;
    };
    switch (e.kind) {
      case StopKind.SINGLESTEP: {
        if (f.watch) {
          const w = f.watch;
          f.watch = undefined;
          const name = w.kind === "write" ? "watch" : w.kind === "read" ? "rwatch" : "awatch";
          return report(SIGTRAP, `${name}:${w.addr.toString(16)};`);
        }
        if (f.range && !stopping) {
          const rip = (await this.control.regs(i)).rip;
          if (rip >= f.range.start && rip < f.range.end) {
            this.control.step(i, this.stepIrq);
            return undefined;
          }
        }
        if (!f.stepping) return goOn();
        return report(SIGTRAP);
      }
      case StopKind.SW_BREAKPOINT:
        if (this.swBreaks.has(e.addr)) return report(SIGTRAP, "swbreak:;");
        return goOn();
      case StopKind.HW_BREAKPOINT: {
        const slot = [0, 1, 2, 3].find((s) => (e.value >> BigInt(s)) & 1n);
        const w = this.watches.find((x) => x.slot === slot);
        if (w) return report(SIGTRAP, `${w.kind === "write" ? "watch" : "awatch"}:${w.linear.toString(16)};`);
        if ([...this.hwBreaks.values()].includes(slot ?? -1)) return report(SIGTRAP, "hwbreak:;");
        return goOn();
      }
      case StopKind.PAGE_WRITE:
      case StopKind.PAGE_READ: {
        if (stopping) return goOn();
        const hit = this.watchHit(e.addr, Math.max(e.len, 1), e.kind === StopKind.PAGE_WRITE);
        if (!hit) {
          // An access to a watched page outside the watched bytes: let it happen.
          this.control.resume(i, f.stepping ? ResumeAction.STEP : ResumeAction.CONTINUE);
          return undefined;
        }
        // Let the access happen and stop after the instruction (the step completes at once).
        f.watch = { kind: hit.watch.kind, addr: hit.addr };
        this.inFlight.set(i, f);
        this.control.resume(i, ResumeAction.STEP);
        return undefined;
      }
      case StopKind.DEBUG_OTHER:
        if (e.code === 3) {
          // The guest's own int3: given back to the guest as #BP.
          if (stopping) return goOn();
          await this.stub.reinjectBreakpoint(i);
          this.state.delete(i);
          this.control.resume(i);
          return undefined;
        }
        return report(SIGTRAP);
      case StopKind.EXIT: {
        // `monitor break-on`: it stops once, whichever vCPU makes the exit first.
        this.control.exitBreakTaken();
        const where =
          e.exitReason === KVM_EXIT.IO
            ? ` (port 0x${e.addr.toString(16)} ${e.write ? "out" : "in"})`
            : e.exitReason === KVM_EXIT.MMIO
              ? ` (0x${e.addr.toString(16)}, ${e.len} byte${e.len === 1 ? "" : "s"} ${e.write ? "written" : "read"})`
              : "";
        this.console(`vmtool: vCPU ${i} stopped after exit ${exitReasonName(e.exitReason)}${where}\n`);
        return report(SIGTRAP);
      }
      case StopKind.FAULT: {
        // kvm_amd answers a triple fault by INITing the vCPU before KVM_EXIT_SHUTDOWN reaches user space (the
        // VMCB is undefined after a shutdown intercept): what gdb reads then is the reset state, so say so.
        let reset = "";
        if (e.exitReason === KVM_EXIT.SHUTDOWN) {
          const { regs, sregs } = await this.cpu(i);
          if (regs.rip === 0xfff0n && sregs.cs.selector === 0xf000 && sregs.cs.base === 0xffff0000n)
            reset =
              ". Its registers are the reset state, not the state at the fault (kvm_amd INITs a vCPU on a triple fault)";
        }
        this.console(
          `vmtool: the guest cannot go on: ${faultText(e)}; the vCPU is stopped for inspection${reset}\n`,
        );
        const sig =
          e.exitReason === KVM_EXIT.INTERNAL_ERROR
            ? SIGILL
            : e.exitReason === KVM_EXIT.SHUTDOWN
              ? SIGSEGV
              : SIGABRT;
        return report(sig);
      }
      default:
        // MSR stops (the stub intercepts none) and anything else: the vCPU goes on.
        return goOn();
    }
  }

  /** When the stopped vCPU's mode no longer fits what gdb was told: say so (once per mode). */
  private async modeNotice(i: number): Promise<void> {
    const link = this.control.link(i);
    if (!link.parked) return;
    const st = await this.cpu(i);
    const mode = cpuMode(st.sregs, st.regs.rflags);
    const want = layoutMismatch(this.arch, mode);
    if (!want || this.toldModes.has(mode)) return;
    this.toldModes.add(mode);
    this.console(
      `vmtool: vCPU ${i} is now in ${modeText(mode)}; gdb was given the ${this.arch} register layout when it ` +
        `connected, which it keeps. For ${want}: 'vmtool-reconnect' (guest/gdb/vmtool.gdb), or 'disconnect' ` +
        `and 'target remote' again (the VM stays stopped in between).\n`,
    );
  }

  private async detach(): Promise<void> {
    await this.removeEverything();
    this.send("OK");
    this.control.resume();
    this.close();
  }

  private async kill(): Promise<void> {
    this.stub.killed = true;
    await this.removeEverything();
    // The run ends; the connection is closed by gdb, or at the run's end.
    this.stub.opts.onKill();
  }

  private async monitor(hexCmd: string): Promise<string> {
    const cmd = fromHex(hexCmd)?.toString("latin1");
    if (cmd === undefined) return "E01";
    const out = await runMonitorCommand(this, cmd.trim());
    for (let at = 0; at < out.length; at += 2000) this.console(out.slice(at, at + 2000));
    return "OK";
  }

  // MonitorContext
  get currentVcpu(): number {
    return this.gThread;
  }
}

function narrowMode(m: ReturnType<typeof cpuMode>): "real" | "protected" | "long" {
  return m === "long" ? "long" : m === "real" || m === "vm86" ? "real" : "protected";
}

export function modeText(mode: ReturnType<typeof cpuMode>): string {
  switch (mode) {
    case "real":
      return "real mode";
    case "protected":
      return "protected mode";
    case "long":
      return "long mode (64-bit)";
    case "compat":
      return "compatibility mode (32-bit code in long mode)";
    case "vm86":
      return "virtual-8086 mode";
  }
}

function faultText(e: StopInfo): string {
  if (e.exitReason === KVM_EXIT.SHUTDOWN) return "triple fault (KVM_EXIT_SHUTDOWN)";
  if (e.exitReason === KVM_EXIT.INTERNAL_ERROR)
    return `KVM internal error, suberror ${e.exitDetail}${e.exitDetail === 1 ? " (emulation failure)" : ""}`;
  if (e.exitReason === KVM_EXIT.FAIL_ENTRY) return "VM entry failed (KVM_EXIT_FAIL_ENTRY)";
  return `exit ${exitReasonName(e.exitReason)}`;
}

const tid = (i: number) => (i + 1).toString(16);
const hex2 = (n: number) => n.toString(16).padStart(2, "0");
const oneLine = (s: string) => s.replace(/[\r\n]+/g, " ").replace(/[#$}*]/g, "?");

export { VmControlUnsupported };
