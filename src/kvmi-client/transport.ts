// Where the socket comes from. KVMI's own way: the tool listens on a UNIX socket and the VMM connects
// (`vmtool run --introspect connect:PATH`, QEMU's `-chardev socket,path=...,reconnect=N`); or the other way
// round for vmtool's own listener (`vmtool run --introspect listen:PATH`): the tool connects.
import { lstatSync, unlinkSync, chmodSync } from "node:fs";
import { createConnection, createServer, type Socket } from "node:net";
import { KvmiClosedError, KvmiConnectionError, KvmiUsageError } from "./errors.js";

export interface ListenOptions {
  /** Give up waiting for the VMM after this long, in ms (default: wait for ever). */
  acceptTimeoutMs?: number;
  /** Stop waiting when this signal aborts. */
  signal?: AbortSignal;
  /** The socket file's mode (default 0o600: only this user's VMM may connect; libkvmi uses 0o777). */
  mode?: number;
}

/** No VMM came, or none is listening where we connect. */
export class KvmiConnectError extends KvmiConnectionError {}

function errCode(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? String(err);
}

/** Whether something listens on the UNIX socket at `path` (a connect that succeeds). */
function someoneListens(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection(path);
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

/** Make `path` free for a new listening socket: nothing there, or a socket nobody listens on (removed). */
async function freePath(path: string): Promise<void> {
  let st;
  try {
    st = lstatSync(path);
  } catch (err) {
    if (errCode(err) === "ENOENT") return;
    throw new KvmiUsageError(`${path}: cannot use it for a socket (${errCode(err)})`);
  }
  if (!st.isSocket())
    throw new KvmiUsageError(
      `${path}: exists and is not a socket (a socket is created there: choose another path)`,
    );
  if (await someoneListens(path))
    throw new KvmiUsageError(`${path}: another program is already listening on this socket`);
  unlinkSync(path);
}

/**
 * Listen on `path` and resolve with the first VMM's socket. The socket file is created with `mode` (0o600)
 * and removed once the VMM is connected (or when the wait ends): one connection per listen.
 */
export async function acceptOne(path: string, opts: ListenOptions = {}): Promise<Socket> {
  await freePath(path);
  const server = createServer({ allowHalfOpen: false });
  const mode = opts.mode ?? 0o600;
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err) => reject(new KvmiUsageError(`${path}: cannot listen (${errCode(err)})`)));
    // The socket file is created by bind() inside listen(): a restrictive umask keeps it private from the
    // start, not only after the chmod below.
    const old = process.umask(0o177);
    try {
      server.listen(path, () => resolve());
    } finally {
      process.umask(old);
    }
  });
  try {
    chmodSync(path, mode);
  } catch (err) {
    server.close();
    throw new KvmiUsageError(`${path}: cannot set the socket's mode (${errCode(err)})`);
  }
  const cleanup = () => {
    server.close();
    try {
      unlinkSync(path);
    } catch {
      // already gone
    }
  };
  return new Promise<Socket>((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    const onAbort = () => {
      finish();
      reject(new KvmiConnectError(`no VMM connected to ${path}: the wait was cancelled`));
    };
    const finish = () => {
      if (timer) clearTimeout(timer);
      opts.signal?.removeEventListener("abort", onAbort);
      cleanup();
    };
    const waitMs = opts.acceptTimeoutMs;
    if (waitMs !== undefined)
      timer = setTimeout(() => {
        finish();
        reject(new KvmiConnectError(`no VMM connected to ${path} within ${waitMs / 1000} s`));
      }, waitMs);
    if (opts.signal?.aborted) {
      onAbort();
      return;
    }
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    server.once("connection", (socket: Socket) => {
      // No 'data' listener and no resume(): what the VMM sends first stays buffered for the connection's
      // 'readable' reader.
      finish();
      resolve(socket);
    });
  });
}

/** Connect to a VMM that listens on `path` (`vmtool run --introspect listen:PATH`). */
export async function connectTo(path: string, opts: { timeoutMs?: number } = {}): Promise<Socket> {
  let st;
  try {
    st = lstatSync(path);
  } catch (err) {
    if (errCode(err) === "ENOENT")
      throw new KvmiConnectError(
        `${path}: no such socket (is a vmtool run --introspect listen:${path} running?)`,
      );
    throw new KvmiConnectError(`${path}: cannot connect (${errCode(err)})`);
  }
  if (!st.isSocket()) throw new KvmiUsageError(`${path}: is not a socket`);
  return new Promise<Socket>((resolve, reject) => {
    const socket = createConnection({ path, allowHalfOpen: false });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(
        new KvmiConnectError(
          `${path}: the connection was not accepted within ${(opts.timeoutMs ?? 15000) / 1000} s`,
        ),
      );
    }, opts.timeoutMs ?? 15000);
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.removeAllListeners("error");
      resolve(socket);
    });
    socket.once("error", (err) => {
      clearTimeout(timer);
      const code = errCode(err);
      reject(
        code === "ECONNREFUSED"
          ? new KvmiConnectError(`${path}: nobody listens on this socket (ECONNREFUSED: the VMM has ended?)`)
          : new KvmiClosedError(`${path}: cannot connect (${code})`, true),
      );
    });
  });
}
