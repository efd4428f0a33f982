// Where the stub listens: `tcp::PORT` (127.0.0.1), `tcp:HOST:PORT`, or `unix:PATH` (a socket of mode 0600,
// so only its owner, and root, can connect). QEMU's spelling of -gdb's device.
import { createServer, type Server, type Socket } from "node:net";
import { lstatSync, unlinkSync } from "node:fs";
import { InputError } from "../errors.js";

export class GdbListenError extends InputError {}
/** The socket could not be opened (the port is taken...). */
export class GdbServerError extends InputError {}

export type GdbEndpoint = { kind: "tcp"; host: string; port: number } | { kind: "unix"; path: string };

/** Parse `tcp::1234`, `tcp:HOST:1234`, `:1234`, `1234` or `unix:PATH`. */
export function parseGdbEndpoint(spec: string): GdbEndpoint {
  const bad = (why: string) => new GdbListenError(`--gdb ${spec}: ${why}`);
  if (spec.startsWith("unix:")) {
    const path = spec.slice(5);
    if (path === "") throw bad("no socket path after unix:");
    if (Buffer.byteLength(path) > 107) throw bad("a unix socket path is at most 107 bytes");
    return { kind: "unix", path };
  }
  let rest = spec;
  if (rest.startsWith("tcp:")) rest = rest.slice(4);
  const colon = rest.lastIndexOf(":");
  const host = colon < 0 ? "" : rest.slice(0, colon);
  const portText = colon < 0 ? rest : rest.slice(colon + 1);
  if (!/^[0-9]{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535)
    throw bad(
      `'${portText}' is not a TCP port (1..65535); the forms are tcp::PORT, tcp:HOST:PORT, unix:PATH`,
    );
  if (host.includes(":") && !/^\[.*\]$/.test(host))
    throw bad("write an IPv6 address in brackets: tcp:[::1]:PORT");
  return {
    kind: "tcp",
    host: host === "" ? "127.0.0.1" : host.replace(/^\[|\]$/g, ""),
    port: Number(portText),
  };
}

export function endpointText(e: GdbEndpoint): string {
  return e.kind === "unix" ? `unix:${e.path}` : `${e.host.includes(":") ? `[${e.host}]` : e.host}:${e.port}`;
}

/** Listen on `e`; each connection goes to `onConnection`. Resolves once listening. */
export async function listenGdb(
  e: GdbEndpoint,
  onConnection: (socket: Socket, peer: string) => void,
): Promise<{ server: Server; close: () => void }> {
  const server = createServer({ noDelay: true }, (socket) => {
    const peer =
      e.kind === "unix" ? "unix socket" : `${socket.remoteAddress ?? "?"}:${socket.remotePort ?? "?"}`;
    onConnection(socket, peer);
  });
  if (e.kind === "unix") {
    // A socket file left by an earlier run is replaced; anything else at the path is not touched.
    try {
      const st = lstatSync(e.path);
      if (!st.isSocket())
        throw new GdbListenError(`--gdb unix:${e.path}: the path exists and is not a socket`);
      unlinkSync(e.path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
  }
  // The socket file is created with mode 0600 (umask 0177 while it is made), not chmod'ed after.
  const oldMask = e.kind === "unix" ? process.umask(0o177) : undefined;
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      if (e.kind === "unix") server.listen(e.path, resolve);
      else server.listen(e.port, e.host, resolve);
    });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "";
    throw new GdbServerError(`--gdb ${endpointText(e)}: cannot listen: ${code || (err as Error).message}`);
  } finally {
    if (oldMask !== undefined) process.umask(oldMask);
  }
  server.on("error", () => undefined);
  server.unref();
  return {
    server,
    close: () => {
      server.close();
      if (e.kind === "unix")
        try {
          unlinkSync(e.path);
        } catch {
          /* already gone */
        }
    },
  };
}
