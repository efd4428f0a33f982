// Starting the I/O worker (io-worker.ts), and ending it safely before it got its start message. Kept free of
// the KVM bindings like vcpu-thread.ts. (Starting it as early as the first vCPU thread was measured and gained
// nothing on this machine: docs/run.md, "Start-up".)
import { Worker } from "node:worker_threads";
import { IO_CTL, ioCtlView, type IoWorkerData, type IoWorkerStart } from "./io-protocol.js";
import { threadScript } from "./vcpu-thread.js";
import { threadStart, type ThreadStart } from "./thread-start.js";

export interface IoThreadOptions {
  /** Number of vCPUs (one request slot each). */
  cpus: number;
  /** Standard input goes to the virtio-console instead of COM1. */
  stdinToConsole: boolean;
  trace: boolean;
}

export interface IoThread extends ThreadStart<IoWorkerStart> {
  worker: Worker;
  buffer: SharedArrayBuffer;
  options: IoThreadOptions;
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
  // stdout/stderr not piped: see vcpu-thread.ts.
  const { script, argv } = threadScript("io-worker");
  const worker = new Worker(script, { argv, workerData, stdout: true, stderr: true });
  return { worker, buffer, options, ...threadStart<IoWorkerStart>(worker, ioCtlView(buffer), IO_CTL.START) };
}
