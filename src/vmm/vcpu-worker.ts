// The vCPU thread: one worker per vCPU (vcpu-runner.ts has its loop). It is started before the VM exists, so
// that its start-up (a new isolate, koffi, these modules) overlaps the main thread's VM creation; the vCPU and
// RAM arrive in the first message (thread-start.ts).
import { parentPort, workerData } from "node:worker_threads";
import { CTL } from "../vm/vcpu-control.js";
import { receiveStart } from "./thread-start.js";
import { runVcpu } from "./vcpu-runner.js";
import { startupMark } from "./startup-marks.js";
import type { VcpuStart, VcpuWorkerData, WorkerMessage } from "./worker-protocol.js";

const data = workerData as VcpuWorkerData;
const port = parentPort ?? notAWorker();
const ctl = new Int32Array(data.control);
startupMark("vCPU thread's modules loaded, waiting for its vCPU");
port.postMessage({ type: "loaded" } satisfies WorkerMessage);
const start = receiveStart(port, ctl, CTL.START) as VcpuStart;
startupMark("vCPU received");
runVcpu(data, start, (msg) => port.postMessage(msg), false);

function notAWorker(): never {
  throw new Error("vcpu-worker.js runs as a worker thread of vmtool run");
}
