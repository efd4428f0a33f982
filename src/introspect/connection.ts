// The introspection socket: how vmtool reaches the tool (QEMU's way: the tool listens and vmtool connects,
// retrying; or vmtool listens on a socket of mode 0600), the handshake, and the framing of KVMI messages over
// the byte stream. Everything a peer can make vmtool hold is bounded: one message at most (8 KiB) waits to be
// parsed, and a peer that stops reading while vmtool writes is disconnected once the unread bytes pass a limit.
import { chmodSync, existsSync, lstatSync, unlinkSync } from "node:fs";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { randomBytes } from "node:crypto";
import { HEADER_SIZE, MAX_PAYLOAD, SIZE, type Message } from "./protocol.js";
import { IntrospectionError } from "./errors.js";

/** Where the tool is: `connect:PATH` (it listens), `listen:PATH` (vmtool listens), `vsock:CID:PORT`. */
export type Endpoint =
  | { kind: "connect"; path: string }
  | { kind: "listen"; path: string }
  | { kind: "vsock"; cid: number; port: number };

/** How long vmtool keeps trying to reach a tool that listens (QEMU's chardev reconnects likewise). */
export const CONNECT_RETRY_MS = 10_000;
/** Bytes written that the peer has not read yet, beyond which it is taken as gone. */
const MAX_UNREAD_BYTES = 4 << 20;
/** Replies held back while a burst is served, beyond which they are written at once. */
const FLUSH_BYTES = 256 << 10;
/** The largest handshake answer read (libkvmi refuses above 64 KiB from its side too). */
const MAX_HANDSHAKE = 64 * 1024;

/** Parse `connect:PATH`, `listen:PATH` or `vsock:CID:PORT`. */
export function parseEndpoint(text: string): Endpoint {
  const m = /^(connect|listen):(.+)$/.exec(text);
  if (m) return { kind: m[1] as "connect" | "listen", path: m[2] };
  const v = /^vsock:(\d+):(\d+)$/.exec(text);
  if (v) return { kind: "vsock", cid: Number(v[1]), port: Number(v[2]) };
  throw new IntrospectionError(`--introspect ${text}: not connect:PATH, listen:PATH or vsock:CID:PORT`);
}

/** What vmtool tells the tool about the VM in the handshake. */
export interface HandshakeInfo {
  uuid: Uint8Array;
  name: string;
  startTime: number;
}

export function newHandshakeInfo(name: string): HandshakeInfo {
  return { uuid: randomBytes(16), name, startTime: Math.floor(Date.now() / 1000) };
}

/** struct qemu_vmi_to_introspector: {u32 struct_size = 96; u8 uuid[16]; u32 pad; s64 start_time; char name[64]}. */
export function encodeHandshake(info: HandshakeInfo): Buffer {
  const b = Buffer.alloc(SIZE.handshakeToTool);
  b.writeUInt32LE(SIZE.handshakeToTool, 0);
  b.set(info.uuid.subarray(0, 16), 4);
  b.writeBigInt64LE(BigInt(info.startTime), 24);
  b.write(info.name.slice(0, 63), 32, "utf8"); // NUL-terminated within 64 bytes
  return b;
}

/**
 * A framed KVMI connection. Incoming bytes are cut into messages; `onMessage` gets them one at a time, in
 * order. A message served at once (it returns nothing) lets the next one be parsed straight away, so a burst
 * of requests (READ_PHYSICAL pieces in flight) is served in one go and its replies leave in one write; while
 * a message returns a promise, the socket is not read and nothing further is parsed (a peer cannot queue
 * work).
 */
export class Connection {
  private buf: Buffer = Buffer.alloc(0);
  private closed = false;
  private busy = false;
  private readonly closeHandlers: ((why: string) => void)[] = [];

  constructor(
    private readonly socket: Socket,
    private readonly onMessage: (m: Message) => Promise<void> | void,
  ) {
    socket.on("data", (d: Buffer) => {
      this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
      this.pump();
    });
    socket.on("error", (e) => this.close(`the introspection socket failed: ${e.message}`));
    socket.on("close", () => this.close("the introspection tool closed the connection"));
  }

  onClose(fn: (why: string) => void): void {
    this.closeHandlers.push(fn);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Send one whole message (header and payload in one write). */
  send(bytes: Buffer): void {
    if (this.closed) return;
    if (this.socket.writableLength > MAX_UNREAD_BYTES) {
      this.close(`the introspection tool stopped reading (${this.socket.writableLength} bytes unread)`);
      return;
    }
    this.socket.write(bytes);
  }

  private pump(): void {
    if (this.busy || this.closed) return;
    // Replies to the messages served here at once go out together when the loop ends.
    this.socket.cork();
    try {
      while (!this.busy && !this.closed) {
        const m = this.next();
        if (!m) break;
        let pending: Promise<void> | void;
        try {
          pending = this.onMessage(m);
        } catch (e) {
          this.close(`internal error serving message ${m.id}: ${(e as Error).message}`);
          break;
        }
        if (pending) this.wait(m.id, pending);
        else if (this.socket.writableLength >= FLUSH_BYTES) {
          this.socket.uncork();
          this.socket.cork();
        }
      }
    } finally {
      this.socket.uncork();
    }
  }

  /** The next whole message in the buffer, if there is one (a header that lies about its size closes). */
  private next(): Message | undefined {
    const b = this.buf;
    if (b.length < HEADER_SIZE) return undefined;
    const id = b.readUInt16LE(0);
    const size = b.readUInt16LE(2);
    const seq = b.readUInt32LE(4);
    if (size > MAX_PAYLOAD) {
      // The stream cannot be resynchronised past a header that lies about its size.
      this.close(
        `message ${id} (seq ${seq}) says it has ${size} bytes, more than ${MAX_PAYLOAD}: disconnected`,
      );
      return undefined;
    }
    // Hold at most one message: when it is not complete, wait for more (the socket's own buffer holds the rest).
    if (b.length < HEADER_SIZE + size) return undefined;
    // A view, no copy: socket reads are fresh buffers, never reused.
    const payload = b.subarray(HEADER_SIZE, HEADER_SIZE + size);
    this.buf = b.subarray(HEADER_SIZE + size);
    return { id, seq, payload };
  }

  /** A message served later: stop reading until it is done, then go on. */
  private wait(id: number, pending: Promise<void>): void {
    this.busy = true;
    this.socket.pause();
    pending
      .catch((e: unknown) => this.close(`internal error serving message ${id}: ${(e as Error).message}`))
      .finally(() => {
        this.busy = false;
        if (!this.closed) this.socket.resume();
        this.pump();
      });
  }

  close(why: string): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.destroy();
    for (const h of this.closeHandlers) h(why);
  }
}

/**
 * Read exactly `n` bytes from `socket` (the handshake, before framing starts), through the stream's own
 * buffer ('readable' + read(n)), so that nothing after them is consumed.
 */
function readExactly(socket: Socket, n: number, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => done(new IntrospectionError("the introspection tool did not answer the handshake")),
      timeoutMs,
    );
    const onReadable = () => {
      const chunk = socket.read(n) as Buffer | null;
      if (chunk) done(undefined, chunk);
    };
    const onEnd = () =>
      done(new IntrospectionError("the introspection tool closed the connection during the handshake"));
    const done = (err?: Error, value?: Buffer) => {
      clearTimeout(timer);
      socket.off("readable", onReadable);
      socket.off("close", onEnd);
      socket.off("end", onEnd);
      socket.off("error", onEnd);
      if (err) reject(err);
      else resolve(value ?? Buffer.alloc(0));
    };
    socket.on("readable", onReadable);
    socket.on("close", onEnd);
    socket.on("end", onEnd);
    socket.on("error", onEnd);
    onReadable();
  });
}

/** The handshake as the VMM side: send the 96 bytes, read the tool's answer (struct_size first, >= 24). */
export async function handshake(socket: Socket, info: HandshakeInfo, timeoutMs = 10_000): Promise<void> {
  socket.write(encodeHandshake(info));
  const head = await readExactly(socket, 4, timeoutMs);
  const size = head.readUInt32LE(0);
  if (size < SIZE.handshakeFromTool || size > MAX_HANDSHAKE)
    throw new IntrospectionError(
      `the introspection tool's handshake says ${size} bytes: not ${SIZE.handshakeFromTool} to ${MAX_HANDSHAKE}`,
    );
  await readExactly(socket, size - 4, timeoutMs); // the cookie hash: vmtool asks for no secret
}

/** Connect to a tool listening on `path`, retrying until `retryMs` have passed. */
export async function connectTo(path: string, retryMs = CONNECT_RETRY_MS): Promise<Socket> {
  const deadline = Date.now() + retryMs;
  for (;;) {
    try {
      return await new Promise<Socket>((resolve, reject) => {
        const s = createConnection({ path });
        s.once("connect", () => {
          s.off("error", reject);
          resolve(s);
        });
        s.once("error", reject);
      });
    } catch (e) {
      if (Date.now() >= deadline)
        throw new IntrospectionError(
          `no introspection tool listening on ${path} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}) after ${retryMs / 1000} s`,
        );
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** Listen on a unix socket at `path` (mode 0600; an old socket there is replaced, any other file refused). */
export function listenOn(path: string, onSocket: (s: Socket) => void): Promise<Server> {
  if (existsSync(path)) {
    if (!lstatSync(path).isSocket())
      throw new IntrospectionError(`--introspect listen:${path}: exists and is not a socket`);
    unlinkSync(path);
  }
  return new Promise((resolve, reject) => {
    const server = createServer(onSocket);
    server.once("error", (e) => reject(new IntrospectionError(`--introspect listen:${path}: ${e.message}`)));
    // Created private (umask 0177 for the socket file), then made sure of with chmod. listen() binds before it
    // returns (errors come later, as events), so the process's umask is restored on every path right after.
    const umask = process.umask(0o177);
    try {
      server.listen(path, onListening);
    } finally {
      process.umask(umask);
    }
    function onListening(): void {
      try {
        chmodSync(path, 0o600);
      } catch (e) {
        server.close();
        reject(
          new IntrospectionError(
            `--introspect listen:${path}: cannot make it private: ${(e as Error).message}`,
          ),
        );
        return;
      }
      resolve(server);
    }
  });
}
