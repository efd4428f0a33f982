// Start-up timeline for `vmtool run` (docs/run.md, "Start-up"): with VMTOOL_STARTUP_MARKS=1 in the
// environment, each mark prints "startup: <ms since the process started> <thread> <what>" on stderr, from
// the main thread and from the vCPU thread alike. Without the variable a mark costs one boolean test.
// Kept free of any import but node:fs so that it can be the very first module loaded.
import { writeSync } from "node:fs";
import { isMainThread } from "node:worker_threads";

const enabled = process.env.VMTOOL_STARTUP_MARKS === "1";
// A worker's performance.timeOrigin is its own start: the main thread leaves the process's in the environment
// (which workers copy), so that every thread counts from the same instant.
if (enabled && isMainThread) process.env.VMTOOL_STARTUP_ORIGIN = String(performance.timeOrigin);
const origin = enabled ? Number(process.env.VMTOOL_STARTUP_ORIGIN ?? performance.timeOrigin) : 0;

/** Print one point of the start-up timeline (only with VMTOOL_STARTUP_MARKS=1). */
export function startupMark(what: string): void {
  if (!enabled) return;
  const ms = performance.timeOrigin + performance.now() - origin;
  writeSync(2, `startup: ${ms.toFixed(1).padStart(6)} ${isMainThread ? "main" : "vcpu"} ${what}\n`);
}

// The installed command is two bundles, each with a copy of this module (scripts/bundle.mjs): the first one
// loaded says when the process reached vmtool's code, the second when the CLI was loaded.
const FIRST = Symbol.for("vmtool.startupMarks");
if (enabled && isMainThread) {
  const g = globalThis as { [FIRST]?: true };
  if (!g[FIRST]) {
    g[FIRST] = true;
    startupMark("first module evaluated (node's own start-up and the static imports are behind)");
    process.on("exit", () => startupMark("process exit"));
  } else startupMark("command line interface loaded");
}
