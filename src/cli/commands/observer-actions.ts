// The actions behind `vmtool vcpus` and `vmtool watch` (loaded lazily by vcpus.ts and watch.ts): poll the
// observer's source, print snapshots, events and the live screen.
import { setTimeout as sleep } from "node:timers/promises";
import { printJson, writeStderr, writeStdout, writeStdoutQuietly } from "../action.js";
import { openSource, parseSource } from "../../observer/debugfs.js";
import { DebugfsUnavailableError } from "../../observer/errors.js";
import { Tracker, type ObserverEvent } from "../../observer/tracker.js";
import {
  eventJson,
  eventLine,
  problemSummary,
  renderScreen,
  renderSnapshot,
  snapshotJson,
  vcpuLabels,
} from "../../observer/render.js";
import type { Poll, Problem, Source } from "../../observer/types.js";

const out = writeStdout;
const err = writeStderr;

/** One poll, with the tree vanishing (module unloaded) read as "nothing there" and permissions as DebugfsUnavailableError. */
function pollOnce(src: Source): Poll {
  try {
    return src.poll();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "EACCES" || code === "EPERM")
      throw new DebugfsUnavailableError(
        `permission denied reading ${src.root}: debugfs is readable by root only`,
      );
    if (code === "ENOENT")
      return {
        source: src.kind,
        root: src.root,
        takenAt: Date.now(),
        cpus: [],
        sightings: [],
        problems: [{ path: src.root, reason: "the tree is gone (module unloaded?)" }],
      };
    throw e;
  }
}

function warnProblems(problems: Problem[]): void {
  if (problems.length === 0) return;
  const first = problems[0];
  err(`vmtool: warning: ${problemSummary(problems.length)} (first: ${first.path}: ${first.reason})\n`);
}

export interface VcpusRun {
  source: string;
  debugfs?: string;
  mount?: boolean;
  json?: boolean;
  sysregs?: boolean;
  sampleMs: number;
}

export async function runVcpus(opts: VcpusRun): Promise<void> {
  const source = parseSource(opts.source);
  const src = openSource({
    source,
    debugfs: opts.debugfs,
    mount: opts.mount,
    globals: true,
    info: true,
    sysregs: opts.sysregs,
  });
  let poll = pollOnce(src);
  if (src.kind === "kvm" && opts.sampleMs > 0) {
    // KVM says nothing about "last seen": look twice, and a vCPU whose CPU time advanced was seen.
    await sleep(opts.sampleMs);
    poll = pollOnce(src);
  }
  if (opts.json) printJson(snapshotJson(poll));
  else out(renderSnapshot(poll));
  warnProblems(poll.problems);
}

export interface WatchRun {
  source: string;
  debugfs?: string;
  mount?: boolean;
  json?: boolean;
  intervalSeconds: number;
  staleSeconds: number;
  count?: number;
}

export async function runWatch(opts: WatchRun): Promise<void> {
  const source = parseSource(opts.source);
  const src = openSource({ source, debugfs: opts.debugfs, mount: opts.mount, globals: false, info: false });
  const tracker = new Tracker(opts.staleSeconds);
  const live = !opts.json && process.stdout.isTTY;
  const startedAt = Date.now();
  let problemNote: string | undefined;
  const labels = new Map<string, string>();

  let stop: () => void = () => {};
  const stopped = new Promise<void>((resolve) => (stop = resolve));
  let stopping = false;
  const onSignal = () => {
    stopping = true;
    stop();
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  const screen = live ? new Screen(() => onSignal()) : null;
  const draw = () =>
    screen?.draw(
      renderScreen(tracker, {
        columns: process.stdout.columns || 80,
        rows: process.stdout.rows || 24,
        intervalSeconds: opts.intervalSeconds,
        staleSeconds: opts.staleSeconds,
        newSeconds: Math.max(3, 3 * opts.intervalSeconds),
        color: !process.env.NO_COLOR,
        problemNote,
      }),
    );
  if (screen) process.stdout.on("resize", draw);

  try {
    let next = Date.now();
    for (let i = 0; !stopping && (opts.count === undefined || i < opts.count); i++) {
      const poll = pollOnce(src);
      const { events, newProblems } = tracker.update(poll);
      if (screen) {
        if (newProblems.length > 0)
          problemNote = `${problemSummary(tracker.totals.problems)} (latest: ${newProblems[0].path}: ${newProblems[0].reason})`;
        draw();
      } else {
        // Labels outlive their VM: a vanished vCPU is still named by the process it belonged to.
        const label = vcpuLabels(poll);
        for (const s of poll.sightings) labels.set(s.vcpu, label(s.vcpu));
        emit(events, (id) => labels.get(id) ?? id, opts.json === true);
        for (const e of events) if (e.event === "vanished") labels.delete(e.vcpu);
        if (newProblems.length > 0) warnProblems(newProblems);
      }
      if (opts.count !== undefined && i + 1 >= opts.count) break;
      next += opts.intervalSeconds * 1000;
      // Fixed-rate polling: a slow poll shortens the next wait instead of drifting.
      const wait = Math.max(0, next - Date.now());
      await Promise.race([sleep(wait), stopped]);
    }
  } finally {
    screen?.close();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    if (screen) process.stdout.off("resize", draw);
  }
  const t = tracker.totals;
  const secs = (Date.now() - startedAt) / 1000;
  if (opts.json) {
    out(
      JSON.stringify({
        event: "summary",
        polls: t.polls,
        seconds: Number(secs.toFixed(3)),
        vcpus: t.vcpusEver.size,
        hostCpus: t.cpusEver.size,
        events: t.events,
        skippedFiles: t.problems,
      }) + "\n",
    );
  } else {
    const e = t.events;
    out(
      `watched ${src.kind === "vmtool" ? "the vmtool module" : "KVM"} for ${secs.toFixed(1)} s (${t.polls} polls): ` +
        `${plural(t.vcpusEver.size, "vCPU")} seen on ${plural(t.cpusEver.size, "host CPU")}; events: ${e.appeared} appeared, ` +
        `${e.moved} moved, ${e.stale} went stale, ${e.active} active again, ${e.vanished} vanished` +
        (t.problems ? `; ${problemSummary(t.problems)}` : "") +
        "\n",
    );
  }
}

const plural = (n: number, what: string) => `${n} ${what}${n === 1 ? "" : "s"}`;

function emit(events: ObserverEvent[], label: (id: string) => string, json: boolean): void {
  if (events.length === 0) return;
  // One write per poll: thousands of events (a first poll of a big host) should not be thousands of syscalls.
  const text = events
    .map((e) => (json ? JSON.stringify(eventJson(e, label)) : eventLine(e, label)))
    .join("\n");
  out(text + "\n");
}

/** The terminal while `watch` runs: the alternate screen, no cursor, keys q / Ctrl-C to quit. */
class Screen {
  private readonly raw: boolean;
  constructor(onQuit: () => void) {
    out("\x1b[?1049h\x1b[?25l");
    this.raw = process.stdin.isTTY;
    if (this.raw) {
      process.stdin.setRawMode(true);
      process.stdin.resume();
      process.stdin.on("data", (d: Buffer) => {
        // In raw mode Ctrl-C arrives as a byte, not as SIGINT.
        if (d.includes(0x03) || d.includes(0x71) || d.includes(0x51)) onQuit();
      });
    }
  }
  draw(lines: string[]): void {
    out("\x1b[H" + lines.map((l) => l + "\x1b[K").join("\n") + "\x1b[J");
  }
  close(): void {
    if (this.raw) {
      process.stdin.setRawMode(false);
      process.stdin.pause();
    }
    // Quietly: this runs in a finally, after standard output may have failed already.
    writeStdoutQuietly("\x1b[?25h\x1b[?1049l");
  }
}
