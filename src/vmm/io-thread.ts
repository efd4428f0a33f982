// Starting the I/O worker (io-worker.ts), and ending it safely before it got its start message. Kept free of
// the KVM bindings like vcpu-thread.ts. (Starting it as early as the first vCPU thread was measured and gained
// nothing on this machine: docs/run.md, "Start-up".)
import { Worker } from "node:worker_threads";
import type { IoWorkerData, IoWorkerMessage } from "./io-protocol.js";
import { threadScript } from "./vcpu-thread.js";

export interface IoThreadOptions {
  /** Number of vCPUs (one request slot each). */
  cpus: number;
  /** Standard input goes to the virtio-console instead of COM1. */
  stdinToConsole: boolean;
  trace: boolean;
}

export interface IoThread {
  worker: Worker;
  buffer: SharedArrayBuffer;
  options: IoThreadOptions;
  /** Resolves when the worker has ended. */
  exited: Promise<void>;
  /** End a worker that never got its start message, once that is safe (see vcpu-thread.ts, cancel). */
  cancel(): Promise<void>;
}

/**
 * `buffer`: the request slots (createIoBuffer), made before the worker since the vCPUs get it even while the
 * I/O worker is dormant; `stdinQueue`: the SharedByteQueue buffer of the first vCPU thread (standard input).
 */
export function spawnIoThread(
  options: IoThreadOptions,
  buffer: SharedArrayBuffer,
  stdinQueue: SharedArrayBuffer,
): IoThread {
  const workerData: IoWorkerData = {
    io: buffer,
    vcpus: options.cpus,
    stdinQueue,
    stdinToConsole: options.stdinToConsole,
    trace: options.trace,
  };
  const worker = new Worker(threadScript("io-worker"), { workerData, stdout: false });
  const exited = new Promise<void>((resolve) => worker.once("exit", () => resolve()));
  const loaded = new Promise<void>((resolve) =>
    worker.on("message", (m: IoWorkerMessage) => {
      if (m.type === "loaded") resolve();
    }),
  );
  // Terminated while koffi's native part initialises, a worker aborts the whole process: wait until loaded.
  const cancel = async () => {
    await Promise.race([loaded, exited]);
    await worker.terminate();
  };
  return { worker, buffer, options, exited, cancel };
}
