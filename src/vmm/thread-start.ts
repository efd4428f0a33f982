// How the main thread hands a vCPU thread or the I/O worker its start message, and how one that never got it
// ends. Both are spawned before the VM exists (their start-up overlaps the main thread's work) and then wait:
// the main thread posts the message and flips a START word in the thread's shared control words; the thread,
// once its modules are loaded, waits on that word and takes the message synchronously (no top-level await:
// the bundled thread scripts are CommonJS, scripts/bundle.mjs). Kept free of the KVM bindings, like
// vcpu-thread.ts.
import { receiveMessageOnPort, type MessagePort, type Worker } from "node:worker_threads";
import { StartSignal } from "../vm/control-block.js";

/** How long a cancelled thread may take to end itself before it is terminated. */
const CANCEL_TIMEOUT_MS = 2000;

export interface ThreadStart<T> {
  /** Resolves when the worker has ended. */
  exited: Promise<void>;
  /** Hand the worker its start message (it waits for this, blocked, once its modules are loaded). */
  start(msg: T): void;
  /** End a worker that never got its start message (bad input found after spawning it). */
  cancel(): Promise<void>;
}

/** The main thread's side, for `worker`, whose START word is `words[index]`; it says "loaded" when ready. */
export function threadStart<T>(worker: Worker, words: Int32Array, index: number): ThreadStart<T> {
  const exited = new Promise<void>((resolve) => worker.once("exit", () => resolve()));
  const loaded = new Promise<void>((resolve) =>
    worker.on("message", (m: { type?: string }) => {
      if (m.type === "loaded") resolve();
    }),
  );
  const signal = (v: number) => {
    Atomics.store(words, index, v);
    Atomics.notify(words, index);
  };
  return {
    exited,
    start(msg: T) {
      worker.postMessage(msg);
      signal(StartSignal.POSTED); // after the post: the worker then finds the message in its port
    },
    // A cancelled worker ends itself once past its modules. It is not terminated before that: a worker
    // terminated while koffi's native part initialises aborts the whole process (a fatal error in koffi), and
    // so does the process's exit, which terminates its workers: the worker is ref'd so that the process waits
    // (an early thread is unref'd until taken, and a command that failed has nothing else keeping it alive).
    async cancel() {
      worker.ref();
      signal(StartSignal.CANCELLED);
      await Promise.race([loaded, exited]);
      const timeout = new Promise<"timeout">((resolve) =>
        setTimeout(() => resolve("timeout"), CANCEL_TIMEOUT_MS).unref(),
      );
      if ((await Promise.race([exited, timeout])) === "timeout") await worker.terminate();
    },
  };
}

/** The thread's side: block until the start message is posted; a cancelled thread ends here. */
export function receiveStart(port: MessagePort, words: Int32Array, index: number): unknown {
  for (;;) {
    const m = receiveMessageOnPort(port);
    if (m) return m.message;
    const signal = Atomics.load(words, index);
    if (signal === StartSignal.CANCELLED) process.exit(0); // in a worker: ends this thread only
    Atomics.wait(words, index, signal, 1000);
  }
}
