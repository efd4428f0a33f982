// A hostile driver: each malformed queue the spec forbids. For every one the device must not throw, must
// not write outside guest RAM (guard bytes around it) nor anywhere in RAM (nothing completed: RAM equal to
// the snapshot taken just before the notify), must set DEVICE_NEEDS_RESET with a configuration-change
// interrupt, and must give a reason for --trace. After a reset the device works again.
import { test } from "node:test";
import assert from "node:assert/strict";
import { VirtioMmioTransport } from "../../src/devices/virtio/mmio-transport.js";
import { VirtioRng } from "../../src/devices/virtio/rng.js";
import { VirtioBlk } from "../../src/devices/virtio/blk.js";
import type { VirtioDevice } from "../../src/devices/virtio/device.js";
import { D, FEAT, IrqRecorder, MmioDriver, REG, S, TestRam, type DriverQueue } from "./driver.js";

const RAM = 0x40000;
const ALL = FEAT.VERSION_1 | FEAT.INDIRECT | FEAT.EVENT_IDX;

function bring(opts: { features?: bigint; ram?: number; size?: number; device?: VirtioDevice } = {}) {
  const ram = new TestRam(opts.ram ?? RAM);
  const irq = new IrqRecorder();
  const traces: string[] = [];
  const t = new VirtioMmioTransport(opts.device ?? new VirtioRng(() => {}), {
    memory: ram.mem,
    irq,
    trace: (l) => traces.push(l),
  });
  const drv = new MmioDriver(t);
  const features = opts.features ?? ALL;
  assert.ok(drv.negotiate(features));
  const q = drv.setupQueue(ram, 0, opts.size ?? 16, 0x1000, (features & FEAT.EVENT_IDX) !== 0n);
  drv.driverOk();
  return { ram, irq, traces, t, drv, q };
}

type Env = ReturnType<typeof bring>;

/** RAM equal to `before`, except used.flags (the device's own NO_NOTIFY hint, not part of any request). */
function ramUnchanged(env: Env, before: Uint8Array): boolean {
  const now = env.ram.bytes.slice();
  now.set(before.subarray(env.q.used, env.q.used + 2), env.q.used);
  return Buffer.compare(Buffer.from(before), Buffer.from(now)) === 0;
}

/** Notify, then check: no exception, RAM untouched, guards intact, NEEDS_RESET + config interrupt + reason. */
function attack(env: Env, reason: RegExp): void {
  const before = env.ram.bytes.slice();
  assert.doesNotThrow(() => env.q.forceKick());
  assert.ok(env.ram.guardsIntact(), "guard bytes around RAM unchanged");
  assert.ok(ramUnchanged(env, before), "guest RAM unchanged");
  assert.equal(env.drv.r(REG.STATUS) & S.NEEDS_RESET, S.NEEDS_RESET, "DEVICE_NEEDS_RESET set");
  assert.equal(env.drv.r(REG.INTERRUPT_STATUS) & 2, 2, "configuration-change interrupt");
  assert.ok(env.irq.level);
  assert.match(env.t.brokenReason ?? "", reason);
  assert.ok(
    env.traces.some((l) => /DEVICE_NEEDS_RESET/.test(l) && reason.test(l)),
    "reason traced",
  );
  // Further notifies do nothing until the driver resets.
  env.q.forceKick();
  assert.ok(ramUnchanged(env, before));
}

/** After a reset and a fresh set-up the same transport serves requests again. */
function recovers(env: Env): void {
  env.ram.bytes.fill(0);
  assert.ok(env.drv.negotiate(ALL));
  const q = env.drv.setupQueue(env.ram, 0, 8, 0x1000, true);
  env.drv.driverOk();
  q.addChain([{ addr: 0x8000, len: 4, write: true }]);
  q.kick();
  assert.equal(q.takeUsed().length, 1);
  assert.equal(env.drv.r(REG.STATUS) & S.NEEDS_RESET, 0);
}

function desc(
  q: DriverQueue,
  i: number,
  addr: number | bigint,
  len: number,
  flags: number,
  next = 0,
  table?: number,
) {
  const d = (table ?? q.desc) + 16 * i;
  q.mem.writeU64(d, BigInt(addr));
  q.mem.writeU32(d + 8, len);
  q.mem.writeU16(d + 12, flags);
  q.mem.writeU16(d + 14, next);
}

test("descriptor buffer outside guest RAM", () => {
  const env = bring();
  desc(env.q, 0, RAM + 0x1000, 16, D.WRITE);
  env.q.offer(0);
  attack(env, /buffer of descriptor 0 .* is outside guest RAM/);
  recovers(env);
});

test("descriptor buffer that straddles the end of RAM", () => {
  const env = bring();
  desc(env.q, 0, RAM - 8, 16, D.WRITE);
  env.q.offer(0);
  attack(env, /outside guest RAM/);
});

test("descriptor address + length that wraps around 2^64", () => {
  const env = bring();
  desc(env.q, 0, 0xffff_ffff_ffff_f000n, 0x2000, D.WRITE);
  env.q.offer(0);
  attack(env, /0xfffffffffffff000\+0x2000 is outside guest RAM/);
});

test("descriptor chain that loops", () => {
  const env = bring();
  desc(env.q, 0, 0x8000, 4, D.WRITE | D.NEXT, 1);
  desc(env.q, 1, 0x8100, 4, D.WRITE | D.NEXT, 0);
  env.q.offer(0);
  attack(env, /a loop/);
  recovers(env);
});

test("next index past the queue size", () => {
  const env = bring();
  desc(env.q, 0, 0x8000, 4, D.WRITE | D.NEXT, 999);
  env.q.offer(0);
  attack(env, /links to descriptor 999, past the queue size 16/);
});

test("available ring entry past the queue size", () => {
  const env = bring();
  env.q.offer(16);
  attack(env, /names descriptor 16, past the queue size 16/);
});

test("available index moved further than the queue size", () => {
  const env = bring();
  desc(env.q, 0, 0x8000, 4, D.WRITE);
  env.q.setAvailIdx(17);
  attack(env, /moved 17 entries ahead, more than the queue size 16/);
  recovers(env);
});

test("chain longer than 4 GiB in total (lengths that overflow 32 bits)", () => {
  // 256 descriptors of 16 MiB + 1 over the same buffer: inside RAM each, more than 2^32 together.
  const env = bring({ ram: 0x1100000, size: 256 });
  for (let i = 0; i < 256; i++) desc(env.q, i, 0x10000, 0x100_0001, D.WRITE | (i < 255 ? D.NEXT : 0), i + 1);
  env.q.offer(0);
  attack(env, /more than 4 GiB/);
});

test("device-readable buffer after a device-writable one", () => {
  const env = bring();
  desc(env.q, 0, 0x8000, 4, D.WRITE | D.NEXT, 1);
  desc(env.q, 1, 0x8100, 4, D.NEXT * 0);
  env.q.offer(0);
  attack(env, /readable buffer after a writable one/);
});

test("indirect descriptor without VIRTIO_F_INDIRECT_DESC", () => {
  const env = bring({ features: FEAT.VERSION_1 });
  desc(env.q, 0, 0x6000, 16, D.INDIRECT);
  desc(env.q, 0, 0x8000, 4, D.WRITE, 0, 0x6000);
  env.q.offer(0);
  attack(env, /INDIRECT_DESC was not negotiated/);
});

test("indirect table whose length is not a multiple of 16, or zero", () => {
  for (const len of [24, 0]) {
    const env = bring();
    desc(env.q, 0, 0x6000, len, D.INDIRECT);
    env.q.offer(0);
    attack(env, /not a non-zero multiple of 16/);
  }
});

test("indirect table outside RAM", () => {
  const env = bring();
  desc(env.q, 0, RAM - 16, 32, D.INDIRECT);
  env.q.offer(0);
  attack(env, /indirect table of descriptor 0 .* outside guest RAM/);
});

test("indirect table that is too large", () => {
  const env = bring();
  desc(env.q, 0, 0x10000, 16 * 1025, D.INDIRECT);
  env.q.offer(0);
  attack(env, /1025 descriptors, more than 1024/);
});

test("indirect descriptor inside an indirect table", () => {
  const env = bring();
  desc(env.q, 0, 0x6000, 32, D.INDIRECT);
  desc(env.q, 0, 0x7000, 16, D.INDIRECT, 0, 0x6000);
  env.q.offer(0);
  attack(env, /indirect descriptor inside an indirect table/);
});

test("loop inside an indirect table, and a next past its end", () => {
  let env = bring();
  desc(env.q, 0, 0x6000, 32, D.INDIRECT);
  desc(env.q, 0, 0x8000, 4, D.WRITE | D.NEXT, 1, 0x6000);
  desc(env.q, 1, 0x8000, 4, D.WRITE | D.NEXT, 0, 0x6000);
  env.q.offer(0);
  attack(env, /longer than its indirect table \(2\): a loop/);
  env = bring();
  desc(env.q, 0, 0x6000, 32, D.INDIRECT);
  desc(env.q, 0, 0x8000, 4, D.WRITE | D.NEXT, 2, 0x6000);
  env.q.offer(0);
  attack(env, /past the indirect table size 2/);
});

test("indirect descriptor with NEXT, or not at the head of its chain", () => {
  let env = bring();
  desc(env.q, 0, 0x6000, 16, D.INDIRECT | D.NEXT, 1);
  env.q.offer(0);
  attack(env, /also has the NEXT flag/);
  env = bring();
  desc(env.q, 0, 0x8000, 4, D.WRITE | D.NEXT, 1);
  desc(env.q, 1, 0x6000, 16, D.INDIRECT);
  env.q.offer(0);
  attack(env, /not the head of its chain/);
});

test("blk request whose data buffer is outside RAM: nothing is read from the disk or written", () => {
  let reads = 0;
  const device = new VirtioBlk({
    size: 8 * 512,
    readOnly: false,
    id: "x",
    read: () => {
      reads++;
    },
    write: () => assert.fail("no write"),
    flush: () => {},
  });
  const env = bring({ device });
  desc(env.q, 0, 0x8000, 16, D.NEXT, 1);
  desc(env.q, 1, RAM - 256, 512, D.WRITE | D.NEXT, 2);
  desc(env.q, 2, 0x9000, 1, D.WRITE);
  env.q.offer(0);
  attack(env, /buffer of descriptor 1/);
  assert.equal(reads, 0);
});

// ---- queue set-up the driver gets wrong: caught when it sets QueueReady

function badSetup(reg: Partial<{ size: number; desc: number; avail: number; used: number }>, reason: RegExp) {
  const ram = new TestRam(RAM);
  const irq = new IrqRecorder();
  const t = new VirtioMmioTransport(new VirtioRng(() => {}), { memory: ram.mem, irq });
  const drv = new MmioDriver(t);
  assert.ok(drv.negotiate(ALL));
  drv.w(REG.QUEUE_SEL, 0);
  drv.w(REG.QUEUE_NUM, reg.size ?? 16);
  drv.w(REG.QUEUE_DESC_LOW, reg.desc ?? 0x1000);
  drv.w(REG.QUEUE_DRIVER_LOW, reg.avail ?? 0x2000);
  drv.w(REG.QUEUE_DEVICE_LOW, reg.used ?? 0x3000);
  const before = ram.bytes.slice();
  assert.doesNotThrow(() => drv.w(REG.QUEUE_READY, 1));
  assert.equal(drv.r(REG.STATUS) & S.NEEDS_RESET, S.NEEDS_RESET);
  assert.match(t.brokenReason ?? "", reason);
  assert.equal(drv.r(REG.QUEUE_READY), 0, "a refused queue never became ready");
  drv.driverOk();
  drv.w(REG.QUEUE_NOTIFY, 0);
  assert.ok(Buffer.compare(Buffer.from(before), Buffer.from(ram.bytes)) === 0);
  assert.ok(ram.guardsIntact());
}

test("queue size that is not a power of two, zero, or above QueueNumMax", () => {
  badSetup({ size: 12 }, /size 12 is not a power of 2/);
  badSetup({ size: 0 }, /size 0 is not a power of 2/);
  badSetup({ size: 512 }, /size 512 is not a power of 2 in 1..256/);
  badSetup({ size: 3 }, /size 3 is not a power of 2 in 1..256/);
  badSetup({ size: 65536 }, /size 65536 is not a power of 2 in 1..256/);
  badSetup({ size: 0xffffffff }, /size 4294967295 is not a power of 2 in 1..256/);
});

test("after a refused queue set-up the driver sees QueueReady 0, and a reset lets it set the queue up", () => {
  const ram = new TestRam(RAM);
  const t = new VirtioMmioTransport(new VirtioRng((b) => b.fill(3)), {
    memory: ram.mem,
    irq: new IrqRecorder(),
  });
  const drv = new MmioDriver(t);
  assert.ok(drv.negotiate(ALL));
  drv.w(REG.QUEUE_SEL, 0);
  drv.w(REG.QUEUE_NUM, 3);
  drv.w(REG.QUEUE_READY, 1);
  assert.equal(drv.r(REG.QUEUE_READY), 0);
  assert.equal(drv.r(REG.STATUS) & S.NEEDS_RESET, S.NEEDS_RESET);
  assert.ok(drv.negotiate(ALL));
  const q = drv.setupQueue(ram, 0, 8, 0x1000, true);
  assert.equal(drv.r(REG.QUEUE_READY), 1);
  drv.driverOk();
  q.addChain([{ addr: 0x8000, len: 4, write: true }]);
  q.kick();
  assert.deepEqual(q.takeUsed(), [{ id: 0, len: 4 }]);
});

test("queue areas outside RAM or misaligned", () => {
  badSetup({ desc: RAM - 16 }, /descriptor table .* outside guest RAM/);
  badSetup({ avail: RAM }, /available ring .* outside guest RAM/);
  badSetup({ used: RAM - 8 }, /used ring .* outside guest RAM/);
  badSetup({ desc: 0x1008 }, /descriptor table at 0x1008 is not 16-byte aligned/);
  badSetup({ used: 0x3002 }, /used ring at 0x3002 is not 4-byte aligned/);
});

test("a queue used before DRIVER_OK is not touched; the chains are served at DRIVER_OK", () => {
  const ram = new TestRam(RAM);
  const irq = new IrqRecorder();
  const traces: string[] = [];
  const t = new VirtioMmioTransport(new VirtioRng((b) => b.fill(7)), {
    memory: ram.mem,
    irq,
    trace: (l) => traces.push(l),
  });
  const drv = new MmioDriver(t);
  assert.ok(drv.negotiate(ALL));
  const q = drv.setupQueue(ram, 0, 8, 0x1000, true);
  q.addChain([{ addr: 0x8000, len: 4, write: true }]);
  const before = ram.bytes.slice();
  q.forceKick();
  assert.ok(
    Buffer.compare(Buffer.from(before), Buffer.from(ram.bytes)) === 0,
    "nothing written before DRIVER_OK",
  );
  assert.match(traces.join("\n"), /before DRIVER_OK/);
  assert.equal(drv.r(REG.STATUS) & S.NEEDS_RESET, 0);
  drv.driverOk();
  assert.deepEqual(q.takeUsed(), [{ id: 0, len: 4 }]);
  assert.deepEqual([...ram.mem.read(0x8000, 4)], [7, 7, 7, 7]);
});

test("notify of a queue that is not ready or does not exist is ignored", () => {
  const ram = new TestRam(RAM);
  const traces: string[] = [];
  const t = new VirtioMmioTransport(new VirtioRng(() => assert.fail("no entropy")), {
    memory: ram.mem,
    irq: new IrqRecorder(),
    trace: (l) => traces.push(l),
  });
  const drv = new MmioDriver(t);
  assert.ok(drv.negotiate(ALL));
  drv.driverOk();
  drv.w(REG.QUEUE_NOTIFY, 0);
  drv.w(REG.QUEUE_NOTIFY, 7);
  drv.w(REG.QUEUE_NOTIFY, 0xffffffff);
  assert.match(traces.join("\n"), /queue 0, which is not ready/);
  assert.match(traces.join("\n"), /queue 7, which does not exist/);
  assert.equal(drv.r(REG.STATUS) & S.NEEDS_RESET, 0);
  assert.ok(ram.bytes.every((b) => b === 0));
});
