// The action behind `vmtool serve`: reads the token file, starts the server, says where it listens, and stops
// it cleanly on SIGINT or SIGTERM (status 0).
import { openSync, fstatSync, readSync, closeSync } from "node:fs";
import { writeStderr } from "../action.js";
import { UsageError } from "../errors.js";
import { HostUnsupportedError } from "../../errors.js";
import type { ServeRequest } from "../commands/serve.js";

const TOKEN_MAX = 4096;

function readToken(path: string): string {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (e) {
    throw new UsageError(`--token-file ${path}: cannot be opened (${(e as NodeJS.ErrnoException).code})`);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new UsageError(`--token-file ${path}: not a regular file`);
    if ((st.mode & 0o077) !== 0)
      throw new UsageError(
        `--token-file ${path}: readable by others (mode ${(st.mode & 0o777).toString(8)}): chmod 600 it`,
      );
    const buf = Buffer.alloc(TOKEN_MAX + 1);
    const n = readSync(fd, buf, 0, buf.length, 0);
    if (n > TOKEN_MAX) throw new UsageError(`--token-file ${path}: longer than ${TOKEN_MAX} bytes`);
    const token = buf.subarray(0, n).toString("utf8").trim();
    if (token.length < 16 || /[\s;,]/.test(token))
      throw new UsageError(
        `--token-file ${path}: the token must be at least 16 characters, with no spaces, commas or semicolons`,
      );
    return token;
  } finally {
    closeSync(fd);
  }
}

export async function runServe(req: ServeRequest): Promise<void> {
  const token = req.tokenFile === undefined ? undefined : readToken(req.tokenFile);
  const { ServeSources } = await import("../../serve/sources.js");
  const { VmtoolServer } = await import("../../serve/server.js");
  const { loadAssets } = await import("../../serve/assets.js");
  const assets = loadAssets();
  const sources = new ServeSources({ collector: { sources: req.sources } });
  const server = new VmtoolServer({
    host: req.host,
    port: req.port,
    token,
    intervalMs: req.intervalMs,
    heartbeatMs: req.heartbeatMs,
    sources,
    assets,
  });
  let addr;
  try {
    addr = await server.listen();
  } catch (e) {
    sources.close();
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "EADDRINUSE")
      throw new UsageError(`--listen ${req.host}:${req.port}: the address is in use`);
    if (code === "EADDRNOTAVAIL" || code === "ENOTFOUND" || code === "EAI_AGAIN")
      throw new UsageError(`--listen ${req.host}: not an address of this host (${code})`);
    if (code === "EACCES")
      throw new HostUnsupportedError(`--listen ${req.host}:${req.port}: not allowed (EACCES)`);
    throw e;
  }
  const shown = addr.family === "IPv6" ? `[${addr.address}]` : addr.address;
  writeStderr(`vmtool serve: listening on http://${shown}:${addr.port}/ (metrics: /metrics)\n`);
  await new Promise<void>((resolve) => {
    const stop = () => {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
      void server.close().then(resolve);
    };
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
  });
}
