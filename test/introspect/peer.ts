// A KVMI tool at the byte level, for the server's tests: it listens on a unix socket (as libkvmi does), starts
// `vmtool run --introspect connect:SOCKET`, answers the handshake and then sends commands and event replies
// built by hand from the notes' layouts (kvmi-v7 ids). Replies and events are read from the stream as they
// come. Not vmtool's client library (src/kvmi-client/): these tests check the server byte by byte.
import { createServer, type Server, type Socket } from "node:net";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CLI } from "../helpers/paths.js";
import { assemble } from "../vm/asm.js";

export interface Reply {
  id: number;
  seq: number;
  err: number;
  data: Buffer;
}
export interface Event {
  seq: number;
  vcpu: number;
  event: number;
  mode: number;
  /** struct kvm_regs of the event (144 bytes) and the event's own data. */
  regs: Buffer;
  sregs: Buffer;
  data: Buffer;
}

export const ID = {
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
  GET_REGISTERS: 13,
  SET_REGISTERS: 14,
  GET_CPUID: 15,
  GET_XSAVE: 16,
  READ_PHYSICAL: 17,
  WRITE_PHYSICAL: 18,
  INJECT_EXCEPTION: 19,
  SET_PAGE_ACCESS: 21,
  GET_MTRR_TYPE: 23,
  CONTROL_CMD_RESPONSE: 27,
  GET_MAX_GFN: 29,
  VCPU_TRANSLATE_GVA: 35,
  VCPU_GET_XCR: 37,
  QUERY_PHYSICAL: 39,
  VCPU_CONTROL_SINGLESTEP: 63,
  VMTOOL_GET_MEMORY_MAP: 0x4001,
  VMTOOL_GET_RAM_MAPPING: 0x4002,
  VMTOOL_TRANSLATE_EXPLAINED: 0x4003,
} as const;
export const EV = {
  UNHOOK: 0,
  CR: 1,
  MSR: 2,
  BREAKPOINT: 4,
  PF: 6,
  TRAP: 7,
  PAUSE_VCPU: 10,
  SINGLESTEP: 11,
} as const;
/** kvm_regs field offsets (struct kvm_regs: rax rbx rcx rdx rsi rdi rsp rbp r8..r15 rip rflags). */
export const REG = {
  rax: 0,
  rbx: 8,
  rcx: 16,
  rdx: 24,
  rsi: 32,
  rdi: 40,
  rsp: 48,
  rbp: 56,
  r8: 64,
  r15: 120,
  rip: 128,
  rflags: 136,
};

export function vcpuHdr(vcpu: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt16LE(vcpu, 0);
  return b;
}

export function u8s(...bytes: number[]): Buffer {
  return Buffer.from(bytes);
}

/** vmtool processes still running, killed if the test file exits first (a test that timed out). */
const running = new Set<ChildProcess>();
process.on("exit", () => {
  for (const c of running) c.kill("SIGKILL");
});

export class Peer {
  handshake!: Buffer;
  private seq = 1;
  private buf = Buffer.alloc(0);
  private readonly replies = new Map<number, (r: Reply) => void>();
  private readonly events: Event[] = [];
  private eventWaiter: ((e: Event) => void) | undefined;
  private socket!: Socket;
  closed = false;
  socketError: string | undefined;
  stderr = "";
  stdout = "";
  exit!: Promise<number | null>;

  private constructor(
    private readonly server: Server,
    readonly child: ChildProcess,
    private readonly dir: string,
  ) {}

  /** Listen, start `vmtool run --introspect connect:SOCK ARGS...`, accept it and do the handshake. */
  static async start(args: string[], stdin = ""): Promise<Peer> {
    const dir = mkdtempSync(join(tmpdir(), "vmtool-kvmi-"));
    const path = join(dir, "tool.sock");
    let accept!: (s: Socket) => void;
    const accepted = new Promise<Socket>((r) => (accept = r));
    const server = createServer((s) => accept(s));
    await new Promise<void>((r) => server.listen(path, r));
    const child = spawn(process.execPath, [CLI, "run", "--introspect", `connect:${path}`, ...args], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    const p = new Peer(server, child, dir);
    child.stdout?.on("data", (d: Buffer) => (p.stdout += d.toString()));
    child.stderr?.on("data", (d: Buffer) => (p.stderr += d.toString()));
    running.add(child);
    p.exit = new Promise((resolve) =>
      child.on("exit", (code) => {
        running.delete(child);
        resolve(code);
      }),
    );
    child.stdin?.end(stdin);
    p.socket = await accepted;
    p.handshake = await p.readExactly(96);
    const answer = Buffer.alloc(24);
    answer.writeUInt32LE(24, 0);
    p.socket.write(answer);
    p.socket.on("data", (d: Buffer) => p.onData(d));
    p.socket.on("close", () => (p.closed = true));
    // vmtool resets the connection when it ends with bytes of ours unread: that is an end, not a crash.
    p.socket.on("error", (e) => (p.socketError = e.message));
    return p;
  }

  private readExactly(n: number): Promise<Buffer> {
    return new Promise((resolve) => {
      const onReadable = () => {
        const c = this.socket.read(n) as Buffer | null;
        if (c) {
          this.socket.off("readable", onReadable);
          resolve(c);
        }
      };
      this.socket.on("readable", onReadable);
      onReadable();
    });
  }

  private onData(d: Buffer): void {
    this.buf = Buffer.concat([this.buf, d]);
    while (this.buf.length >= 8) {
      const id = this.buf.readUInt16LE(0);
      const size = this.buf.readUInt16LE(2);
      const seq = this.buf.readUInt32LE(4);
      if (this.buf.length < 8 + size) return;
      const p = this.buf.subarray(8, 8 + size);
      this.buf = this.buf.subarray(8 + size);
      if (id === ID.EVENT) {
        const e: Event = {
          seq,
          vcpu: p.readUInt16LE(2),
          event: p[4],
          mode: p[8],
          regs: p.subarray(16, 16 + 144),
          sregs: p.subarray(160, 160 + 312),
          data: p.subarray(p.readUInt16LE(0)),
        };
        const w = this.eventWaiter;
        this.eventWaiter = undefined;
        if (w) w(e);
        else this.events.push(e);
      } else {
        const r = this.replies.get(seq);
        this.replies.delete(seq);
        r?.({ id, seq, err: p.readInt32LE(0), data: p.subarray(8) });
      }
    }
  }

  /** Send raw bytes (for malformed messages). */
  raw(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  /** Send a command; resolves with its reply (or never, for a command whose reply is turned off). */
  command(id: number, payload: Buffer = Buffer.alloc(0)): Promise<Reply> {
    const seq = this.seq++;
    const h = Buffer.alloc(8);
    h.writeUInt16LE(id, 0);
    h.writeUInt16LE(payload.length, 2);
    h.writeUInt32LE(seq, 4);
    const r = new Promise<Reply>((resolve) => this.replies.set(seq, resolve));
    this.socket.write(Buffer.concat([h, payload]));
    return r;
  }

  /** Send a command whose reply is not expected (CONTROL_CMD_RESPONSE batches). */
  send(id: number, payload: Buffer = Buffer.alloc(0)): void {
    void this.command(id, payload);
  }

  nextEvent(): Promise<Event> {
    const e = this.events.shift();
    if (e) return Promise.resolve(e);
    return new Promise((r) => (this.eventWaiter = r));
  }

  get queuedEvents(): number {
    return this.events.length;
  }

  /** EVENT_REPLY to `e` with `action` and the event's own reply data. */
  reply(e: Event, action: number, data: Buffer = Buffer.alloc(0)): void {
    const body = Buffer.concat([vcpuHdr(e.vcpu), u8s(action, e.event, 0, 0, 0, 0, 0, 0), data]);
    const h = Buffer.alloc(8);
    h.writeUInt16LE(ID.EVENT_REPLY, 0);
    h.writeUInt16LE(body.length, 2);
    h.writeUInt32LE(e.seq, 4);
    this.socket.write(Buffer.concat([h, body]));
  }

  close(): void {
    this.socket.destroy();
  }

  /** End: close the socket, wait for vmtool (kill it if it does not end), clean up. */
  async end(): Promise<number | null> {
    this.socket.destroy();
    const t = setTimeout(() => this.child.kill("SIGKILL"), 20_000);
    const code = await this.exit;
    clearTimeout(t);
    this.server.close();
    rmSync(this.dir, { recursive: true, force: true });
    return code;
  }
}

/** struct kvmi_vcpu_hdr + struct kvmi_pause_vcpu {wait}. */
export function pausePayload(vcpu: number, wait = 1): Buffer {
  return Buffer.concat([vcpuHdr(vcpu), u8s(wait, 0, 0, 0, 0, 0, 0, 0)]);
}

/** struct kvmi_control_cmd_response {enable, now}. */
export function cmdResponse(enable: number, now: number): Buffer {
  return u8s(enable, now, 0, 0, 0, 0, 0, 0);
}

/** CONTROL_EVENTS for `event` on `vcpu`. */
export function controlEvents(vcpu: number, event: number, enable = 1): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt16LE(event, 0);
  b[2] = enable;
  return Buffer.concat([vcpuHdr(vcpu), b]);
}

export function u64(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(v, 0);
  return b;
}

/** The flag the test guests wait on: they spin until the word at FLAG is nonzero (the tool's go). */
export const FLAG = 0x2000;
/** Wait for the tool's go, so that the tool has enabled what it needs before the guest goes on. */
const PROLOGUE = `
  wait_for_tool: pause
    cmpl $0, ${FLAG}
    je wait_for_tool
  go:`;

/** `vmtool run` arguments for a 64-bit guest at 1 MiB: the prologue, then `body`. */
export function guest(body: string): string[] {
  return ["--mode", "long", "--load", "0x100000", assemble(`.code64\n${PROLOGUE}\n${body}`, 0x100000, 64)];
}

/** Set the word at `gpa` (FLAG by default: the guest's go) with WRITE_PHYSICAL. */
export async function go(p: Peer, gpa = FLAG): Promise<void> {
  const r = await p.command(ID.WRITE_PHYSICAL, Buffer.concat([u64(BigInt(gpa)), u64(4n), u8s(1, 0, 0, 0)]));
  if (r.err !== 0) throw new Error(`WRITE_PHYSICAL of the flag at 0x${gpa.toString(16)}: ${r.err}`);
}

/** vmtool's exit status for a guest that writes `v` to the exit port. */
export function exitStatus(v: number): number {
  return ((v << 1) | 1) & 0xff;
}
