// `vmtool serve`'s HTTP server (plain node:http): /metrics for Prometheus, the dashboard's page and assets, and
// one Server-Sent Events stream (/events) that carries every VM to the page. Read-only: no endpoint changes a
// VM or the host. What keeps it safe and available (docs/serve.md, "Security"):
//   - a fixed route table: no file is ever looked up by a request's path (no directory listing, no `..`);
//   - headers a browser needs (a Content Security Policy allowing the page's own scripts only, nosniff, no
//     framing, no CORS) and a Host check against DNS rebinding while it listens on loopback;
//   - an access token (Authorization: Bearer, or a cookie the page's first load sets) compared in constant time;
//   - bounds: header size, request bodies refused, at most MAX_CONNECTIONS sockets (the oldest idle one makes
//     room for a new one, so idle or slow clients cannot lock others out), at most MAX_STREAMS streams, and a
//     stream whose reader does not keep up is dropped instead of buffered without end.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Socket, AddressInfo } from "node:net";
import { createHash, timingSafeEqual } from "node:crypto";
import { gzipSync } from "node:zlib";
import { CONTENT_TYPES, negotiate, writeExposition } from "./exposition.js";
import { scrapeFamilies } from "./metrics.js";
import { FRAME_BINARY_STATS, FrameMaker, type Frame } from "./frames.js";
import type { ServeSources } from "./sources.js";
import type { Asset } from "./assets.js";

export const MAX_CONNECTIONS = 64;
export const MAX_STREAMS = 16;
/** Bytes a stream may have waiting for its reader before it is dropped. */
const STREAM_BACKLOG = 1 << 20;
/** Frames kept for a page that reconnects (Last-Event-ID) or opens: two minutes at 1 s. */
const HISTORY = 120;
const MAX_HEADER_BYTES = 8192;

const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  "Content-Security-Policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "X-Content-Type-Options": "nosniff",
  "X-Frame-Options": "DENY",
  "Referrer-Policy": "no-referrer",
  "Cross-Origin-Opener-Policy": "same-origin",
  "Cross-Origin-Resource-Policy": "same-origin",
};

export interface ServerOptions {
  host: string;
  port: number;
  /** Required for every request when set. */
  token?: string;
  /** Interval of the dashboard's stream, ms. */
  intervalMs: number;
  /** Comment lines that keep an idle stream open through proxies, ms. */
  heartbeatMs?: number;
  sources: ServeSources;
  assets: ReadonlyMap<string, Asset>;
}

export function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
}

const digest = (s: string) => createHash("sha256").update(s).digest();

interface Conn {
  busy: boolean;
}

interface Stream {
  res: ServerResponse;
}

export class VmtoolServer {
  private readonly server: Server;
  private readonly conns = new Map<Socket, Conn>();
  private readonly streams = new Set<Stream>();
  private readonly history: Frame[] = [];
  private readonly frames = new FrameMaker();
  private tick: NodeJS.Timeout | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  private readonly tokenDigest: Buffer | undefined;
  private closed = false;
  private hostEvent: string | undefined;

  constructor(private readonly opts: ServerOptions) {
    this.tokenDigest = opts.token === undefined ? undefined : digest(opts.token);
    this.server = createServer(
      {
        maxHeaderSize: MAX_HEADER_BYTES,
        headersTimeout: 10_000,
        requestTimeout: 30_000,
        keepAliveTimeout: 5_000,
        connectionsCheckingInterval: 1_000,
      },
      (req, res) => this.handle(req, res),
    );
    this.server.on("connection", (s: Socket) => this.admit(s));
    // A malformed request (bad framing, headers too large): Node's answer, then the socket is closed.
    this.server.on("clientError", (err: NodeJS.ErrnoException, socket: Socket) => {
      if (!socket.writable) return socket.destroy();
      const status =
        err.code === "HPE_HEADER_OVERFLOW" ? "431 Request Header Fields Too Large" : "400 Bad Request";
      socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    });
  }

  listen(): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen({ host: this.opts.host, port: this.opts.port, exclusive: true }, () => {
        this.server.off("error", reject);
        resolve(this.server.address() as AddressInfo);
      });
    });
  }

  /** Sockets open now, streams open now (for tests and the log). */
  get counts() {
    return { connections: this.conns.size, streams: this.streams.size };
  }

  private admit(s: Socket): void {
    this.conns.set(s, { busy: false });
    s.on("close", () => this.conns.delete(s));
    if (this.conns.size <= MAX_CONNECTIONS) return;
    // Full: the oldest socket without a request in progress makes room; if every one is busy, the new one goes.
    for (const [other, c] of this.conns)
      if (!c.busy && other !== s) {
        other.destroy();
        this.conns.delete(other);
        return;
      }
    s.destroy();
    this.conns.delete(s);
  }

  private send(res: ServerResponse, status: number, type: string, body: string | Buffer, extra = {}): void {
    res.writeHead(status, {
      ...SECURITY_HEADERS,
      "Content-Type": type,
      "Content-Length": Buffer.byteLength(body),
      "Cache-Control": "no-store",
      ...extra,
    });
    res.end(res.req.method === "HEAD" ? undefined : body);
  }

  private text(res: ServerResponse, status: number, message: string, extra = {}): void {
    this.send(res, status, "text/plain; charset=utf-8", `${message}\n`, extra);
  }

  private allowedHost(req: IncomingMessage): boolean {
    if (!isLoopback(this.opts.host)) return true; // the token protects it
    const host = req.headers.host;
    if (host === undefined) return false;
    const name = host.startsWith("[") ? host.slice(1, host.indexOf("]")) : host.replace(/:\d+$/, "");
    return isLoopback(name);
  }

  /** The request carries the token (Bearer, or the cookie the page's first load sets). */
  private authorized(req: IncomingMessage, url: URL): "yes" | "no" | "set-cookie" {
    if (!this.tokenDigest) return "yes";
    const auth = req.headers.authorization;
    const bearer = auth?.startsWith("Bearer ") ? auth.slice(7).trim() : undefined;
    const cookie = /(?:^|;\s*)vmtool_token=([^;]*)/.exec(req.headers.cookie ?? "")?.[1];
    const query = url.pathname === "/" ? url.searchParams.get("token") : null;
    for (const [given, result] of [
      [bearer, "yes"],
      [cookie === undefined ? undefined : decodeURIComponent(cookie), "yes"],
      [query ?? undefined, "set-cookie"],
    ] as const)
      if (given !== undefined && timingSafeEqual(digest(given), this.tokenDigest)) return result;
    return "no";
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const conn = this.conns.get(req.socket);
    if (conn) conn.busy = true;
    res.on("finish", () => {
      if (conn) conn.busy = false;
    });
    try {
      this.route(req, res);
    } catch (e) {
      if (!res.headersSent)
        this.text(res, 500, `internal error: ${e instanceof Error ? e.message : String(e)}`);
      else res.destroy();
    }
  }

  private route(req: IncomingMessage, res: ServerResponse): void {
    if (this.closed) return this.text(res, 503, "shutting down", { Connection: "close" });
    if (req.method !== "GET" && req.method !== "HEAD")
      return this.text(res, 405, "read-only: only GET and HEAD", { Allow: "GET, HEAD" });
    const length = Number(req.headers["content-length"] ?? 0);
    if (length > 0 || req.headers["transfer-encoding"] !== undefined)
      return this.text(res, 413, "no request body is accepted", { Connection: "close" });
    if (!this.allowedHost(req))
      return this.text(res, 403, "the Host header names no loopback address (DNS rebinding is refused)");
    let url: URL;
    try {
      url = new URL(req.url ?? "/", "http://localhost");
    } catch {
      return this.text(res, 400, "bad request target");
    }
    const auth = this.authorized(req, url);
    if (auth === "no")
      return this.text(res, 401, "an access token is needed (Authorization: Bearer TOKEN)", {
        "WWW-Authenticate": 'Bearer realm="vmtool"',
      });
    const query = url.searchParams.get("token");
    if (auth === "set-cookie" && query !== null)
      return this.send(res, 303, "text/plain; charset=utf-8", "", {
        Location: "/",
        "Set-Cookie": `vmtool_token=${encodeURIComponent(query)}; HttpOnly; SameSite=Strict; Path=/`,
      });
    const path = url.pathname;
    if (path === "/metrics") return this.metrics(req, res);
    if (path === "/events") return this.events(req, res);
    const asset = this.opts.assets.get(path === "/" ? "/index.html" : path);
    if (!asset) return this.text(res, 404, "not found");
    const gz = /\bgzip\b/.test(req.headers["accept-encoding"] ?? "");
    this.send(res, 200, asset.type, gz ? asset.gzip : asset.body, {
      "Cache-Control": "no-cache",
      ...(gz ? { "Content-Encoding": "gzip" } : {}),
      Vary: "Accept-Encoding",
    });
  }

  /** One scrape: every collector read now, exported as Prometheus asked (text 0.0.4 or OpenMetrics). */
  private metrics(req: IncomingMessage, res: ServerResponse): void {
    const t0 = process.hrtime.bigint();
    const src = this.opts.sources;
    const stats = src.pollStats();
    const placement = src.placement();
    const host = src.hostFacts();
    const collectors = [
      { name: "kvm_stats", got: stats },
      { name: "placement", got: placement },
      { name: "host", got: host },
    ];
    if (collectors.every((c) => c.got.error))
      return this.text(
        res,
        500,
        `every collector failed: ${collectors.map((c) => `${c.name}: ${c.got.error}`).join("; ")}`,
      );
    const families = scrapeFamilies(
      {
        snapshot: stats.value,
        placement: placement.value,
        host: host.value,
        collectors: collectors.map((c) => ({ name: c.name, up: !c.got.error, seconds: c.got.seconds })),
      },
      Number(process.hrtime.bigint() - t0) / 1e9,
    );
    const format = negotiate(req.headers.accept);
    const body = writeExposition(families, format);
    const gz = /\bgzip\b/.test(req.headers["accept-encoding"] ?? "");
    this.send(res, 200, CONTENT_TYPES[format], gz ? gzipSync(body) : body, {
      ...(gz ? { "Content-Encoding": "gzip" } : {}),
      Vary: "Accept, Accept-Encoding",
    });
  }

  private events(req: IncomingMessage, res: ServerResponse): void {
    if (this.streams.size >= MAX_STREAMS)
      return this.text(res, 503, `too many dashboards open (at most ${MAX_STREAMS})`, { "Retry-After": "5" });
    res.writeHead(200, {
      ...SECURITY_HEADERS,
      "Content-Type": "text/event-stream; charset=utf-8",
      "Cache-Control": "no-store",
      "X-Accel-Buffering": "no",
    });
    if (req.method === "HEAD") return void res.end();
    const stream: Stream = { res };
    this.streams.add(stream);
    res.on("close", () => {
      this.streams.delete(stream);
      if (this.streams.size === 0) this.stopTicking();
    });
    const last = Number(req.headers["last-event-id"]);
    let text = "retry: 2000\n\n" + this.hostText();
    // History the page has not seen: all of it for a new page, what came after its last id for one that
    // reconnects.
    for (const f of this.history) if (!(f.id <= last)) text += frameText(f);
    this.write(stream, text);
    this.startTicking();
  }

  private hostText(): string {
    if (!this.hostEvent) {
      const h = this.opts.sources.hostFacts();
      this.hostEvent = `event: host\ndata: ${JSON.stringify(h.value ?? { error: h.error })}\n\n`;
    }
    return this.hostEvent;
  }

  private write(stream: Stream, text: string): void {
    const res = stream.res;
    if (res.destroyed) return;
    if (res.writableLength > STREAM_BACKLOG) {
      // A reader that does not keep up: drop it rather than hold ever more for it.
      res.destroy();
      this.streams.delete(stream);
      return;
    }
    res.write(text);
  }

  private startTicking(): void {
    if (this.tick || this.closed) return;
    const step = () => {
      const stats = this.opts.sources.pollStats(FRAME_BINARY_STATS);
      const placement = this.opts.sources.placement();
      const frame = this.frames.make(
        stats.value,
        stats.error,
        placement.value ?? { error: placement.error ?? "unknown" },
      );
      this.history.push(frame);
      if (this.history.length > HISTORY) this.history.shift();
      const text = frameText(frame);
      for (const s of this.streams) this.write(s, text);
    };
    step();
    this.tick = setInterval(step, this.opts.intervalMs);
    this.heartbeat = setInterval(() => {
      for (const s of this.streams) this.write(s, ": heartbeat\n\n");
    }, this.opts.heartbeatMs ?? 15_000);
  }

  private stopTicking(): void {
    clearInterval(this.tick);
    clearInterval(this.heartbeat);
    this.tick = this.heartbeat = undefined;
  }

  /** Stop: every stream ended, every connection closed, every copied fd released. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stopTicking();
    for (const s of this.streams) s.res.end();
    this.streams.clear();
    const done = new Promise<void>((r) => this.server.close(() => r()));
    this.server.closeAllConnections();
    for (const s of this.conns.keys()) s.destroy();
    this.opts.sources.close();
    await done;
  }
}

export function frameText(f: Frame): string {
  return `id: ${f.id}\nevent: frame\ndata: ${JSON.stringify(f)}\n\n`;
}
