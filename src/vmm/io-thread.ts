// Starting the I/O worker (io-worker.ts), and ending it safely before it got its start message. Kept free of
// the KVM bindings like vcpu-thread.ts. (Starting it as early as the first vCPU thread was measured and gained
// nothing on this machine: docs/run.md, "Start-up".)
import { Worker } from "node:worker_threads";
import {
  IO_CTL,
  StartSignal,
  ioCtlView,
  type IoWorkerData,
  type IoWorkerMessage,
  type IoWorkerStart,
} from "./io-protocol.js";
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
  /** Hand the worker its VM and devices (it waits for this, blocked, once its modules are loaded). */
  start(msg: IoWorkerStart): void;
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
  // stdout/stderr not piped: see vcpu-thread.ts.
  const worker = new Worker(threadScript("io-worker"), { workerData, stdout: true, stderr: true });
  const exited = new Promise<void>((resolve) => worker.once("exit", () => resolve()));
  const loaded = new Promise<void>((resolve) =>
    worker.on("message", (m: IoWorkerMessage) => {
      if (m.type === "loaded") resolve();
    }),
  );
  const ctl = ioCtlView(buffer);
  const signal = (v: number) => {
    Atomics.store(ctl, IO_CTL.START, v);
    Atomics.notify(ctl, IO_CTL.START);
  };
  const start = (msg: IoWorkerStart) => {
    worker.postMessage(msg);
    signal(StartSignal.POSTED);
  };
  // A cancelled worker ends itself once past its modules; terminated while koffi's native part initialises,
  // a worker would abort the whole process, so it is not terminated before that.
  const cancel = async () => {
    worker.ref(); // the process must not exit (terminating it) before it has ended: see vcpu-thread.ts
    signal(StartSignal.CANCELLED);
    await Promise.race([loaded, exited]);
    const timeout = new Promise<"timeout">((resolve) => setTimeout(() => resolve("timeout"), 2000).unref());
    if ((await Promise.race([exited, timeout])) === "timeout") await worker.terminate();
  };
  return { worker, buffer, options, exited, start, cancel };
}
