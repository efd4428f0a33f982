// A protocol test fixture: the VMM's end of a KVMI socket, driven by each test message by message. It sends
// fixed byte sequences written by hand from the protocol's tables (none of the client's encoders or layouts
// are used here), and reads what the client sends as raw bytes. It is not a VMM: it answers only what a test
// tells it to.
import { createServer, createConnection, type Server, type Socket } from "node:net";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KvmiClient, type ClientOptions } from "../../src/kvmi-client/index.js";

// ---- bytes, little-endian, by hand ----

export const le16 = (v: number): Buffer => {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(v);
  return b;
};
export const le32 = (v: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0);
  return b;
};
export const s32 = (v: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeInt32LE(v);
  return b;
};
export const le64 = (v: bigint): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt.asUintN(64, v));
  return b;
};
export const zeros = (n: number): Buffer => Buffer.alloc(n);
export const cat = (...parts: (Buffer | number[])[]): Buffer =>
  Buffer.concat(parts.map((p) => (Buffer.isBuffer(p) ? p : Buffer.from(p))));
/** Bytes from "02 00 08 00 ..." (spaces and newlines ignored). */
export const hexBytes = (text: string): Buffer => Buffer.from(text.replace(/\s+/g, ""), "hex");

/** A message: kvmi_msg_hdr {u16 id; u16 size; u32 seq} then the payload. */
export const message = (id: number, seq: number, payload: Buffer = zeros(0)): Buffer =>
  cat(le16(id), le16(payload.length), le32(seq), payload);

/** A reply: the request's id and seq, kvmi_error_code {s32 err; u32 padding}, then data when err is 0. */
export const reply = (id: number, seq: number, data: Buffer = zeros(0), err = 0): Buffer =>
  message(id, seq, cat(s32(err), zeros(4), err === 0 ? data : zeros(0)));

/**
 * QEMU's handshake (qemu_vmi_to_introspector): u32 struct_size; u8 uuid[16]; u32 padding; s64 start_time;
 * char name[64] = 96 bytes; `extra` bytes are appended (v12 QEMU adds u64 max_gpa: 104).
 */
export function handshake(
  opts: { name?: string; uuid?: Buffer; startTime?: bigint; size?: number; extra?: Buffer } = {},
): Buffer {
  const name = Buffer.alloc(64);
  name.write(opts.name ?? "test-vm");
  const body = cat(
    opts.uuid ?? hexBytes("00112233445566778899aabbccddeeff"),
    zeros(4),
    le64(opts.startTime ?? 1700000000n),
    name,
    opts.extra ?? zeros(0),
  );
  const size = opts.size ?? 4 + body.length;
  return cat(le32(size), body).subarray(0, Math.max(4, Math.min(size, 4 + body.length)));
}

/**
 * The common part of an event (struct kvmi_event, 544 bytes): u16 size; u16 vcpu; u8 event; u8 padding[3];
 * then kvmi_event_arch: u8 mode @8; u8; u16 view @10; u8[4]; kvm_regs @16 (144 bytes: rax..r15, rip @144,
 * rflags @152); kvm_sregs @160 (312 bytes; cr3 @160+240); nine MSRs @472 (efer @496).
 */
export function eventCommon(opts: {
  vcpu?: number;
  event: number;
  mode?: number;
  size?: number;
  rip?: bigint;
  rax?: bigint;
  cr3?: bigint;
  view?: number;
  efer?: bigint;
}): Buffer {
  const b = Buffer.alloc(544);
  b.writeUInt16LE(opts.size ?? 544, 0);
  b.writeUInt16LE(opts.vcpu ?? 0, 2);
  b.writeUInt8(opts.event, 4);
  b.writeUInt8(opts.mode ?? 8, 8);
  b.writeBigUInt64LE(opts.rax ?? 0n, 16);
  b.writeBigUInt64LE(opts.rip ?? 0n, 16 + 128);
  b.writeBigUInt64LE(opts.cr3 ?? 0n, 160 + 240);
  b.writeUInt16LE(opts.view ?? 0, 10);
  b.writeBigUInt64LE(opts.efer ?? 0n, 496);
  return b;
}

/** An event message (id 1) with the event's own data. */
export const event = (seq: number, common: Buffer, data: Buffer = zeros(0)): Buffer =>
  message(1, seq, cat(common, data));

export interface Received {
  id: number;
  size: number;
  seq: number;
  payload: Buffer;
}

/** One end of a socket, read as raw bytes. */
export class Peer {
  private buf = Buffer.alloc(0);
  private waiting: (() => void)[] = [];
  ended = false;

  constructor(readonly socket: Socket) {
    socket.on("data", (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.wake();
    });
    socket.on("end", () => {
      this.ended = true;
      this.wake();
    });
    socket.on("close", () => {
      this.ended = true;
      this.wake();
    });
    socket.on("error", () => undefined);
  }

  private wake(): void {
    for (const w of this.waiting.splice(0)) w();
  }

  private wait(): Promise<void> {
    return new Promise<void>((r) => this.waiting.push(r));
  }

  /** Bytes received and not read yet. */
  get pending(): number {
    return this.buf.length;
  }

  /** Exactly `n` bytes (rejects if the other side closes first). */
  async read(n: number): Promise<Buffer> {
    while (this.buf.length < n) {
      if (this.ended)
        throw new Error(`peer: the client closed the connection (${this.buf.length} of ${n} bytes)`);
      await this.wait();
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return Buffer.from(out);
  }

  /** One message, header parsed by hand. */
  async next(): Promise<Received> {
    const h = await this.read(8);
    const size = h.readUInt16LE(2);
    return { id: h.readUInt16LE(0), size, seq: h.readUInt32LE(4), payload: await this.read(size) };
  }

  /** The next message, which must have this id. */
  async expect(id: number): Promise<Received> {
    const m = await this.next();
    if (m.id !== id) throw new Error(`peer: expected a message with id ${id}, got id ${m.id} (seq ${m.seq})`);
    return m;
  }

  /** Resolves once the client has closed its end. */
  async closedByClient(): Promise<void> {
    while (!this.ended) await this.wait();
  }

  send(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  /** Send and resolve when the bytes are handed to the kernel (or the socket's buffer has room again). */
  sendAndDrain(bytes: Buffer): Promise<void> {
    return new Promise((resolve) => {
      if (this.socket.write(bytes)) resolve();
      else this.socket.once("drain", () => resolve());
    });
  }

  close(): void {
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** A temporary folder for sockets; removed by the returned function. */
export function socketDir(): { path: (name: string) => string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), "vmtool-kvmi-"));
  return { path: (name) => join(dir, name), remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** The VMM's side of the handshake: send `hs`, read the tool's 24-byte answer. */
export async function vmmHandshake(peer: Peer, hs: Buffer = handshake()): Promise<Buffer> {
  peer.send(hs);
  return peer.read(24);
}

/** Answer the GET_VERSION the client sends first: version 1, no features. */
export async function answerVersion(peer: Peer, version = 1): Promise<Received> {
  const m = await peer.expect(2);
  peer.send(reply(2, m.seq, cat(le32(version), zeros(4), zeros(8))));
  return m;
}

export interface Session {
  client: KvmiClient;
  peer: Peer;
  /** Close both ends and remove the socket folder. */
  end: () => void;
}

/**
 * A client connected to a peer that plays the VMM listening (`--introspect listen:PATH`), past the handshake
 * and GET_VERSION.
 */
export async function session(opts: ClientOptions = {}): Promise<Session> {
  const dir = socketDir();
  const path = dir.path("vmm.sock");
  const server: Server = createServer();
  await new Promise<void>((r) => server.listen(path, r));
  const accepted = new Promise<Socket>((r) => server.once("connection", r));
  const clientP = KvmiClient.connect(path, opts);
  const peer = new Peer(await accepted);
  server.close();
  await vmmHandshake(peer);
  await answerVersion(peer);
  const client = await clientP;
  return {
    client,
    peer,
    end: () => {
      client.close();
      peer.destroy();
      dir.remove();
    },
  };
}

/** A VMM that connects to a listening client at `path` (`--introspect connect:PATH`), retrying until it can. */
export async function vmmConnect(path: string): Promise<Peer> {
  for (;;) {
    const s = await new Promise<Socket | undefined>((resolve) => {
      const sock = createConnection(path);
      sock.once("connect", () => resolve(sock));
      sock.once("error", () => resolve(undefined));
    });
    if (s) return new Peer(s);
    await new Promise((r) => setTimeout(r, 10));
  }
}
