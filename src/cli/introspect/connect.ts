// Where `vmtool introspect` finds its VMM: --socket PATH (a `vmtool run --introspect listen:PATH` waits
// there) or --listen PATH (wait there for a `vmtool run --introspect connect:PATH`), and the signals that end a
// command cleanly.
import type { Command } from "commander";
// The client is imported where a connection is opened: every command loads this file (commands/index.ts).
import type { KvmiClient } from "../../kvmi-client/client.js";
import { UsageError } from "../errors.js";
import { Cancelled } from "./errors.js";

export interface ConnectOptions {
  socket?: string;
  listen?: string;
  wait: string;
  timeout: string;
  json?: boolean;
}

/** The options every `vmtool introspect` subcommand has. */
export function withConnection(cmd: Command): Command {
  return cmd
    .option("--socket <path>", "connect to a VMM listening there (vmtool run --introspect listen:PATH)")
    .option("--listen <path>", "listen there until a VMM connects (vmtool run --introspect connect:PATH)")
    .option("--wait <seconds>", "with --listen: how long to wait for the VMM", "60")
    .option("--timeout <seconds>", "how long to wait for each reply before the VMM is taken as lost", "15")
    .option("--json", "print JSON");
}

/** Seconds from an option, within bounds. */
export function seconds(text: string, what: string, min: number, max: number): number {
  const v = /^\d+(\.\d+)?$/.test(text.trim()) ? Number(text) : NaN;
  if (!Number.isFinite(v)) throw new UsageError(`${what}: '${text}' is not a number of seconds`);
  if (v < min || v > max) throw new UsageError(`${what}: ${text} is outside ${min}..${max} seconds`);
  return v;
}

/** Check the connection options (before anything is done, so that bad usage is reported first). */
export function checkConnection(opts: ConnectOptions): { waitMs: number; timeoutMs: number } {
  if ((opts.socket === undefined) === (opts.listen === undefined))
    throw new UsageError("say where the VMM is: --socket PATH (it listens) or --listen PATH (it connects)");
  return {
    waitMs: seconds(opts.wait, "--wait", 0, 86400) * 1000,
    timeoutMs: seconds(opts.timeout, "--timeout", 0.1, 3600) * 1000,
  };
}

/**
 * Connect as the options say. Ctrl-C or SIGTERM while waiting for a VMM ends the wait (the socket file is
 * removed) with Cancelled.
 */
export async function openClient(opts: ConnectOptions): Promise<KvmiClient> {
  const { waitMs, timeoutMs } = checkConnection(opts);
  const { KvmiClient } = await import("../../kvmi-client/client.js");
  const { KvmiConnectError } = await import("../../kvmi-client/transport.js");
  const ac = new AbortController();
  let signal: "SIGINT" | "SIGTERM" | undefined;
  const onInt = () => {
    signal = "SIGINT";
    ac.abort();
  };
  const onTerm = () => {
    signal = "SIGTERM";
    ac.abort();
  };
  process.on("SIGINT", onInt);
  process.on("SIGTERM", onTerm);
  try {
    if (opts.socket !== undefined)
      return await KvmiClient.connect(opts.socket, { replyTimeoutMs: timeoutMs });
    return await KvmiClient.listen(opts.listen ?? "", {
      replyTimeoutMs: timeoutMs,
      acceptTimeoutMs: waitMs,
      signal: ac.signal,
    });
  } catch (err) {
    if (signal && err instanceof KvmiConnectError) throw new Cancelled(signal);
    throw err;
  } finally {
    process.off("SIGINT", onInt);
    process.off("SIGTERM", onTerm);
  }
}

/**
 * Until `stop` is called or SIGINT/SIGTERM arrives: the returned signal aborts then. The handlers are removed
 * by `done`.
 */
export function untilInterrupted(): {
  signal: AbortSignal;
  stop: () => void;
  done: () => void;
  by: () => string | undefined;
} {
  const ac = new AbortController();
  let by: string | undefined;
  const onSignal = (name: string) => () => {
    by = name;
    ac.abort();
  };
  const onInt = onSignal("SIGINT");
  const onTerm = onSignal("SIGTERM");
  process.on("SIGINT", onInt);
  process.on("SIGTERM", onTerm);
  return {
    signal: ac.signal,
    stop: () => ac.abort(),
    done: () => {
      process.off("SIGINT", onInt);
      process.off("SIGTERM", onTerm);
    },
    by: () => by,
  };
}
