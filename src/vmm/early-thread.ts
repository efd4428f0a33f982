// `vmtool run` starts its (first) vCPU thread before the command line is parsed: a new thread's start-up (a V8
// isolate, koffi, its script) is the longest part of a short run, and it then overlaps everything the main
// thread does (docs/run.md, "Start-up"). The thread's options (--trace, --stats) are guessed from the raw
// arguments; the run command takes the early thread only if the guess matches what commander parsed, else it
// ends it and starts a right one. Until taken, the thread is unref'd: a command that fails first (bad option,
// bad image) exits as if it had never been started.
import { spawnVcpuThread, type VcpuThread } from "./vcpu-thread.js";
import { startupMark } from "./startup-marks.js";

interface ThreadOptions {
  trace: boolean;
  stats: boolean;
}

interface Early {
  thread: VcpuThread;
  opts: ThreadOptions;
}
// Kept on the global object, not in a module variable: the installed command is two bundles (the tiny entry
// that starts the thread, and the CLI that takes it: scripts/bundle.mjs), each with its own copy of this module.
const KEY = Symbol.for("vmtool.earlyVcpuThread");
const slot = globalThis as { [KEY]?: Early };

/** Start the vCPU thread of `vmtool run ...` now (argv as in process.argv); nothing for --help. */
export function startEarlyVcpuThread(argv: readonly string[]): void {
  const args = argv.slice(2);
  if (slot[KEY] || args[0] !== "run" || args.includes("--help") || args.includes("-h")) return;
  if (mayRunOnMainThread(args)) return; // no worker at all, if run.ts agrees (main-thread-vcpu.ts)
  const opts = {
    trace: args.includes("--trace"),
    stats: args.includes("--stats") || args.includes("--json"),
  };
  const thread = spawnVcpuThread(opts);
  thread.worker.unref();
  slot[KEY] = { thread, opts };
  // A command that failed before taking it: end the thread through cancel() (which waits until it may be
  // terminated), not through the process's exit, which would terminate it at any point.
  process.once("beforeExit", () => {
    if (slot[KEY]?.thread === thread) {
      slot[KEY] = undefined;
      void thread.cancel();
    }
  });
  startupMark("vCPU thread spawned");
}

/** Options after which a run's vCPU needs its own thread: several vCPUs, a virtio device, a VM-control client. */
const THREAD_OPTIONS = new Set([
  "--cpus",
  "--rng",
  "--console",
  "--disk",
  "--introspect",
  "--gdb",
  "-s",
  "--gdb-wait",
]);

/**
 * Whether `vmtool run ARGS` may run its one vCPU on the main thread, as far as its raw arguments tell: no
 * option of THREAD_OPTIONS, or `--cpus 1`. run.ts decides for good once the options are parsed.
 */
function mayRunOnMainThread(args: readonly string[]): boolean {
  for (let i = 1; i < args.length; i++) {
    const [name, value] = args[i].split("=", 2);
    if (!THREAD_OPTIONS.has(name)) continue;
    if (name === "--cpus" && (value ?? args[i + 1]) === "1") continue;
    return false;
  }
  return true;
}

/** Whether a vCPU thread was started early (and not taken yet). */
export function hasEarlyVcpuThread(): boolean {
  return slot[KEY] !== undefined;
}

/** The vCPU thread for these options: the early one when it was started with them, else a new one. */
export function takeVcpuThread(opts: ThreadOptions): VcpuThread {
  const e = slot[KEY];
  slot[KEY] = undefined;
  if (e && e.opts.trace === opts.trace && e.opts.stats === opts.stats) {
    e.thread.worker.ref();
    return e.thread;
  }
  if (e) void e.thread.cancel();
  return spawnVcpuThread(opts);
}
