// The host-side input queues: bounded ring in one thread, and the shared ring between two real threads.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Worker } from "node:worker_threads";
import { ByteQueue, SharedByteQueue } from "../../src/devices/byte-queue.js";

test("ByteQueue keeps order across wrap-around and refuses what does not fit", () => {
  const q = new ByteQueue(5);
  assert.equal(q.push(Uint8Array.of(1, 2, 3)), 3);
  assert.equal(q.shift(), 1);
  assert.equal(q.shift(), 2);
  assert.equal(q.push(Uint8Array.of(4, 5, 6, 7, 8)), 4, "room for 4 only");
  assert.equal(q.length, 5);
  const got = [];
  for (let b = q.shift(); b >= 0; b = q.shift()) got.push(b);
  assert.deepEqual(got, [3, 4, 5, 6, 7]);
  assert.equal(q.shift(), -1);
  q.push(Uint8Array.of(9));
  q.clear();
  assert.equal(q.length, 0);
  assert.equal(new ByteQueue(0).push(Uint8Array.of(1)), 0, "capacity 0 takes nothing");
});

test("SharedByteQueue rounds its size to a power of two and wraps correctly", () => {
  const q = SharedByteQueue.create(5);
  assert.equal(q.capacity, 8);
  const other = new SharedByteQueue(q.buffer); // the other thread's view of the same ring
  const got: number[] = [];
  for (let round = 0; round < 10; round++) {
    assert.equal(q.push(Uint8Array.of(round, round + 100, round + 200)), 3);
    for (let i = 0; i < 3; i++) got.push(other.shift());
  }
  assert.equal(other.shift(), -1);
  assert.deepEqual(got.slice(-3), [9, 109, 209]);
  assert.equal(q.push(new Uint8Array(20)), 8, "full at capacity");
  other.clear();
  assert.equal(q.length, 0);
  assert.throws(() => new SharedByteQueue(new SharedArrayBuffer(8 + 6)), RangeError);
});

test("SharedByteQueue carries 1 MB between two threads in order with nothing lost", async () => {
  const q = SharedByteQueue.create(256);
  const total = 1 << 20;
  // The consumer thread drains the ring and checks the sequence; a module worker imports the compiled queue.
  const src = `
    import { workerData, parentPort } from "node:worker_threads";
    const { SharedByteQueue } = await import(workerData.module);
    const q = new SharedByteQueue(workerData.buffer);
    let n = 0, bad = -1;
    while (n < workerData.total) {
      const b = q.shift();
      if (b < 0) continue;
      if (b !== (n * 7) % 251 && bad < 0) bad = n;
      n++;
    }
    parentPort.postMessage({ n, bad });`;
  const worker = new Worker(new URL(`data:text/javascript,${encodeURIComponent(src)}`), {
    workerData: {
      buffer: q.buffer,
      total,
      module: new URL("../../src/devices/byte-queue.js", import.meta.url).href,
    },
  });
  const done = new Promise<{ n: number; bad: number }>((resolve, reject) => {
    worker.once("message", resolve);
    worker.once("error", reject);
  });
  const chunk = new Uint8Array(100);
  let sent = 0;
  while (sent < total) {
    const n = Math.min(chunk.length, total - sent);
    for (let i = 0; i < n; i++) chunk[i] = ((sent + i) * 7) % 251;
    sent += q.push(chunk.subarray(0, n));
    if (q.length === q.capacity) await new Promise((r) => setImmediate(r));
  }
  const result = await done;
  await worker.terminate();
  assert.deepEqual(result, { n: total, bad: -1 });
});
