// Split virtqueues: direct and indirect chains, used ring updates, and notification suppression in both
// directions (avail.flags / used.flags, and EVENT_IDX's used_event / avail_event), through the transport and
// a device (virtio-rng with a counting entropy source, so the bytes written are known); and reading chains
// directly: the lazy DescriptorChain, ChainReader and ChainWriter.
import { test } from "node:test";
import assert from "node:assert/strict";
import { VirtioMmioTransport } from "../../src/devices/virtio/mmio-transport.js";
import { VirtioRng } from "../../src/devices/virtio/rng.js";
import { SplitQueue, needEvent } from "../../src/devices/virtio/virtqueue.js";
import { GUEST_RAM_WINDOW } from "../../src/memory/guest-memory.js";
import { D, FEAT, IrqRecorder, MmioDriver, REG, TestRam } from "./driver.js";

function countingEntropy() {
  let n = 0;
  return (buf: Uint8Array) => {
    for (let i = 0; i < buf.length; i++) buf[i] = n++ & 0xff;
  };
}

function rngSetup(features: bigint, size = 8) {
  const ram = new TestRam(0x20000);
  const irq = new IrqRecorder();
  const t = new VirtioMmioTransport(new VirtioRng(countingEntropy()), { memory: ram.mem, irq });
  const drv = new MmioDriver(t);
  assert.ok(drv.negotiate(features));
  const q = drv.setupQueue(ram, 0, size, 0x1000, (features & FEAT.EVENT_IDX) !== 0n);
  drv.driverOk();
  return { ram, irq, t, drv, q };
}

test("direct chain: several writable buffers are filled in order and the used length is the total", () => {
  const { ram, q, irq } = rngSetup(FEAT.VERSION_1);
  const head = q.addChain([
    { addr: 0x8000, len: 3, write: true },
    { addr: 0x9000, len: 5, write: true },
  ]);
  assert.ok(q.kick());
  assert.deepEqual(q.takeUsed(), [{ id: head, len: 8 }]);
  assert.deepEqual([...ram.mem.read(0x8000, 3)], [0, 1, 2]);
  assert.deepEqual([...ram.mem.read(0x9000, 5)], [3, 4, 5, 6, 7]);
  assert.equal(ram.mem.readU8(0x8003), 0, "nothing written past the buffer");
  assert.ok(irq.level);
});

test("indirect chain: the table's buffers are used when VIRTIO_F_INDIRECT_DESC is negotiated", () => {
  const { ram, q } = rngSetup(FEAT.VERSION_1 | FEAT.INDIRECT);
  const head = q.addChain(
    [
      { addr: 0x8000, len: 2, write: true },
      { addr: 0x8100, len: 2, write: true },
      { addr: 0x8200, len: 2, write: true },
    ],
    0x6000,
  );
  q.kick();
  assert.deepEqual(q.takeUsed(), [{ id: head, len: 6 }]);
  assert.deepEqual([...ram.mem.read(0x8200, 2)], [4, 5]);
});

test("many requests wrap around the rings (avail and used indexes past the queue size and past 0xffff)", () => {
  const { q } = rngSetup(FEAT.VERSION_1, 4);
  for (let i = 0; i < 70000; i++) {
    const head = q.addChain([{ addr: 0x8000, len: 1, write: true }]);
    q.kick();
    const used = q.takeUsed();
    assert.equal(used.length, 1);
    assert.equal(used[0].id, head);
  }
});

test("several chains made available before one notify are all completed, in order", () => {
  const { q } = rngSetup(FEAT.VERSION_1);
  const heads = [0, 1, 2, 3].map((i) => q.addChain([{ addr: 0x8000 + 0x100 * i, len: 4, write: true }]));
  q.kick();
  assert.deepEqual(
    q.takeUsed().map((u) => u.id),
    heads,
  );
});

test("avail.flags NO_INTERRUPT suppresses the used-buffer interrupt", () => {
  const { q, irq, drv } = rngSetup(FEAT.VERSION_1);
  q.setNoInterrupt(true);
  q.addChain([{ addr: 0x8000, len: 4, write: true }]);
  q.kick();
  assert.equal(q.takeUsed().length, 1, "the request was still completed");
  assert.equal(irq.level, false);
  assert.equal(drv.r(REG.INTERRUPT_STATUS), 0);
  q.setNoInterrupt(false);
  q.addChain([{ addr: 0x8000, len: 4, write: true }]);
  q.kick();
  assert.equal(irq.level, true);
});

test("EVENT_IDX, device to driver: an interrupt only when used.idx passes used_event", () => {
  const { q, irq, drv } = rngSetup(FEAT.VERSION_1 | FEAT.EVENT_IDX);
  q.setUsedEvent(2); // interrupt when the 3rd element (index 2) is used
  for (let i = 0; i < 2; i++) {
    q.addChain([{ addr: 0x8000, len: 1, write: true }]);
    q.forceKick();
    assert.equal(irq.level, false, `no interrupt after element ${i}`);
  }
  q.addChain([{ addr: 0x8000, len: 1, write: true }]);
  q.forceKick();
  assert.equal(irq.level, true);
  assert.equal(q.takeUsed().length, 3);
  drv.ack();
  // used_event left behind (2) is not passed again until the index wraps: no interrupt
  q.addChain([{ addr: 0x8000, len: 1, write: true }]);
  q.forceKick();
  assert.equal(irq.level, false);
});

test("EVENT_IDX, driver to device: the device publishes avail_event so the driver notifies once", () => {
  const { q } = rngSetup(FEAT.VERSION_1 | FEAT.EVENT_IDX);
  q.addChain([{ addr: 0x8000, len: 1, write: true }]);
  assert.ok(q.kick(), "first request notifies");
  const availEvent = q.mem.readU16(q.used + 4 + 8 * q.size);
  assert.equal(availEvent, 1, "device waits for avail index 1");
  // Two more requests in one batch: one notification.
  q.addChain([{ addr: 0x8000, len: 1, write: true }]);
  q.addChain([{ addr: 0x8000, len: 1, write: true }]);
  assert.ok(q.kick());
  assert.equal(q.takeUsed().length, 3);
  assert.equal(q.notifications, 2);
});

test("used.flags NO_NOTIFY is clear when the device waits for notifications (no EVENT_IDX)", () => {
  const { q } = rngSetup(FEAT.VERSION_1);
  q.addChain([{ addr: 0x8000, len: 1, write: true }]);
  q.kick();
  assert.equal(q.mem.readU16(q.used) & 1, 0);
});

test("needEvent follows the spec's vring_need_event, including 16-bit wrap-around", () => {
  assert.equal(needEvent(0, 1, 0), true);
  assert.equal(needEvent(1, 1, 0), false);
  assert.equal(needEvent(5, 10, 0), true);
  assert.equal(needEvent(10, 10, 0), false);
  assert.equal(needEvent(0xffff, 0, 0xfffe), true);
  assert.equal(needEvent(0xfffe, 1, 0xffff), false);
});

test("the used element is written before used.idx moves (the element is in place once the index is seen)", () => {
  const ram = new TestRam(0x10000);
  const q = new SplitQueue(0, 8);
  q.descAddr = 0x1000;
  q.driverAddr = 0x2000;
  q.deviceAddr = 0x3000;
  q.activate(ram.mem);
  // Watch the used ring through a proxy GuestMemory-like log of writes.
  const order: string[] = [];
  const mem = ram.mem;
  const logged = Object.create(mem) as typeof mem;
  logged.writeU32 = (gpa: number, v: number) => {
    order.push(`elem@${(gpa - 0x3004).toString(16)}`);
    if (mem.readU16(0x3002) !== 0) order.push("idx-already-moved");
    mem.writeU32(gpa, v);
  };
  q.pushUsed(logged, 5, 42);
  assert.deepEqual(order, ["elem@0", "elem@4"]);
  assert.equal(mem.readU16(0x3002), 1);
  assert.equal(mem.readU32(0x3004), 5);
  assert.equal(mem.readU32(0x3008), 42);
});

// ---- reading chains: the lazy DescriptorChain, and ChainReader / ChainWriter over what SplitQueue.take keeps

/** A queue of 8 at 0x1000 over `ram`, with `descs` as descriptors 0.. and one chain (head 0) available. */
function queueWith(ram: TestRam, descs: [addr: number, len: number, flags: number, next: number][]) {
  const q = new SplitQueue(0, 8);
  q.descAddr = 0x1000;
  q.driverAddr = 0x2000;
  q.deviceAddr = 0x3000;
  q.indirect = true;
  q.activate(ram.mem);
  descs.forEach(([addr, len, flags, next], i) => {
    const d = 0x1000 + 16 * i;
    ram.mem.writeU64(d, BigInt(addr));
    ram.mem.writeU32(d + 8, len);
    ram.mem.writeU16(d + 12, flags);
    ram.mem.writeU16(d + 14, next);
  });
  ram.mem.writeU16(0x2004, 0);
  ram.mem.writeU16(0x2002, 1);
  return q;
}

test("DescriptorChain yields one checked descriptor per next(), and fails only when it reaches a bad one", () => {
  const ram = new TestRam(0x10000);
  const q = queueWith(ram, [
    [0x8000, 4, D.NEXT, 1],
    [0x9000, 8, D.NEXT | D.WRITE, 2],
    [0xf0000000, 16, D.WRITE, 0], // outside RAM
  ]);
  const chain = q.pop(ram.mem);
  assert.ok(chain);
  assert.equal(chain.head, 0);
  assert.deepEqual({ ...chain.next() }, { gpa: 0x8000, len: 4, writable: false });
  assert.deepEqual({ ...chain.next() }, { gpa: 0x9000, len: 8, writable: true });
  assert.throws(() => chain.next(), /buffer of descriptor 2 0xf0000000\+0x10 is outside guest RAM/);
});

test("DescriptorChain follows an indirect head into its table and ends after the last descriptor", () => {
  const ram = new TestRam(0x10000);
  const q = queueWith(ram, [[0x6000, 32, D.INDIRECT, 0]]);
  ram.mem.writeU64(0x6000, 0x8000n);
  ram.mem.writeU32(0x6008, 2);
  ram.mem.writeU16(0x600c, D.NEXT);
  ram.mem.writeU16(0x600e, 1);
  ram.mem.writeU64(0x6010, 0x9000n);
  ram.mem.writeU32(0x6018, 3);
  ram.mem.writeU16(0x601c, D.WRITE);
  const chain = q.pop(ram.mem);
  assert.ok(chain);
  const seen = [];
  for (let d = chain.next(); d; d = chain.next()) seen.push({ ...d });
  assert.deepEqual(seen, [
    { gpa: 0x8000, len: 2, writable: false },
    { gpa: 0x9000, len: 3, writable: true },
  ]);
  assert.equal(chain.next(), undefined);
});

test("ChainReader reads, skips and streams across segments; ChainWriter writes and splits (blk's status byte)", () => {
  const ram = new TestRam(0x10000);
  ram.mem.write(0x8000, Uint8Array.of(1, 2, 3));
  ram.mem.write(0x8100, Uint8Array.of(4, 5, 6, 7));
  const q = queueWith(ram, [
    [0x8000, 3, D.NEXT, 1],
    [0x8100, 4, D.NEXT, 2],
    [0x9000, 0, D.NEXT | D.WRITE, 3], // empty buffers count for nothing
    [0x9000, 5, D.NEXT | D.WRITE, 4],
    [0x9100, 2, D.WRITE, 0],
  ]);
  const chain = q.take(ram.mem);
  assert.ok(chain);
  const { reader, writer } = chain;
  assert.equal(reader.length, 7);
  const two = new Uint8Array(2);
  assert.equal(reader.read(two), 2);
  assert.deepEqual([...two], [1, 2]);
  assert.equal(reader.skip(2), 2);
  const streamed: number[][] = [];
  assert.equal(
    reader.stream(10, (v) => streamed.push([...v])),
    3,
  );
  assert.deepEqual(streamed, [[5, 6, 7]]);
  assert.equal(reader.remaining, 0);

  assert.equal(writer.length, 7);
  const status = writer.splitAt(writer.length - 1);
  assert.equal(writer.length, 6);
  assert.equal(status.length, 1);
  assert.equal(
    writer.write(Uint8Array.of(9, 9, 9, 9, 9, 9, 9, 9)),
    6,
    "the data part stops before the status",
  );
  assert.equal(status.write(Uint8Array.of(0x42)), 1);
  assert.deepEqual([...ram.mem.read(0x9000, 5)], [9, 9, 9, 9, 9]);
  assert.deepEqual([...ram.mem.read(0x9100, 2)], [9, 0x42]);
});

test("views handed to a device never cross a GUEST_RAM_WINDOW boundary", () => {
  const ram = new TestRam(3 * GUEST_RAM_WINDOW);
  const q = queueWith(ram, [[GUEST_RAM_WINDOW - 0x100, GUEST_RAM_WINDOW + 0x200, 0, 0]]);
  const chain = q.take(ram.mem);
  assert.ok(chain);
  const lengths: number[] = [];
  chain.reader.stream(Infinity, (v, at) => lengths.push(v.length, at));
  assert.deepEqual(lengths, [0x100, 0, GUEST_RAM_WINDOW, 0x100, 0x100, GUEST_RAM_WINDOW + 0x100]);
});
