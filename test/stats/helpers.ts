// What the `vmtool stat` tests share: a `vmtool run` in a child process (its stdout and stderr collected, its
// end awaited), `vmtool stat` run to its end, and waiting for a condition without a fixed sleep.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { CLI } from "../helpers/paths.js";

export interface RunningVm {
  child: ChildProcess;
  pid: number;
  stdout: () => string;
  stderr: () => string;
  /** Resolves with the exit status (or 128 + signal) once the process has ended. */
  ended: Promise<number>;
  kill: (signal?: NodeJS.Signals) => void;
}

/** `vmtool run ARGS` in a child process; killed when the test ends. */
export function startVm(
  t: { after(fn: () => void | Promise<void>): void },
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
): RunningVm {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ["pipe", "pipe", "pipe"], env });
  let out = "";
  let err = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString("latin1")));
  child.stderr.on("data", (d: Buffer) => (err += d.toString("latin1")));
  const ended = new Promise<number>((resolve) =>
    child.on("exit", (code, signal) =>
      resolve(
        code ?? 128 + (signal ? (({ SIGKILL: 9, SIGTERM: 15 } as Record<string, number>)[signal] ?? 0) : 0),
      ),
    ),
  );
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGCONT");
      child.kill("SIGKILL");
      await ended;
    }
  });
  return {
    child,
    pid: child.pid!,
    stdout: () => out,
    stderr: () => err,
    ended,
    kill: (s = "SIGTERM") => child.kill(s),
  };
}

/** Wait until `check` returns a value other than undefined (polling every 50 ms), at most `ms`. */
export async function waitFor<T>(what: string, check: () => T | undefined, ms = 60_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** `vmtool stat ARGS` to its end (it must end by itself: -1, --count, or an error). */
export function stat(args: string[], opts: { env?: NodeJS.ProcessEnv; timeout?: number } = {}) {
  const r = spawnSync(process.execPath, [CLI, "stat", ...args], {
    encoding: "utf8",
    env: opts.env ?? process.env,
    timeout: opts.timeout ?? 60_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

export interface JsonEvent {
  name: string;
  source: string;
  type: string;
  unit: string;
  scale: number;
  total: number;
  delta: number;
  buckets?: number[];
  vcpus?: Record<string, { total: number; delta: number; buckets?: number[] }>;
}
export interface JsonVm {
  pid: number;
  name: string;
  vmm: string;
  ended: boolean;
  vcpus: number[];
  threads: Record<string, number>;
  sources: Record<string, { used: boolean; note?: string }>;
  events: JsonEvent[];
}
export interface JsonLine {
  time: string;
  seconds: number;
  vms: JsonVm[];
  summary: Record<string, { total: number; delta: number }>;
  notes: string[];
  sources: { source: string; available: boolean; note: string }[];
}

/** The JSON lines of a `stat --json` run. */
export function jsonLines(stdout: string): JsonLine[] {
  return stdout
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l) as JsonLine);
}

/** One event of one VM (source and name), or undefined. */
export function event(vm: JsonVm | undefined, source: string, name: string): JsonEvent | undefined {
  return vm?.events.find((e) => e.source === source && e.name === name);
}

export const isRoot = process.getuid?.() === 0;
