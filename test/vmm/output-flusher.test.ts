// The main thread's OutputFlusher against a vCPU thread's Output: a partial line is flushed about FLUSH_AFTER_MS
// after it started, output that ends in a newline needs nothing, and no output means no request at all. The
// output comes from a real worker thread (as from a vCPU thread) and from an Output on a shared control word.
import { test } from "node:test";
import assert from "node:assert/strict";
import { openSync, closeSync } from "node:fs";
import { Worker } from "node:worker_threads";
import { FLUSH_AFTER_MS, OutputFlusher } from "../../src/vmm/output-flusher.js";
import { Output } from "../../src/vmm/output.js";
import { CTL, REQ } from "../../src/vm/vcpu-control.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A vCPU's control words and its requests; a FLUSH clears the pending word, as the vCPU thread's flush does. */
function control() {
  const ctl = new Int32Array(new SharedArrayBuffer(64 * 4));
  const requests: { bits: number; at: number }[] = [];
  return {
    ctl,
    requests,
    request(bits: number) {
      requests.push({ bits, at: performance.now() });
      if (bits & REQ.FLUSH) Atomics.store(ctl, CTL.OUTPUT_PENDING, 0);
    },
  };
}

test("a partial line from another thread is flushed once, FLUSH_AFTER_MS or more after it began", async () => {
  const c = control();
  const flusher = new OutputFlusher([c]);
  flusher.start();
  try {
    await sleep(4 * FLUSH_AFTER_MS);
    assert.equal(c.requests.length, 0, "no output, no request");
    const began = performance.now();
    const w = new Worker(
      `const { workerData } = require("node:worker_threads");
       Atomics.store(workerData, ${CTL.OUTPUT_PENDING}, 1);
       Atomics.notify(workerData, ${CTL.OUTPUT_PENDING});`,
      { eval: true, workerData: c.ctl },
    );
    await new Promise((r) => w.once("exit", r));
    for (let i = 0; i < 100 && c.requests.length === 0; i++) await sleep(10);
    assert.equal(c.requests.length, 1, "one flush request");
    assert.equal(c.requests[0].bits, REQ.FLUSH);
    assert.ok(c.requests[0].at - began >= FLUSH_AFTER_MS - 1, `${c.requests[0].at - began} ms`);
    await sleep(4 * FLUSH_AFTER_MS);
    assert.equal(c.requests.length, 1, "flushed: nothing more to ask");
  } finally {
    flusher.stop();
  }
});

test("Output: a partial line is flushed through the flusher, a whole line needs no request; none after stop", async () => {
  const devNull = openSync("/dev/null", "w");
  const c = control();
  const out = new Output({ outFd: devNull, pending: { words: c.ctl, index: CTL.OUTPUT_PENDING } });
  const flusher = new OutputFlusher([c]);
  flusher.start();
  try {
    out.write(new TextEncoder().encode("a whole line\n"));
    await sleep(4 * FLUSH_AFTER_MS);
    assert.equal(c.requests.length, 0, "a whole line is written at once");
    out.write(new TextEncoder().encode("prompt> "));
    assert.equal(Atomics.load(c.ctl, CTL.OUTPUT_PENDING), 1);
    for (let i = 0; i < 100 && c.requests.length === 0; i++) await sleep(10);
    assert.deepEqual(
      c.requests.map((r) => r.bits),
      [REQ.FLUSH],
    );
    // Held pending (a vCPU that has not flushed yet): asked again, every FLUSH_AFTER_MS.
    Atomics.store(c.ctl, CTL.OUTPUT_PENDING, 1);
    Atomics.notify(c.ctl, CTL.OUTPUT_PENDING);
    c.request = (bits) => c.requests.push({ bits, at: performance.now() });
    await sleep(6 * FLUSH_AFTER_MS);
    const asked = c.requests.length;
    assert.ok(asked >= 3, `${asked} requests`);
    flusher.stop();
    await sleep(4 * FLUSH_AFTER_MS);
    assert.equal(c.requests.length, asked, "none after stop");
  } finally {
    flusher.stop();
    closeSync(devNull);
  }
});
