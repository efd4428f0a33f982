// The action behind `vmtool stat`: resolves -p/-g, says which sources need root, then runs one of the outputs
// (-1, -l/-L, --json, or the live screen: live.ts) over a StatsCollector.
import { closeSync, existsSync, fstatSync, openSync, writeSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { StatsCollector } from "../../stats/collector.js";
import { DeltaTracker, type TrackedSnapshot } from "../../stats/deltas.js";
import { discoverVms, identify, scanProcess } from "../../stats/discover.js";
import { StatsHostError, StatsInputError } from "../../stats/errors.js";
import type { SourceName, SourceReport } from "../../stats/types.js";
import { writeStderr, writeStdout } from "../action.js";
import { StdoutError, UsageError } from "../errors.js";
import type { StatRequest } from "../commands/stat.js";
import { flatEvents, type ViewOptions } from "./view.js";
import { snapshotJson } from "./json.js";

/** A log file that stopped taking writes (disk full, I/O error): the log is incomplete (status 10). */
class LogFileError extends StdoutError {
  constructor(path: string, code: string) {
    super(code);
    this.message = `cannot write to ${path} (${code}): the log is incomplete`;
  }
}

const isRoot = () => process.getuid?.() === 0;

/** -p: the process must exist and hold a VM. */
function checkPid(pid: number): void {
  if (!existsSync(`/proc/${pid}`)) throw new StatsInputError(`-p ${pid}: no such process`);
  const r = scanProcess(pid);
  if (r === "gone") throw new StatsInputError(`-p ${pid}: no such process`);
  if (r === "denied")
    throw new StatsHostError(
      `-p ${pid}: cannot tell whether it runs a VM: its descriptors are readable by its owner and root only`,
    );
  if (r === null) throw new StatsInputError(`-p ${pid}: not a VM (the process holds no KVM VM descriptor)`);
}

/** -g: exactly one running VM has this name. */
export function pidOfGuest(name: string): number {
  const matches: number[] = [];
  const names: string[] = [];
  for (const p of discoverVms().processes) {
    const id = identify(p.pid);
    if (!id) continue;
    names.push(`${id.name}[${p.pid}]`);
    if (id.name === name) matches.push(p.pid);
  }
  if (matches.length === 0)
    throw new StatsInputError(
      `-g ${name}: no VM of that name` +
        (names.length ? ` (running: ${names.join(", ")})` : " (no VM is running)"),
    );
  if (matches.length > 1)
    throw new StatsInputError(
      `-g ${name}: ${matches.length} VMs have that name (pids ${matches.join(", ")}): use -p`,
    );
  return matches[0];
}

/** The one-line notice for a user who is not root, or the error when no asked-for source can work. */
function checkSources(reports: SourceReport[], asked: "auto" | SourceName[]): string | undefined {
  const wanted = asked === "auto" ? reports : reports.filter((r) => asked.includes(r.source));
  const unavailable = wanted.filter((r) => !r.available);
  if (asked !== "auto" && unavailable.length === wanted.length)
    throw new StatsHostError(unavailable.map((r) => `${r.source}: ${r.note}`).join("; "));
  if (isRoot()) return undefined;
  const needRoot = wanted.filter((r) => r.needsRoot);
  if (needRoot.length === 0) return undefined;
  return (
    `not root: ${needRoot.map((r) => `${r.source} (${r.available ? "other users' VMs" : r.note})`).join(", ")} ` +
    `need root; showing what the rest give`
  );
}

export async function runStat(req: StatRequest): Promise<void> {
  let pid = req.pid;
  if (pid !== undefined) checkPid(pid);
  if (req.guest !== undefined) pid = pidOfGuest(req.guest);
  const filter = req.fields instanceof RegExp ? req.fields : undefined;
  const pids = pid === undefined ? undefined : new Set([pid]);
  const collector = new StatsCollector({
    sources: req.sources,
    pids,
    tracepointFilter: filter ? (name) => filter.test(name) : undefined,
  });
  try {
    // The screen needs a terminal; anything else (a pipe, a file) gets kvm_stat's log lines.
    if (req.mode === "live" && !process.stdout.isTTY) req = { ...req, mode: "log" };
    const notice = checkSources(collector.sourceReports(), req.sources);
    if (notice && req.mode !== "live") writeStderr(`vmtool: ${notice}\n`);
    if (req.fields === "help") {
      listEvents(collector);
      return;
    }
    const view: ViewOptions = { filter, children: true, perVcpu: req.perVcpu, sort: "rate", zeros: true };
    if (req.mode === "live") {
      const { runLive } = await import("./live.js");
      await runLive(collector, req, { pid, filter, notice });
      return;
    }
    const tracker = new DeltaTracker(req.includePast);
    const stop = stopSignal();
    try {
      if (req.mode === "once") await once(collector, tracker, pids, view, stop.promise);
      else if (req.mode === "json") await jsonLines(collector, tracker, req, pids, filter, stop);
      else await logLines(collector, tracker, req, pids, view, stop);
    } finally {
      stop.dispose();
    }
  } finally {
    collector.close();
  }
}

function listEvents(collector: StatsCollector): void {
  const names = new Set<string>();
  for (const v of collector.poll().vms) for (const s of v.stats) names.add(s.desc.name.split("(")[0]);
  for (const n of collector.tracepointNames()) names.add(n.split("(")[0]);
  writeStdout(
    [...names]
      .sort()
      .map((n) => `  ${n}\n`)
      .join(""),
  );
}

interface Stop {
  promise: Promise<void>;
  stopped: () => boolean;
  /** SIGHUP seen since the last call (reopen the log file). */
  hangup: () => boolean;
  dispose: () => void;
}

/** SIGINT and SIGTERM end the watch cleanly (status 0); SIGHUP asks a log file to be reopened. */
function stopSignal(): Stop {
  let stopped = false;
  let hup = false;
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  const onStop = () => {
    stopped = true;
    resolve();
  };
  const onHup = () => (hup = true);
  process.on("SIGINT", onStop);
  process.on("SIGTERM", onStop);
  process.on("SIGHUP", onHup);
  return {
    promise,
    stopped: () => stopped,
    hangup: () => {
      const h = hup;
      hup = false;
      return h;
    },
    dispose: () => {
      process.off("SIGINT", onStop);
      process.off("SIGTERM", onStop);
      process.off("SIGHUP", onHup);
    },
  };
}

const told = new Set<string>();

/** Each note once, each problem as it is first seen (the collector reports a problem once). */
function notes(t: TrackedSnapshot): void {
  for (const n of t.snapshot.notes) {
    if (told.has(n)) continue;
    told.add(n);
    writeStderr(`vmtool: note: ${n}\n`);
  }
  for (const p of t.snapshot.problems) writeStderr(`vmtool: warning: ${p.what}: ${p.reason}\n`);
}

/** -1: two looks one second apart; every event as `name total delta` (kvm_stat's batch format). */
async function once(
  collector: StatsCollector,
  tracker: DeltaTracker,
  pids: ReadonlySet<number> | undefined,
  view: ViewOptions,
  stopped: Promise<void>,
): Promise<void> {
  notes(tracker.update(collector.poll()));
  await Promise.race([sleep(1000), stopped]);
  const t = tracker.update(collector.poll());
  notes(t);
  const events = flatEvents(t, pids, view);
  const lines = [...events]
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
    .map(([name, e]) => `${name.padEnd(41)} ${column(e.total)}${column(e.delta)}\n`);
  writeStdout(lines.join(""));
  if (lines.length === 0) writeStderr(vmsNote(t));
}

function vmsNote(t: TrackedSnapshot): string {
  return t.vms.length === 0
    ? "vmtool: no VM found" + (isRoot() ? "\n" : " (other users' VMs need root)\n")
    : "vmtool: no event matches\n";
}

async function waitNext(next: number, stop: Stop): Promise<void> {
  await Promise.race([sleep(Math.max(0, next - Date.now())), stop.promise]);
}

/** kvm_stat's `%10d`, with a space before a wider number (nanoseconds) so that the columns stay apart. */
const column = (v: number) => {
  const s = String(Math.round(v));
  return s.length >= 10 ? ` ${s}` : s.padStart(10);
};
const pad2 = (n: number) => String(n).padStart(2, "0");
/** `YYYY-mm-dd HH:MM:SS`, local time (kvm_stat's log timestamp). */
export function timestamp(d = new Date()): string {
  return (
    `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ` +
    `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`
  );
}

/** -l / -L: a line of deltas per interval; names repeated every 20 lines (not in a CSV file). */
async function logLines(
  collector: StatsCollector,
  tracker: DeltaTracker,
  req: StatRequest,
  pids: ReadonlySet<number> | undefined,
  view: ViewOptions,
  stop: Stop,
): Promise<void> {
  const file = req.logFile;
  let fd = -1;
  const openLog = (path: string) => {
    try {
      fd = openSync(path, "a", 0o644);
    } catch (e) {
      throw new UsageError(
        `-L ${path}: cannot open for appending (${(e as NodeJS.ErrnoException).code ?? "error"})`,
      );
    }
  };
  const write = (text: string) => {
    if (fd < 0 || file === undefined) {
      writeStdout(text);
      return;
    }
    try {
      writeSync(fd, text);
    } catch (e) {
      throw new LogFileError(file, (e as NodeJS.ErrnoException).code ?? "EIO");
    }
  };
  const isEmptyFile = () => fd >= 0 && fstatSync(fd).size === 0;
  if (file) openLog(file);
  try {
    const first = tracker.update(collector.poll());
    notes(first);
    let keys = [...flatEvents(first, pids, view).keys()].sort();
    const banner = () => (req.csv ? `timestamp,${keys.join(",")}\n` : `${keys.join(" ")}\n`);
    let bannerDue = !req.csv || !file || isEmptyFile();
    let line = 0;
    let next = Date.now();
    for (let i = 0; req.count === undefined || i < req.count; i++) {
      next += req.delaySeconds * 1000;
      await waitNext(next, stop);
      if (stop.stopped()) break;
      if (file && stop.hangup()) {
        // Rotated: a new file gets its names again (a CSV one only if it is empty).
        closeSync(fd);
        openLog(file);
        line = 0;
        bannerDue = !req.csv || isEmptyFile();
      }
      const t = tracker.update(collector.poll());
      notes(t);
      const events = flatEvents(t, pids, view);
      if (keys.length === 0 && events.size > 0) {
        keys = [...events.keys()].sort(); // the first VM arrived: its events are the columns
        bannerDue = !req.csv || !file || isEmptyFile();
      } else if (!req.csv && [...events.keys()].some((k) => !keys.includes(k))) {
        keys = [...new Set([...keys, ...events.keys()])].sort(); // new events: new columns, new names line
        bannerDue = true;
      }
      if (req.skipZero && keys.every((k) => (events.get(k)?.delta ?? 0) === 0)) continue;
      if (keys.length === 0) continue;
      if (bannerDue || (!req.csv && line % 20 === 0 && line > 0)) {
        write(banner());
        bannerDue = false;
      }
      const values = keys.map((k) => {
        const e = events.get(k);
        if (!e) return 0;
        // Counters: what happened in the interval; gauges: their value.
        return Math.round(e.desc.type === "cumulative" || e.desc.type.endsWith("hist") ? e.delta : e.total);
      });
      write(
        req.csv
          ? `${timestamp()},${values.join(",")}\n`
          : `${timestamp()}${values.map((v) => ` ${String(v).padStart(9)}`).join("")}\n`,
      );
      line++;
    }
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}

async function jsonLines(
  collector: StatsCollector,
  tracker: DeltaTracker,
  req: StatRequest,
  pids: ReadonlySet<number> | undefined,
  filter: RegExp | undefined,
  stop: Stop,
): Promise<void> {
  tracker.update(collector.poll());
  let next = Date.now();
  for (let i = 0; req.count === undefined || i < req.count; i++) {
    next += req.delaySeconds * 1000;
    await waitNext(next, stop);
    if (stop.stopped()) break;
    const t = tracker.update(collector.poll());
    writeStdout(JSON.stringify(snapshotJson(t, { pids, filter, perVcpu: true })) + "\n");
  }
}
