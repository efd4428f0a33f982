// `vmtool stat`: live statistics of every VM on the host, kvm_stat's interface (docs/stat.md). Options are
// checked here (bad ones: one line, exit 2); the stats layer and the screen load only in the action.
import { Command, Option } from "commander";
import { UsageError, parseIntOption } from "../errors.js";
import { SOURCE_NAMES, type SourceName } from "../../stats/types.js";

export interface StatOptions {
  once?: boolean;
  log?: boolean;
  logToFile?: string;
  csv?: boolean;
  skipZeroRecords?: boolean;
  fields?: string;
  pid?: string;
  guest?: string;
  setDelay: string;
  debugfsIncludePast?: boolean;
  tracepoints?: boolean;
  debugfs?: boolean;
  source?: string;
  perVcpu?: boolean;
  json?: boolean;
  count?: string;
}

/** What the action needs, checked. */
export interface StatRequest {
  mode: "once" | "log" | "json" | "live";
  logFile?: string;
  csv: boolean;
  skipZero: boolean;
  /** undefined: no filter; "help": list the events. */
  fields?: RegExp | "help";
  fieldsText?: string;
  pid?: number;
  guest?: string;
  delaySeconds: number;
  includePast: boolean;
  sources: "auto" | SourceName[];
  perVcpu: boolean;
  count?: number;
}

export const MIN_DELAY = 0.1;
export const MAX_DELAY = 25.5;

/** `-s`: seconds between refreshes, kvm_stat's range 0.1..25.5. */
export function parseDelay(text: string, what = "-s/--set-delay"): number {
  const v = /^\s*\d+(\.\d+)?\s*$|^\s*\.\d+\s*$/.test(text) ? Number(text) : NaN;
  if (!Number.isFinite(v)) throw new UsageError(`${what}: '${text}' is not a number of seconds`);
  if (v < MIN_DELAY || v > MAX_DELAY)
    throw new UsageError(`${what}: ${text} is outside ${MIN_DELAY}..${MAX_DELAY} seconds`);
  return v;
}

/** `-f`: a regular expression matched at the start of event names (as kvm_stat's re.match). */
export function parseFields(text: string, what = "-f/--fields"): RegExp {
  try {
    return new RegExp(`^(?:${text})`);
  } catch (e) {
    throw new UsageError(`${what}: '${text}' is not a valid regular expression (${(e as Error).message})`);
  }
}

export function parseSources(text: string): "auto" | SourceName[] {
  if (text === "auto") return "auto";
  const list = text.split(",").map((s) => s.trim());
  for (const s of list)
    if (!(SOURCE_NAMES as readonly string[]).includes(s))
      throw new UsageError(
        `--source: '${s}' is not one of auto, ${SOURCE_NAMES.join(", ")} (a comma-separated list)`,
      );
  return [...new Set(list)] as SourceName[];
}

export function checkStatOptions(o: StatOptions): StatRequest {
  const logging = o.log === true || o.logToFile !== undefined;
  if (o.csv && !logging) throw new UsageError("-c/--csv needs -l/--log or -L/--log-to-file");
  if (o.skipZeroRecords && !logging)
    throw new UsageError("-z/--skip-zero-records needs -l/--log or -L/--log-to-file");
  const modes = [o.once && "-1", logging && (o.log ? "-l" : "-L"), o.json && "--json"].filter(Boolean);
  if (modes.length > 1) throw new UsageError(`${modes.join(" and ")} cannot be combined: choose one output`);
  if (o.pid !== undefined && o.guest !== undefined)
    throw new UsageError("-p/--pid and -g/--guest: give one of them");
  if (o.logToFile === "") throw new UsageError("-L/--log-to-file: no file name");
  let pid: number | undefined;
  if (o.pid !== undefined) pid = Number(parseIntOption(o.pid, "-p/--pid", { min: 1n, max: 0x3fffffffn }));
  if (o.guest !== undefined && o.guest.trim() === "") throw new UsageError("-g/--guest: no guest name");
  let sources: "auto" | SourceName[] = parseSources(o.source ?? "auto");
  if (o.tracepoints || o.debugfs) {
    if (o.source !== undefined) throw new UsageError("-t/-d and --source: give one of them");
    sources = [
      ...(o.tracepoints ? (["tracepoints"] as const) : []),
      ...(o.debugfs ? (["debugfs"] as const) : []),
    ];
  }
  const count =
    o.count === undefined
      ? undefined
      : Number(parseIntOption(o.count, "--count", { min: 1n, max: 1n << 40n }));
  return {
    mode: o.once ? "once" : logging ? "log" : o.json ? "json" : "live",
    logFile: o.logToFile,
    csv: o.csv ?? false,
    skipZero: o.skipZeroRecords ?? false,
    fields:
      o.fields === undefined || o.fields === ""
        ? undefined
        : o.fields === "help"
          ? "help"
          : parseFields(o.fields),
    fieldsText: o.fields || undefined,
    pid,
    guest: o.guest,
    delaySeconds: parseDelay(o.setDelay),
    includePast: o.debugfsIncludePast ?? false,
    sources,
    perVcpu: o.perVcpu ?? false,
    count,
  };
}

export function register(program: Command): void {
  program
    .command("stat")
    .summary("live statistics of every VM on the host (kvm_stat's interface, more sources)")
    .description(
      "Live statistics of the host's VMs, kvm_stat's interface: Event, Total (since stat started), %Total and " +
        "CurAvg/s, summed over every VM or for one (-p, -g). Sources: KVM's binary stats (the stats fds VMMs " +
        "hold: vmtool, QEMU >= 8.1), vmtool's own exit counters (by exit reason, port and MMIO address), KVM " +
        "tracepoints through perf counters (root) and debugfs (root; mostly refused under lockdown). " +
        "On a terminal a live screen (h lists its keys); otherwise, or with -l, one line of deltas per interval.",
    )
    .option("-1, --once", "one 1-second sample: 'event total delta' lines (alias --batch)")
    .addOption(new Option("--batch").hideHelp().implies({ once: true }))
    .option(
      "-l, --log",
      "a line of deltas every interval, the event names repeated every 20 lines (like vmstat)",
    )
    .option("-L, --log-to-file <file>", "like --log, appended to FILE; SIGHUP reopens it (for log rotation)")
    .option("-c, --csv", "with -l/-L: CSV (a timestamp column, then one column per event)")
    .option("-z, --skip-zero-records", "with -l/-L: leave out the lines whose deltas are all 0")
    .option("-f, --fields <regex>", "only the events whose name matches (from its start); 'help' lists them")
    .option("-p, --pid <pid>", "only this VM process")
    .option("-g, --guest <name>", "only the VM of this name (QEMU's -name, else the command name)")
    .option("-s, --set-delay <seconds>", `seconds between refreshes, ${MIN_DELAY}..${MAX_DELAY}`, "3")
    .option(
      "-i, --debugfs-include-past",
      "totals include what the VMs counted before stat started (binary stats, vmtool counters, debugfs)",
    )
    .option("-t, --tracepoints", "the tracepoint source only (kvm_stat's -t; with -d: both)")
    .option("-d, --debugfs", "the debugfs source only (kvm_stat's -d; with -t: both)")
    .option(
      "--source <list>",
      `auto (the default: binary stats and vmtool's counters, debugfs and tracepoints only for VMs that give neither), or a list of ${SOURCE_NAMES.join(", ")}`,
    )
    .option("--per-vcpu", "each vCPU's values under its event (the live screen: key v)")
    .option("--json", "JSON lines: one object per interval with every VM, event and vCPU")
    .option("--count <n>", "stop after n intervals (default: until q, Ctrl-C or SIGTERM)")
    .addHelpText(
      "after",
      "\nLive screen keys: b by guest, c clear filters, e explain the exit reason of the selected row, f filter, " +
        "g/p guest or pid, h help, o sort, q quit, r reset, s interval, v per vCPU, x child events, " +
        "up/down select.\n\nExamples:\n" +
        "  sudo vmtool stat                       every VM, live\n" +
        "  vmtool stat -1 -p 1234                 one VM, one second, as text\n" +
        "  sudo vmtool stat -dtcz -s 10 -L /var/log/vmtool_stat.csv   kvm_stat.service's logging\n" +
        "  vmtool stat --json --count 5 -s 1      five JSON lines",
    )
    .action(async (opts: StatOptions) => {
      const req = checkStatOptions(opts);
      const { runStat } = await import("../stat/run.js");
      await runStat(req);
    });
}
