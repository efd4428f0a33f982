// The main thread's parts of a run, each on its own: the supervisor's rule for how a run ends (threads are real
// worker threads that report an end, as vCPU threads do), and the input pump's escape keys (a real shared ring,
// as the console device's thread reads it).
import { test } from "node:test";
import assert from "node:assert/strict";
import { Worker } from "node:worker_threads";
import { RunSupervisor } from "../../src/vmm/supervisor.js";
import type { VcpuThread } from "../../src/vmm/vcpu-thread.js";
import type { VcpuControl } from "../../src/vm/vcpu-control.js";
import { createIoBuffer } from "../../src/vmm/io-protocol.js";
import type { RunEnd } from "../../src/vmm/run-end.js";
import { InputPump, ESCAPE_HELP } from "../../src/vmm/input-pump.js";
import { SharedByteQueue } from "../../src/devices/byte-queue.js";

/** A thread that reports `end` after `delayMs`, as a vCPU thread's "done" message. */
function reporter(end: RunEnd, delayMs: number): VcpuThread {
  const worker = new Worker(
    `const { parentPort } = require("node:worker_threads");
     setTimeout(() => parentPort.postMessage({ type: "done", end: ${JSON.stringify(end)} }), ${delayMs});`,
    { eval: true },
  );
  const exited = new Promise<void>((resolve) => worker.once("exit", () => resolve()));
  return { worker, control: new SharedArrayBuffer(64), exited, start() {}, cancel: () => Promise.resolve() };
}

/** Controls that only record stop requests. */
function controls(n: number) {
  const stops: number[] = [];
  const list = Array.from({ length: n }, (_, i) => ({ stop: () => stops.push(i) }) as unknown as VcpuControl);
  return { list, stops };
}

test("supervisor: the first vCPU to end on its own decides; the ones it then stopped do not", async () => {
  const threads = [
    reporter({ kind: "stopped", reason: "stopped" }, 300),
    reporter({ kind: "fault", reason: "triple fault" }, 10),
    reporter({ kind: "stopped", reason: "stopped" }, 200),
  ];
  const c = controls(3);
  const s = new RunSupervisor(threads, c.list, createIoBuffer(3));
  const outcome = await s.outcome;
  assert.deepEqual(outcome.end, { kind: "fault", reason: "triple fault" });
  assert.equal(outcome.cpu, 1);
  assert.deepEqual(c.stops.sort(), [0, 1, 2], "every vCPU was asked to stop once the fault came");
  await Promise.all(threads.map((t) => t.exited));
});

test("supervisor: a decision from outside (a signal, a halt) wins over how the vCPUs then stop", async () => {
  const threads = [reporter({ kind: "stopped", reason: "stopped" }, 50)];
  const c = controls(1);
  const s = new RunSupervisor(threads, c.list, createIoBuffer(1));
  s.end({ kind: "signal", signal: "SIGTERM", reason: "interrupted by SIGTERM" });
  s.end({ kind: "halted", reason: "later, ignored" });
  const outcome = await s.outcome;
  assert.deepEqual(outcome.end, { kind: "signal", signal: "SIGTERM", reason: "interrupted by SIGTERM" });
  assert.equal(outcome.cpu, undefined);
  await threads[0].exited;
});

test("supervisor: a vCPU thread that dies without a word ends the run as an internal error", async () => {
  const worker = new Worker(`process.exit(3)`, { eval: true });
  const exited = new Promise<void>((resolve) => worker.once("exit", () => resolve()));
  const t: VcpuThread = {
    worker,
    control: new SharedArrayBuffer(64),
    exited,
    start() {},
    cancel: () => exited,
  };
  const s = new RunSupervisor([t], controls(1).list, createIoBuffer(1));
  const outcome = await s.outcome;
  assert.equal(outcome.end.kind, "internal");
  assert.match(outcome.end.reason, /ended early \(code 3\)/);
});

test("input pump, raw mode: Ctrl-A x ends, Ctrl-A Ctrl-A sends one Ctrl-A, Ctrl-A h helps, other keys pass", () => {
  const queue = SharedByteQueue.create(1024);
  let notified = 0;
  let escapes = 0;
  const said: string[] = [];
  const pump = new InputPump({
    queue,
    notify: () => notified++,
    raw: true,
    onEscape: () => escapes++,
    say: (l) => said.push(l),
  });
  // The terminal part is the raw-terminal test's (tmux); here only the byte filter, as raw mode runs it.
  const filter = (pump as unknown as { filterEscapes(b: Buffer): Buffer }).filterEscapes.bind(pump);
  assert.deepEqual(
    [...filter(Buffer.from("ab\x03c"))],
    [0x61, 0x62, 0x03, 0x63],
    "Ctrl-C is a byte for the guest",
  );
  assert.deepEqual([...filter(Buffer.from("\x01\x01z"))], [0x01, 0x7a]);
  assert.deepEqual(
    [...filter(Buffer.from("\x01"))],
    [],
    "a Ctrl-A at the end of a chunk waits for the next key",
  );
  assert.deepEqual([...filter(Buffer.from("h!"))], [0x21]);
  assert.deepEqual(said, [ESCAPE_HELP]);
  assert.deepEqual(
    [...filter(Buffer.from("\x01qok"))],
    [0x6f, 0x6b],
    "an unknown key after Ctrl-A is dropped",
  );
  assert.equal(escapes, 0);
  assert.deepEqual([...filter(Buffer.from("go\x01xlost"))], [0x67, 0x6f], "nothing after the escape is sent");
  assert.equal(escapes, 1);
  assert.equal(notified, 0, "the filter itself hands nothing to the guest");
  assert.equal(queue.shift(), -1);
});
