// `vmtool watch`: the vCPU observer, live: a screen on a terminal, one line (or JSON object) per event otherwise.
import type { Command } from "commander";
import { UsageError, parseIntOption } from "../errors.js";
import { withDebugfsSource } from "./vcpus.js";

export interface WatchOptions {
  source: string;
  debugfs?: string;
  mount?: boolean;
  json?: boolean;
  interval: string;
  stale: string;
  count?: string;
}

/** Parse a duration in seconds (fractions allowed) within bounds. */
function seconds(text: string, what: string, min: number, max: number): number {
  const v = /^\d+(\.\d+)?$/.test(text.trim()) ? Number(text) : NaN;
  if (!Number.isFinite(v)) throw new UsageError(`${what}: '${text}' is not a number of seconds`);
  if (v < min || v > max) throw new UsageError(`${what}: ${text} is outside ${min}..${max} seconds`);
  return v;
}

export function register(program: Command): void {
  withDebugfsSource(
    program
      .command("watch")
      .description(
        "Watch vCPUs live: on a terminal, host CPUs × vCPUs marked new, active and stale; otherwise one line per " +
          "event (appeared, seen on another CPU, went stale, active again, vanished). Ctrl-C ends with a summary",
      ),
  )
    .option("--interval <seconds>", "time between polls (the module looks once a second by default)", "1")
    .option("--stale <seconds>", "a vCPU not seen for longer than this is stale", "10")
    .option("--count <polls>", "stop after this many polls (default: until Ctrl-C)")
    .option("--json", "print events as JSON lines (never the live screen)")
    .action(async (opts: WatchOptions) => {
      const intervalSeconds = seconds(opts.interval, "--interval", 0.05, 3600);
      const staleSeconds = seconds(opts.stale, "--stale", 0, 86400 * 365);
      const count =
        opts.count === undefined
          ? undefined
          : Number(parseIntOption(opts.count, "--count", { min: 1n, max: 1n << 40n }));
      const { runWatch } = await import("./observer-actions.js");
      await runWatch({ ...opts, intervalSeconds, staleSeconds, count });
    });
}
