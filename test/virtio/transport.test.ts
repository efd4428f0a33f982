// The virtio-mmio transport's registers and status state machine, driven as a spec-following driver would.
import { test } from "node:test";
import assert from "node:assert/strict";
import { VirtioMmioTransport } from "../../src/devices/virtio/mmio-transport.js";
import { VirtioRng } from "../../src/devices/virtio/rng.js";
import { VirtioBlk, type BlockBackend } from "../../src/devices/virtio/blk.js";
import { FEAT, IrqRecorder, MmioDriver, REG, S, TestRam } from "./driver.js";
import { readMmio, writeMmio } from "../helpers/mmio.js";

function memBackend(size: number, readOnly = false): BlockBackend & { data: Uint8Array; flushes: number } {
  const data = new Uint8Array(size);
  return {
    data,
    flushes: 0,
    size,
    readOnly,
    id: "mem-disk",
    read(o, into) {
      into.set(data.subarray(o, o + into.length));
    },
    write(o, d) {
      data.set(d, o);
    },
    flush() {
      this.flushes++;
    },
  };
}

function setup() {
  const ram = new TestRam(0x10000);
  const irq = new IrqRecorder();
  const traces: string[] = [];
  const t = new VirtioMmioTransport(new VirtioRng(() => {}), {
    memory: ram.mem,
    irq,
    trace: (l) => traces.push(l),
  });
  return { ram, irq, traces, t, drv: new MmioDriver(t) };
}

test("identification registers: magic, version 2, device and vendor id", () => {
  const { drv } = setup();
  assert.equal(drv.r(REG.MAGIC), 0x74726976);
  assert.equal(drv.r(REG.VERSION), 2);
  assert.equal(drv.r(REG.DEVICE_ID), 4);
  assert.equal(drv.r(REG.VENDOR_ID), 0x4c544d56);
});

test("device features are read in 32-bit pages; VERSION_1, INDIRECT_DESC and EVENT_IDX are offered", () => {
  const { drv } = setup();
  const f = drv.deviceFeatures();
  assert.equal(f, FEAT.VERSION_1 | FEAT.INDIRECT | FEAT.EVENT_IDX);
  drv.w(REG.DEVICE_FEATURES_SEL, 2);
  assert.equal(drv.r(REG.DEVICE_FEATURES), 0, "pages past the last read as zero");
});

test("FEATURES_OK is refused without VERSION_1 and with features the device did not offer", () => {
  const { drv, traces } = setup();
  assert.equal(drv.negotiate(FEAT.INDIRECT), false, "legacy driver (no VERSION_1) refused");
  assert.match(traces.join("\n"), /VERSION_1 not accepted/);
  drv.w(REG.STATUS, 0);
  drv.w(REG.STATUS, S.ACK | S.DRIVER);
  drv.writeDriverFeatures(FEAT.VERSION_1 | (1n << 5n));
  drv.w(REG.STATUS, S.ACK | S.DRIVER | S.FEATURES_OK);
  assert.equal(drv.r(REG.STATUS) & S.FEATURES_OK, 0);
  assert.match(traces.join("\n"), /not offered/);
  assert.equal(drv.negotiate(FEAT.VERSION_1 | FEAT.EVENT_IDX), true);
  assert.equal(drv.t.features, FEAT.VERSION_1 | FEAT.EVENT_IDX);
});

test("DriverFeatures written after FEATURES_OK is ignored", () => {
  const { drv } = setup();
  assert.ok(drv.negotiate(FEAT.VERSION_1));
  drv.writeDriverFeatures(FEAT.VERSION_1 | FEAT.INDIRECT);
  assert.equal(drv.t.features, FEAT.VERSION_1);
});

test("DRIVER_OK without FEATURES_OK is refused", () => {
  const { drv } = setup();
  drv.w(REG.STATUS, S.ACK | S.DRIVER | S.DRIVER_OK);
  assert.equal(drv.r(REG.STATUS), S.ACK | S.DRIVER);
});

test("status write of zero resets: status, features, queues, interrupt status", () => {
  const { drv, ram, irq } = setup();
  assert.ok(drv.negotiate(FEAT.VERSION_1));
  drv.setupQueue(ram, 0, 8, 0x1000, false);
  drv.driverOk();
  drv.t.markBroken("test");
  assert.ok(irq.level);
  drv.w(REG.STATUS, 0);
  assert.equal(drv.r(REG.STATUS), 0);
  assert.equal(drv.t.features, 0n);
  drv.w(REG.QUEUE_SEL, 0);
  assert.equal(drv.r(REG.QUEUE_READY), 0);
  assert.equal(drv.r(REG.INTERRUPT_STATUS), 0);
  assert.equal(irq.level, false);
  assert.equal(drv.t.brokenReason, undefined);
});

test("queue registers: QueueNumMax per queue, 0 for a queue that does not exist; ready reads back", () => {
  const { drv, ram } = setup();
  assert.ok(drv.negotiate(FEAT.VERSION_1));
  drv.w(REG.QUEUE_SEL, 0);
  assert.equal(drv.r(REG.QUEUE_NUM_MAX), 256);
  drv.w(REG.QUEUE_SEL, 1);
  assert.equal(drv.r(REG.QUEUE_NUM_MAX), 0);
  drv.w(REG.QUEUE_READY, 1); // no such queue: ignored
  assert.equal(drv.r(REG.QUEUE_READY), 0);
  const q = drv.setupQueue(ram, 0, 16, 0x2000, false);
  assert.equal(drv.r(REG.QUEUE_READY), 1);
  const sq = drv.t.queues[0];
  assert.deepEqual([sq.size, sq.descAddr, sq.driverAddr, sq.deviceAddr], [16, q.desc, q.avail, q.used]);
  // While ready, the driver must not change the queue: such writes are ignored.
  drv.w(REG.QUEUE_NUM, 4);
  drv.w(REG.QUEUE_DESC_LOW, 0x8000);
  assert.equal(sq.size, 16);
  assert.equal(sq.descAddr, q.desc);
  drv.w(REG.QUEUE_READY, 0);
  assert.equal(drv.r(REG.QUEUE_READY), 0);
});

test("64-bit queue addresses are assembled from the low and high registers", () => {
  const { drv } = setup();
  drv.w(REG.QUEUE_SEL, 0);
  drv.w(REG.QUEUE_DESC_LOW, 0x1234_5000);
  drv.w(REG.QUEUE_DESC_HIGH, 0x1);
  assert.equal(drv.t.queues[0].descAddr, 0x1_1234_5000);
  drv.w(REG.QUEUE_DESC_LOW, 0x10);
  assert.equal(drv.t.queues[0].descAddr, 0x1_0000_0010);
});

test("interrupt status and acknowledge drive the IRQ line level", () => {
  const { drv, ram, irq } = setup();
  assert.ok(drv.negotiate(FEAT.VERSION_1));
  const q = drv.setupQueue(ram, 0, 8, 0x1000, false);
  drv.driverOk();
  q.addChain([{ addr: 0x8000, len: 16, write: true }]);
  q.kick();
  assert.equal(drv.r(REG.INTERRUPT_STATUS), 1);
  assert.equal(irq.level, true);
  drv.w(REG.INTERRUPT_ACK, 2); // acking a bit that is not set changes nothing
  assert.equal(irq.level, true);
  drv.w(REG.INTERRUPT_ACK, 1);
  assert.equal(irq.level, false);
  assert.equal(drv.r(REG.INTERRUPT_STATUS), 0);
});

test("registers accept only aligned 32-bit accesses; others are ignored and traced", () => {
  const { t, traces } = setup();
  assert.equal(readMmio(t, REG.MAGIC, 2), 0n);
  assert.equal(readMmio(t, REG.MAGIC + 1, 4), 0n);
  writeMmio(t, REG.STATUS, 1, 1n);
  assert.equal(t.deviceStatus, 0);
  writeMmio(t, REG.MAGIC, 4, 5n); // read-only register
  assert.equal(readMmio(t, REG.MAGIC, 4), 0x74726976n);
  assert.ok(traces.length >= 4);
});

test("configuration space: blk capacity read with 1, 2, 4 and 8-byte accesses; past the end reads 0", () => {
  const ram = new TestRam(0x10000);
  const t = new VirtioMmioTransport(new VirtioBlk(memBackend(0x12345 * 512)), {
    memory: ram.mem,
    irq: new IrqRecorder(),
  });
  assert.equal(readMmio(t, REG.CONFIG, 8), 0x12345n);
  assert.equal(readMmio(t, REG.CONFIG, 4), 0x12345n);
  assert.equal(readMmio(t, REG.CONFIG + 4, 4), 0n);
  assert.equal(readMmio(t, REG.CONFIG, 2), 0x2345n);
  assert.equal(readMmio(t, REG.CONFIG + 2, 1), 0x01n);
  assert.equal(readMmio(t, REG.CONFIG + 20, 4), 512n, "blk_size");
  assert.equal(readMmio(t, REG.CONFIG + 0xf8, 4), 0n);
  writeMmio(t, REG.CONFIG, 4, 0n); // read-only capacity: ignored
  assert.equal(readMmio(t, REG.CONFIG, 8), 0x12345n);
});

test("DEVICE_NEEDS_RESET bumps ConfigGeneration and raises the configuration-change interrupt", () => {
  const { drv, ram, irq } = setup();
  assert.ok(drv.negotiate(FEAT.VERSION_1));
  drv.setupQueue(ram, 0, 8, 0x1000, false);
  drv.driverOk();
  const gen = drv.r(REG.CONFIG_GENERATION);
  drv.t.markBroken("because");
  assert.equal(drv.r(REG.STATUS) & S.NEEDS_RESET, S.NEEDS_RESET);
  assert.notEqual(drv.r(REG.CONFIG_GENERATION), gen);
  assert.equal(drv.r(REG.INTERRUPT_STATUS), 2);
  assert.ok(irq.level);
  // The driver cannot clear DEVICE_NEEDS_RESET by writing status; only a reset does.
  drv.w(REG.STATUS, S.ACK | S.DRIVER | S.FEATURES_OK | S.DRIVER_OK);
  assert.equal(drv.r(REG.STATUS) & S.NEEDS_RESET, S.NEEDS_RESET);
});
