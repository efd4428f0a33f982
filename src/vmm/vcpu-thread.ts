// Starting a vCPU's worker thread. Kept free of the KVM bindings (no koffi): `vmtool run` calls it as soon as
// the options are checked, so that the worker's own start-up (a new V8 isolate, koffi, its modules: the
// largest part of vmtool's start-up time) runs on another core while the main thread loads the image and
// creates the VM. The worker then waits for its VcpuStart message.
import { Worker } from "node:worker_threads";
import { CTL, createControlBuffer } from "../vm/control-block.js";
import { eagerCachesPreferred } from "./code-cache.js";
import { threadStart, type ThreadStart } from "./thread-start.js";
import type { VcpuStart, VcpuWorkerData } from "./worker-protocol.js";

// Defined only in the bundled command (scripts/bundle.mjs): the folder of the threads' bundled scripts,
// relative to this module's compiled file. A new thread then loads one file instead of ~30 modules
// (docs/run.md, "Start-up").
declare const VMTOOL_THREAD_BUNDLES: string | undefined;

/**
 * How to start a thread ("vcpu-worker" or "io-worker"): under the bundled command, the bundles' thread entry
 * with the thread's name as its argument (thread-entry.ts: it loads the thread's bundle with its code cache,
 * the eager one when this thread prefers those),
 * else the compiled module next to this one. Exit-hook modules are loaded from the compiled modules and share
 * their classes (errors are told apart with instanceof), so a thread with hooks runs the compiled modules too.
 */
export function threadScript(
  name: "vcpu-worker" | "io-worker",
  hookModules: readonly string[] = [],
): { script: URL; argv: string[] } {
  if (typeof VMTOOL_THREAD_BUNDLES === "string" && hookModules.length === 0)
    return {
      script: new URL(`${VMTOOL_THREAD_BUNDLES}/thread.cjs`, import.meta.url),
      argv: eagerCachesPreferred() ? [name, "eager"] : [name],
    };
  return { script: new URL(`./${name}.js`, import.meta.url), argv: [] };
}

export interface VcpuThreadOptions {
  trace?: boolean;
  stats?: boolean;
  /** Exit-hook modules for the vCPU thread (see worker-protocol.ts). */
  hookModules?: string[];
}

export interface VcpuThread extends ThreadStart<VcpuStart> {
  worker: Worker;
  control: SharedArrayBuffer;
  /** The loop runs on the main thread (main-thread-vcpu.ts): it checks for a halt itself. */
  onMainThread?: true;
}

export function spawnVcpuThread(opts: VcpuThreadOptions = {}): VcpuThread {
  const control = createControlBuffer();
  const workerData: VcpuWorkerData = {
    control,
    trace: opts.trace ?? false,
    stats: opts.stats ?? false,
    hookModules: opts.hookModules ?? [],
  };
  const { script, argv } = threadScript("vcpu-worker", workerData.hookModules);
  const worker = new Worker(script, {
    argv,
    workerData,
    // Not piped to the process's own streams: the threads write with writeSync (output.ts), and setting up
    // that piping touches process.stdout/stderr in the main thread, ~2 ms of `new Worker` here.
    stdout: true,
    stderr: true,
  });
  return { worker, control, ...threadStart<VcpuStart>(worker, new Int32Array(control), CTL.START) };
}
