// A vCPU thread waiting for the I/O worker's reply to a forwarded access leaves its wait when it is asked to
// stop, however long the I/O worker stays busy (a Ctrl-C must not wait for a long disk request), and when the
// I/O worker is gone. The forwarder runs in a worker thread of its own against a request slot nobody serves.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Worker } from "node:worker_threads";
import { fileURLToPath } from "node:url";
import { createControlBuffer, CTL, REQ } from "../../src/vm/control-block.js";
import {
  IO_CTL,
  IoState,
  SLOT,
  SLOT_STATE,
  createIoBuffer,
  ioCtlView,
  slotView,
} from "../../src/vmm/io-protocol.js";
import * as libc from "../../src/kvm/libc.js";

const child = fileURLToPath(new URL("./forward-stop-child.js", import.meta.url));

function startWaiter(io: SharedArrayBuffer, ctl: SharedArrayBuffer, doorbell: number) {
  const w = new Worker(child, { workerData: { io, ctl, doorbell } });
  const result = new Promise<{ name: string; why: string }>((resolve, reject) => {
    w.once("message", resolve);
    w.once("error", reject);
  });
  return { w, result };
}

async function untilRequested(io: SharedArrayBuffer): Promise<void> {
  const slot = slotView(io, 0);
  while (Atomics.load(slot, SLOT.STATE) !== SLOT_STATE.REQUEST) await new Promise((r) => setTimeout(r, 5));
}

test("a stop request ends the wait for a reply that does not come", { timeout: 20_000 }, async () => {
  const io = createIoBuffer(1);
  Atomics.store(ioCtlView(io), IO_CTL.STATE, IoState.RUNNING); // a busy I/O worker: it never answers
  const ctl = createControlBuffer();
  const doorbell = libc.eventfd(0, libc.EFD_CLOEXEC | libc.EFD_NONBLOCK);
  try {
    const { w, result } = startWaiter(io, ctl, doorbell);
    await untilRequested(io);
    Atomics.or(new Int32Array(ctl), CTL.REQUEST, REQ.STOP);
    assert.deepEqual(await result, { name: "ForwardAbandoned", why: "stop-requested" });
    await w.terminate();
  } finally {
    libc.close(doorbell);
  }
});

test("an I/O worker that stopped ends the wait too", { timeout: 20_000 }, async () => {
  const io = createIoBuffer(1);
  Atomics.store(ioCtlView(io), IO_CTL.STATE, IoState.RUNNING);
  const ctl = createControlBuffer();
  const doorbell = libc.eventfd(0, libc.EFD_CLOEXEC | libc.EFD_NONBLOCK);
  try {
    const { w, result } = startWaiter(io, ctl, doorbell);
    await untilRequested(io);
    Atomics.store(ioCtlView(io), IO_CTL.STATE, IoState.STOPPED);
    Atomics.notify(slotView(io, 0), SLOT.STATE);
    assert.deepEqual(await result, { name: "ForwardAbandoned", why: "io-worker-gone" });
    await w.terminate();
  } finally {
    libc.close(doorbell);
  }
});
