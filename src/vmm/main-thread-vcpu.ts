// A run's one vCPU on the main thread, with no worker: a second isolate's start-up (V8, Node's bootstrap,
// koffi, the thread's modules) is most of a short run's start-up, and under a software CPU most of a Linux
// boot's (docs/run.md, "Threads"). For a run with one vCPU that nothing may park (no VM-control client: a
// parked vCPU waits for the main thread) and COM1 on the vCPU's own bus (no virtio device, so no I/O worker to
// wait for): run.ts decides. The loop (vcpu-runner.ts) runs in slices between Node's event-loop turns; to the
// supervisor this looks like a vCPU thread whose messages come as a worker's would.
import { EventEmitter } from "node:events";
import type { Worker } from "node:worker_threads";
import { createControlBuffer } from "../vm/control-block.js";
import { runVcpu } from "./vcpu-runner.js";
import type { VcpuThread, VcpuThreadOptions } from "./vcpu-thread.js";
import type { VcpuStart, WorkerMessage } from "./worker-protocol.js";

export function mainThreadVcpu(opts: VcpuThreadOptions = {}): VcpuThread {
  const control = createControlBuffer();
  const events = new EventEmitter();
  let ended = () => {};
  const exited = new Promise<void>((resolve) => (ended = resolve));
  // What the supervisor and the run use of a Worker: its events, and ref/unref/terminate (no isolate here: the
  // loop ends when asked through the control block, as a worker's does).
  const worker = Object.assign(events, {
    ref() {},
    unref() {},
    terminate: () => exited.then(() => 0),
    postMessage() {},
  }) as unknown as Worker;
  // As a worker's messages arrive: after the current turn, never inside the loop's own call stack.
  const post = (msg: WorkerMessage) =>
    setImmediate(() => {
      events.emit("message", msg);
      if (msg.type === "done") {
        events.emit("exit", 0);
        ended();
      }
    });
  return {
    worker,
    control,
    onMainThread: true,
    exited,
    start(msg: VcpuStart) {
      setImmediate(() => {
        try {
          runVcpu(
            { control, trace: opts.trace ?? false, stats: opts.stats ?? false, hookModules: [] },
            msg,
            post,
            true,
          );
        } catch (e) {
          events.emit("error", e);
          events.emit("exit", 1);
          ended();
        }
      });
    },
    cancel: () => Promise.resolve(),
  };
}
