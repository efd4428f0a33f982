// One KVMI connection over a stream socket, from the tool's side: the handshake (the VMM speaks first, 96
// bytes; the tool answers 24), then framed messages both ways.
//
// - Commands get the next seq (from 1, as libkvmi's counter) and a promise of their reply; replies are matched
//   by seq, so several commands may be in flight. A reply whose seq matches no command in flight, or whose id
//   is not its command's, means the two sides no longer agree on the stream: the connection is closed with a
//   KvmiProtocolError (the kernel closes the socket for that; libkvmi fails with "Wrong message").
// - A reply that does not have its command's size fails that command only (KvmiReplyError): its framing is
//   intact and the stream goes on.
// - Every command has a reply timeout (libkvmi's 15 s); when it passes, the connection is taken as lost and
//   closed, as libkvmi marks the domain disconnected.
// - Events (id 1) are queued for the application, at most `maxQueuedEvents` (libkvmi's 16384). When the queue
//   is full the connection stops reading the socket until the application takes an event: a VMM that floods
//   events fills its own socket buffer and waits, and the client holds at most the queue plus one socket
//   read (the stream's high-water mark). Replies behind those events wait too: an application that sends
//   commands must keep taking events.
// - A message longer than the protocol's 8184-byte payload, an unknown id or a malformed event closes the
//   connection (KvmiProtocolError); the VMM closing it mid-message is a KvmiClosedError that says so.
import type { Socket } from "node:net";
import { hex } from "../format.js";
import {
  KvmiClosedError,
  KvmiCommandError,
  KvmiConnectionError,
  KvmiHandshakeError,
  KvmiInternalError,
  KvmiProtocolError,
  KvmiReplyError,
  KvmiTimeoutError,
  commandName,
  KvmiUsageError,
} from "./errors.js";
import { HANDSHAKE_MAX, HANDSHAKE_MIN, HEADER_SIZE, MAX_PAYLOAD, Msg } from "./ids.js";
import * as L from "./layouts.js";
import { decodeEvent, decodeHeader, encode, frame, type Header, type KvmiEvent } from "./wire.js";

/** What the VMM said about itself in the handshake. */
export interface Handshake {
  /** The struct_size it sent (96 for QEMU's kvmi-v7 and for vmtool, 104 for QEMU's v12). */
  structSize: number;
  /** The VM's UUID, as 8-4-4-4-12 hexadecimal digits. */
  uuid: string;
  /** When the VM started, in seconds since the epoch. */
  startTime: bigint;
  /** The VM's name (up to the first NUL of the 64 bytes). */
  name: string;
}

export interface ConnectionOptions {
  /** How long a command waits for its reply, in ms (default 15000, libkvmi's KVMI_MAX_TIMEOUT). */
  replyTimeoutMs?: number;
  /** How long the VMM has to send its handshake once connected, in ms (default 15000). */
  handshakeTimeoutMs?: number;
  /** Events held for the application before the connection stops reading (default 16384, as libkvmi). */
  maxQueuedEvents?: number;
  /** The 20 bytes of the answer's cookie_hash (default zeros, as libkvmi without a handshake callback). */
  cookieHash?: (hs: Handshake) => Uint8Array | undefined;
}

export const DEFAULT_REPLY_TIMEOUT_MS = 15_000;
export const DEFAULT_MAX_QUEUED_EVENTS = 16_384;

/** A command's name for messages, or how to make it (only made when a message needs it). */
export type What = string | (() => string);
const named = (w: What): string => (typeof w === "string" ? w : w());

interface Pending {
  id: number;
  seq: number;
  what: What;
  resolve: (data: Buffer) => void;
  reject: (err: Error) => void;
  /** When the reply is due (performance.now() ms). */
  deadline: number;
}

/** How nextEvent() waits. */
export interface EventWait {
  timeoutMs?: number;
  /** Take the first event this accepts (the others stay queued, in order). */
  match?: (ev: KvmiEvent) => boolean;
  signal?: AbortSignal;
}

interface Waiter {
  match: ((ev: KvmiEvent) => boolean) | undefined;
  resolve: (ev: KvmiEvent | undefined) => void;
  timer: NodeJS.Timeout | undefined;
}

/** A FIFO with O(1) push and shift, and removal of the first element that matches. */
class Queue<T> {
  private items: (T | undefined)[] = [];
  private head = 0;
  get length(): number {
    return this.items.length - this.head;
  }
  push(v: T): void {
    this.items.push(v);
  }
  take(match?: (v: T) => boolean): T | undefined {
    for (let i = this.head; i < this.items.length; i++) {
      const v = this.items[i] as T;
      if (match && !match(v)) continue;
      if (i === this.head) {
        this.items[i] = undefined;
        this.head++;
      } else this.items.splice(i, 1);
      if (this.head > 1024 && this.head * 2 > this.items.length) {
        this.items = this.items.slice(this.head);
        this.head = 0;
      }
      return v;
    }
    return undefined;
  }
}

function uuidText(b: Buffer): string {
  const h = b.toString("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export class KvmiConnection {
  readonly replyTimeoutMs: number;
  readonly maxQueuedEvents: number;
  private readonly handshakeTimeoutMs: number;
  private readonly cookieHash: ConnectionOptions["cookieHash"];

  private phase: "handshake" | "messages" = "handshake";
  private handshakeSize: number | undefined;
  private header: Header | undefined;
  private pumping = false;
  private corked = false;
  private ended = false;
  private lastSeq = 0;
  /** Commands in flight by seq, in the order they were sent (so the first is always the next one due). */
  private readonly pending = new Map<number, Pending>();
  /** One timer for every command in flight, set for the first one's deadline. */
  private replyTimer: NodeJS.Timeout | undefined;
  private readonly queue = new Queue<KvmiEvent>();
  private readonly waiters: Waiter[] = [];
  private reason: KvmiConnectionError | KvmiInternalError | undefined;
  private closedResolve!: (reason: KvmiConnectionError | KvmiInternalError) => void;
  private handshakeDone!: { resolve: (hs: Handshake) => void; reject: (e: Error) => void };
  private handshakeTimer: NodeJS.Timeout | undefined;

  /** Settles once the handshake is over. */
  readonly handshake: Promise<Handshake>;
  /** Resolves with the reason once the connection is over (by either side). */
  readonly closed: Promise<KvmiConnectionError | KvmiInternalError>;

  constructor(
    private readonly socket: Socket,
    opts: ConnectionOptions = {},
  ) {
    this.replyTimeoutMs = opts.replyTimeoutMs ?? DEFAULT_REPLY_TIMEOUT_MS;
    this.handshakeTimeoutMs = opts.handshakeTimeoutMs ?? DEFAULT_REPLY_TIMEOUT_MS;
    this.maxQueuedEvents = Math.max(1, opts.maxQueuedEvents ?? DEFAULT_MAX_QUEUED_EVENTS);
    this.cookieHash = opts.cookieHash;
    this.closed = new Promise((resolve) => (this.closedResolve = resolve));
    this.handshake = new Promise((resolve, reject) => (this.handshakeDone = { resolve, reject }));
    // A rejection nobody waits for (the connection failed before anyone asked) is not an unhandled one.
    this.handshake.catch(() => undefined);
    this.handshakeTimer = setTimeout(() => {
      this.fail(
        new KvmiHandshakeError(`the VMM sent no handshake within ${this.handshakeTimeoutMs / 1000} s`),
      );
    }, this.handshakeTimeoutMs);
    socket.on("readable", () => this.pump());
    socket.on("end", () => {
      this.ended = true;
      this.pump();
    });
    socket.on("error", (err: NodeJS.ErrnoException) => {
      const code = err.code ?? err.message;
      this.fail(new KvmiClosedError(`the connection to the VMM failed (${code})`, true));
    });
    socket.on("close", () => {
      this.fail(new KvmiClosedError("the VMM closed the connection", true));
    });
  }

  /** Why the connection is over, or undefined while it is open. */
  get closeReason(): KvmiConnectionError | KvmiInternalError | undefined {
    return this.reason;
  }

  get isClosed(): boolean {
    return this.reason !== undefined;
  }

  /** Events received and not yet taken. */
  get queuedEvents(): number {
    return this.queue.length;
  }

  /** Bytes read from the socket and not yet parsed (bounded: see the top of this file). */
  get bufferedBytes(): number {
    return this.socket.readableLength;
  }

  /** Commands sent and not yet answered. */
  get inFlight(): number {
    return this.pending.size;
  }

  /** The next command seq (1, 2, ... wrapping at 2^32, 0 skipped). */
  nextSeq(): number {
    this.lastSeq = (this.lastSeq + 1) >>> 0 || 1;
    return this.lastSeq;
  }

  // ---- sending ----

  /** Send one command and wait for its reply's data (what follows the error code). */
  request(id: number, payload: Buffer, what?: What): Promise<Buffer> {
    return new Promise((resolve, reject) => this.call(id, payload, what ?? commandName(id), resolve, reject));
  }

  /**
   * Send one command; `resolve` gets its reply's data, `reject` its failure. No promise: for many commands in
   * flight (READ_PHYSICAL pieces). `payload` may be the whole message already (`framed`): its seq is then
   * written into it.
   */
  call(
    id: number,
    payload: Buffer,
    what: What,
    resolve: (data: Buffer) => void,
    reject: (err: Error) => void,
    framed = false,
  ): void {
    const seq = this.nextSeq();
    if (!this.track(id, seq, what, resolve, reject)) return;
    if (framed) payload.writeUInt32LE(seq, 4);
    this.write(framed ? payload : frame(id, seq, payload));
  }

  /** Register a reply to wait for (for a message built by the caller: a batch's last command). */
  expectReply(id: number, seq: number, what: string): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => this.track(id, seq, what, resolve, reject));
  }

  private track(
    id: number,
    seq: number,
    what: What,
    resolve: (data: Buffer) => void,
    reject: (err: Error) => void,
  ): boolean {
    if (this.reason) {
      reject(this.reason);
      return false;
    }
    if (this.phase !== "messages") {
      reject(new KvmiUsageError(`${named(what)}: the handshake is not over yet`));
      return false;
    }
    this.pending.set(seq, {
      id,
      seq,
      what,
      resolve,
      reject,
      deadline: performance.now() + this.replyTimeoutMs,
    });
    this.armReplyTimer();
    return true;
  }

  /** The reply timer, for the first command in flight (the others were sent later: they are due later). */
  private armReplyTimer(): void {
    if (this.replyTimer) return;
    const first = this.pending.values().next().value;
    if (!first) return;
    this.replyTimer = setTimeout(
      () => {
        this.replyTimer = undefined;
        const due = this.pending.values().next().value;
        if (!due) return;
        if (performance.now() < due.deadline) {
          this.armReplyTimer();
          return;
        }
        this.fail(
          new KvmiTimeoutError(
            `no reply to ${named(due.what)} (seq ${due.seq}) within ${this.replyTimeoutMs / 1000} s: the VMM is taken as lost`,
          ),
        );
      },
      Math.max(0, first.deadline - performance.now()) + 1,
    );
  }

  /** Send bytes as they are (whole messages); nothing is sent once the connection is over. */
  write(bytes: Buffer): void {
    if (this.reason) return;
    // Messages written in the same tick go out in one write (many READ_PHYSICALs in flight: one syscall).
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(() => {
        this.corked = false;
        this.socket.uncork();
      });
    }
    this.socket.write(bytes, (err) => {
      if (err) {
        const code = (err as NodeJS.ErrnoException).code ?? err.message;
        this.fail(new KvmiClosedError(`cannot send to the VMM (${code})`, true));
      }
    });
  }

  // ---- events ----

  /**
   * The next event (the first that `match` accepts, if given; others stay queued in order), waiting up to
   * `timeoutMs` (default: for ever) or until `signal` aborts. Undefined when the wait ends so, or when the
   * connection is over and no such event is left.
   */
  nextEvent(opts: EventWait = {}): Promise<KvmiEvent | undefined> {
    const ev = this.queue.take(opts.match);
    if (ev) {
      this.afterTake();
      return Promise.resolve(ev);
    }
    if ((this.reason && !this.moreToRead()) || opts.signal?.aborted) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      // An abandoned wait takes no event: what arrives after it stays queued for the next reader.
      const done = (value: KvmiEvent | undefined) => {
        this.dropWaiter(waiter);
        if (waiter.timer) clearTimeout(waiter.timer);
        opts.signal?.removeEventListener("abort", onAbort);
        resolve(value);
      };
      const onAbort = () => done(undefined);
      const waiter: Waiter = { match: opts.match, resolve: done, timer: undefined };
      if (opts.timeoutMs !== undefined) waiter.timer = setTimeout(onAbort, opts.timeoutMs);
      opts.signal?.addEventListener("abort", onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  private dropWaiter(w: Waiter): void {
    const i = this.waiters.indexOf(w);
    if (i >= 0) this.waiters.splice(i, 1);
  }

  private afterTake(): void {
    // Room again in the queue: read on (pump is a no-op when nothing is waiting in the socket).
    if (this.queue.length < this.maxQueuedEvents) this.pump();
  }

  /**
   * Hand events to `handler` as they are read (see KvmiClient.handleEvents), those already queued first.
   * Returns a function that stops it.
   */
  handleEvents(handler: (ev: KvmiEvent) => void): () => void {
    this.handler = handler;
    for (let ev = this.queue.take(); ev && this.handler === handler; ev = this.queue.take()) handler(ev);
    this.afterTake();
    return () => {
      if (this.handler === handler) this.handler = undefined;
    };
  }

  private handler: ((ev: KvmiEvent) => void) | undefined;

  private deliver(ev: KvmiEvent): void {
    // Waiters that look for a kind of event first (a pause waiting for its PAUSE events), then the others,
    // then the handler.
    if (this.waiters.length > 0) {
      const order = [...this.waiters.filter((w) => w.match), ...this.waiters.filter((w) => !w.match)];
      for (const w of order)
        if (!w.match || w.match(ev)) {
          w.resolve(ev);
          return;
        }
    }
    if (!this.handler) {
      this.queue.push(ev);
      return;
    }
    try {
      this.handler(ev);
    } catch (err) {
      this.protocolBroken = true;
      this.fail(new KvmiInternalError(`the event handler failed: ${String(err)}`, { cause: err }));
    }
  }

  // ---- receiving ----

  private moreToRead(): boolean {
    return this.phase === "messages" && this.socket.readableLength > 0 && !this.protocolBroken;
  }

  private protocolBroken = false;

  private read(n: number): Buffer | null | "short" {
    const b = this.socket.read(n) as Buffer | null;
    if (b === null) return null;
    if (b.length < n) {
      this.truncated(b.length, n);
      return "short";
    }
    return b;
  }

  private truncated(got: number, want: number): void {
    const where = this.phase === "handshake" ? "the handshake" : "a message";
    this.fail(
      new KvmiClosedError(
        `the VMM closed the connection in the middle of ${where} (${got} of ${want} bytes)`,
        true,
      ),
    );
  }

  /** Parse what the socket holds, as far as the event queue has room. */
  private pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (!this.protocolBroken && !(this.reason && this.phase === "handshake")) {
        if (this.phase === "handshake") {
          if (!this.readHandshake()) break;
          continue;
        }
        if (this.queue.length >= this.maxQueuedEvents) break;
        if (!this.header) {
          const h = this.read(HEADER_SIZE);
          if (h === null || h === "short") break;
          this.header = decodeHeader(h);
          if (this.header.size > MAX_PAYLOAD) {
            this.breakProtocol(
              `a message of ${this.header.size} bytes (id ${this.header.id}, seq ${this.header.seq}): ` +
                `the protocol's limit is ${MAX_PAYLOAD}`,
            );
            break;
          }
        }
        let payload: Buffer;
        if (this.header.size === 0) payload = Buffer.alloc(0);
        else {
          const p = this.read(this.header.size);
          if (p === null || p === "short") break;
          payload = p;
        }
        const h = this.header;
        this.header = undefined;
        this.dispatch(h, payload);
      }
    } catch (err) {
      // Not the VMM's doing (a bug here, or a throwing cookieHash callback): end the connection with it rather
      // than throw from a socket handler (which would end the process) or leave every caller waiting.
      this.protocolBroken = true;
      this.fail(new KvmiInternalError(`error while reading from the VMM: ${String(err)}`, { cause: err }));
    } finally {
      this.pumping = false;
    }
    if (this.ended && this.socket.readableLength === 0 && !this.reason) {
      const where =
        this.phase === "handshake"
          ? " before the end of its handshake"
          : this.header
            ? " in the middle of a message (after its header)"
            : "";
      this.fail(new KvmiClosedError(`the VMM closed the connection${where}`, true));
    }
  }

  private readHandshake(): boolean {
    const H = L.kvmi_qemu2introspector;
    if (this.handshakeSize === undefined) {
      const s = this.read(4);
      if (s === null || s === "short") return false;
      const size = s.readUInt32LE(0);
      if (size < HANDSHAKE_MIN || size > HANDSHAKE_MAX) {
        this.fail(
          new KvmiHandshakeError(
            `the VMM's handshake says it is ${size} bytes; ${HANDSHAKE_MIN}..${HANDSHAKE_MAX} are accepted`,
          ),
        );
        return false;
      }
      this.handshakeSize = size;
    }
    const rest = this.read(this.handshakeSize - 4);
    if (rest === null || rest === "short") return false;
    // What a shorter struct lacks reads as zeros; what a longer one adds is ignored (as libkvmi).
    const b = Buffer.alloc(Math.max(H.size, this.handshakeSize));
    b.writeUInt32LE(this.handshakeSize, 0);
    rest.copy(b, 4);
    const nameBytes = b.subarray(H.off.name, H.off.name + H.fields.name.size);
    const nul = nameBytes.indexOf(0);
    const hs: Handshake = {
      structSize: this.handshakeSize,
      uuid: uuidText(b.subarray(H.off.uuid, H.off.uuid + 16)),
      startTime: b.readBigInt64LE(H.off.start_time),
      name: nameBytes.subarray(0, nul < 0 ? nameBytes.length : nul).toString("utf8"),
    };
    const A = L.kvmi_introspector2qemu;
    const answer = encode(A, { struct_size: A.size });
    const cookie = this.cookieHash?.(hs);
    if (cookie) answer.set(cookie.subarray(0, A.fields.cookie_hash.size), A.off.cookie_hash);
    this.write(answer);
    this.phase = "messages";
    clearTimeout(this.handshakeTimer);
    this.handshakeDone.resolve(hs);
    return true;
  }

  private dispatch(h: Header, payload: Buffer): void {
    if (h.id === Msg.EVENT) {
      let ev: KvmiEvent;
      try {
        ev = decodeEvent(h.seq, payload);
      } catch (err) {
        if (!(err instanceof KvmiProtocolError)) throw err;
        this.breakProtocol(err.message);
        return;
      }
      this.deliver(ev);
      return;
    }
    const p = this.pending.get(h.seq);
    if (!p) {
      this.breakProtocol(
        `a message with id ${h.id} and seq ${h.seq} that answers no command in flight` +
          (h.id === Msg.EVENT_REPLY ? " (event replies go from the tool to the VMM)" : ""),
      );
      return;
    }
    if (p.id !== h.id) {
      this.breakProtocol(
        `the reply to ${named(p.what)} (seq ${h.seq}) has id ${h.id} (${commandName(h.id)}), not ${p.id}`,
      );
      return;
    }
    this.pending.delete(h.seq);
    // Nothing in flight: no timer left to keep the process waiting.
    if (this.pending.size === 0 && this.replyTimer) {
      clearTimeout(this.replyTimer);
      this.replyTimer = undefined;
    }
    const E = L.kvmi_error_code;
    if (payload.length < E.size) {
      p.reject(
        new KvmiReplyError(`${named(p.what)}: a reply of ${payload.length} bytes, without its error code`),
      );
      return;
    }
    const err = payload.readInt32LE(E.off.err);
    if (err !== 0) {
      if (payload.length !== E.size)
        p.reject(
          new KvmiReplyError(
            `${named(p.what)}: an error reply (${err}) with ${payload.length - E.size} bytes of data after its code`,
          ),
        );
      else p.reject(new KvmiCommandError(p.id, err, named(p.what)));
      return;
    }
    p.resolve(payload.subarray(E.size));
  }

  private breakProtocol(what: string): void {
    this.protocolBroken = true;
    this.fail(new KvmiProtocolError(`the VMM broke the protocol: ${what}`));
  }

  // ---- the end ----

  /** End the connection for `reason` (a caller's own timeout, say), as a missing reply would. */
  lose(reason: KvmiConnectionError): void {
    this.fail(reason);
  }

  /** Close the connection: pending commands fail, waiting event readers get undefined. */
  close(): void {
    this.fail(new KvmiClosedError("the connection was closed by this client", false));
  }

  private fail(reason: KvmiConnectionError | KvmiInternalError): void {
    if (this.reason) return;
    this.reason = reason;
    clearTimeout(this.handshakeTimer);
    if (this.phase === "handshake") this.handshakeDone.reject(reason);
    clearTimeout(this.replyTimer);
    this.replyTimer = undefined;
    for (const p of this.pending.values()) p.reject(reason);
    this.pending.clear();
    // A broken stream is not read further; a closed one still hands out what it had received.
    if (this.protocolBroken || reason instanceof KvmiTimeoutError) this.dropQueued();
    if (!this.moreToRead()) for (const w of [...this.waiters]) w.resolve(undefined);
    if (reason instanceof KvmiClosedError && !reason.byPeer) this.socket.end(() => this.socket.destroy());
    else this.socket.destroy();
    this.closedResolve(reason);
  }

  private dropQueued(): void {
    while (this.queue.take()) {
      /* drained */
    }
  }

  /** For messages: "seq 12" of the last command sent. */
  describeLast(): string {
    return `seq ${this.lastSeq} (${hex(this.lastSeq)})`;
  }
}
