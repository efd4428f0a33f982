// The vCPU side of test/vmm/forward-stop.test.ts: one forwarded port read, and how it ended.
import { parentPort, workerData } from "node:worker_threads";
import { ForwardAbandoned, IoForwarder } from "../../src/vmm/io-forward.js";

const { io, ctl, doorbell } = workerData as {
  io: SharedArrayBuffer;
  ctl: SharedArrayBuffer;
  doorbell: number;
};
const forwarder = new IoForwarder(io, 0, doorbell, new Int32Array(ctl));
try {
  forwarder.pioDevice("com1", 0x3f8).pioRead(5, 1);
  parentPort!.postMessage({ name: "answered", why: "" });
} catch (e) {
  parentPort!.postMessage({
    name: (e as Error).name,
    why: e instanceof ForwardAbandoned ? e.why : String(e),
  });
}
