// `vmtool serve`: a Prometheus exporter and a live dashboard of the host's VMs (docs/serve.md). Options are
// checked here (bad ones: one line, exit 2); the server loads only in the action.
import { Option, type Command } from "commander";
import { UsageError } from "../errors.js";
import { parseSources } from "./stat.js";
import type { SourceName } from "../../stats/types.js";

/** Outside 9100-9999, the range Prometheus' list of default exporter ports has allocated in full. */
export const DEFAULT_PORT = 10977;
export const DEFAULT_HOST = "127.0.0.1";

export interface ServeOptions {
  listen?: string;
  tokenFile?: string;
  interval: string;
  source?: string;
  heartbeat: string;
}

export interface ServeRequest {
  host: string;
  port: number;
  tokenFile?: string;
  intervalMs: number;
  sources: "auto" | SourceName[];
  heartbeatMs: number;
}

/** `HOST:PORT`, `[V6]:PORT`, `:PORT` (loopback) or `PORT`. */
export function parseListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d+)$/.exec(text) ?? /^()()(\d+)$/.exec(text);
  if (!m) throw new UsageError(`--listen: '${text}' is not HOST:PORT (e.g. 127.0.0.1:${DEFAULT_PORT})`);
  const port = Number(m[3]);
  if (!Number.isInteger(port) || port > 65535)
    throw new UsageError(`--listen: port ${m[3]} is outside 0..65535`);
  return { host: m[1] ?? (m[2] || DEFAULT_HOST), port };
}

export function checkServeOptions(o: ServeOptions): ServeRequest {
  const { host, port } = parseListen(o.listen ?? `${DEFAULT_HOST}:${DEFAULT_PORT}`);
  const loopback = host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
  if (!loopback && o.tokenFile === undefined)
    throw new UsageError(
      `--listen ${host}: an address other than loopback needs --token-file FILE (an access token every client must send)`,
    );
  const v = /^\d+(\.\d+)?$/.test(o.interval.trim()) ? Number(o.interval) : NaN;
  if (!(v >= 0.1 && v <= 60)) throw new UsageError(`--interval: '${o.interval}' is not 0.1..60 seconds`);
  const hb = /^\d+(\.\d+)?$/.test(o.heartbeat.trim()) ? Number(o.heartbeat) : NaN;
  if (!(hb >= 0.1 && hb <= 3600))
    throw new UsageError(`--heartbeat: '${o.heartbeat}' is not 0.1..3600 seconds`);
  return {
    heartbeatMs: Math.round(hb * 1000),
    host,
    port,
    tokenFile: o.tokenFile,
    intervalMs: Math.round(v * 1000),
    sources: parseSources(o.source ?? "auto"),
  };
}

export function register(program: Command): void {
  program
    .command("serve")
    .summary("a Prometheus exporter (/metrics) and a live web dashboard of the host's VMs")
    .description(
      "One HTTP server: /metrics in Prometheus' text format (OpenMetrics when asked), collected at each scrape " +
        "from the stats of `vmtool stat` (every VM: KVM's binary stats, vmtool's exit counters, tracepoints, " +
        "debugfs), the observer's vCPU placement and the host's facts; and at / a live page of every VM, the " +
        "host and a host CPU × vCPU map. Read-only. Listens on loopback unless --listen says otherwise, which " +
        "needs --token-file. Runs until Ctrl-C or SIGTERM.",
    )
    .option("--listen <host:port>", `the address to listen on (default ${DEFAULT_HOST}:${DEFAULT_PORT})`)
    .option(
      "--token-file <file>",
      "a file holding the access token (at least 16 characters, readable by its owner only) every request must carry",
    )
    .option("--interval <seconds>", "the dashboard's refresh interval, 0.1..60 s", "1")
    .option("--source <list>", "the stats sources, as vmtool stat's --source (default auto)")
    .addOption(
      new Option("--heartbeat <seconds>", "seconds between the stream's keep-alive comments")
        .default("15")
        .hideHelp(),
    )
    .addHelpText(
      "after",
      "\nExamples:\n" +
        `  sudo vmtool serve                            http://127.0.0.1:${DEFAULT_PORT}/ and /metrics\n` +
        "  sudo vmtool serve --listen 0.0.0.0:10977 --token-file /etc/vmtool/token\n" +
        "\nPrometheus: scrape_configs: [{job_name: vmtool, static_configs: [{targets: ['127.0.0.1:10977']}]}]",
    )
    .action(async (opts: ServeOptions) => {
      const req = checkServeOptions(opts);
      const { runServe } = await import("../serve/run.js");
      await runServe(req);
    });
}
