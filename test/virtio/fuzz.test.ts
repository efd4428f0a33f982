// Fuzzing with a fixed seed: random descriptor tables, rings and queue states thrown at the virtqueue parser
// and at whole devices through the transport. Nothing may escape as an exception (other than the parser's
// own VirtqueueError from SplitQueue.pop, which the transport turns into DEVICE_NEEDS_RESET), and nothing
// may be written outside guest RAM: guard bytes around it are checked after every case, and every buffer the
// parser yields (or view of one it streams) lies inside RAM.
import { test } from "node:test";
import assert from "node:assert/strict";
import { SplitQueue, VirtqueueError } from "../../src/devices/virtio/virtqueue.js";
import { VirtioMmioTransport } from "../../src/devices/virtio/mmio-transport.js";
import { VirtioRng } from "../../src/devices/virtio/rng.js";
import { VirtioConsole } from "../../src/devices/virtio/console.js";
import { VirtioBlk } from "../../src/devices/virtio/blk.js";
import type { VirtioDevice } from "../../src/devices/virtio/device.js";
import { D, FEAT, IrqRecorder, MmioDriver, REG, TestRam } from "./driver.js";
import { readMmio, writeMmio } from "../helpers/mmio.js";

// CI runs the fixed seed and count; VMTOOL_FUZZ_SEED / VMTOOL_FUZZ_CASES run longer or other campaigns.
const SEED = Number(process.env.VMTOOL_FUZZ_SEED ?? 0x5eed_2024);
const CASES = Number(process.env.VMTOOL_FUZZ_CASES ?? 1500);

/** mulberry32: small, fast, deterministic. */
function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  return { next, int, pick: <T>(xs: readonly T[]) => xs[int(xs.length)], chance: (p: number) => next() < p };
}
type Rng = ReturnType<typeof prng>;

const RAM = 0x8000;

/** A plausible-or-not guest address: mostly inside RAM, sometimes at its edges or far outside. */
function addr(r: Rng): bigint {
  switch (r.int(6)) {
    case 0:
      return BigInt(r.int(2 ** 32)) * 2n ** 32n + BigInt(r.int(2 ** 32)); // anything
    case 1:
      return BigInt(RAM - r.int(64)); // straddling the end
    default:
      return BigInt(r.int(RAM));
  }
}

function len(r: Rng): number {
  switch (r.int(5)) {
    case 0:
      return r.int(2 ** 32);
    case 1:
      return 0;
    default:
      return r.int(600);
  }
}

/** Random descriptors, biased towards chains (NEXT) and small tables. */
function scribbleDescriptors(r: Rng, ram: TestRam, table: number, count: number, size: number): void {
  const wellFormed = r.chance(0.5); // half the tables start well-formed, with a few fields broken
  for (let i = 0; i < count; i++) {
    const d = table + 16 * i;
    if (!ram.mem.contains(d, 16)) return;
    if (wellFormed && r.chance(0.9)) {
      ram.mem.writeU64(d, BigInt(r.int(RAM - 600)));
      ram.mem.writeU32(d + 8, 1 + r.int(600));
      const more = i + 1 < count && r.chance(0.3);
      ram.mem.writeU16(d + 12, (more ? D.NEXT : 0) | (r.chance(0.6) ? D.WRITE : 0));
      ram.mem.writeU16(d + 14, more ? i + 1 : 0);
      continue;
    }
    ram.mem.writeU64(d, addr(r));
    let flags = r.int(8);
    if (r.chance(0.5)) flags |= D.NEXT;
    if (r.chance(0.15)) flags = D.INDIRECT;
    ram.mem.writeU32(d + 8, flags === D.INDIRECT && r.chance(0.7) ? 16 * (1 + r.int(8)) : len(r));
    ram.mem.writeU16(d + 12, flags);
    ram.mem.writeU16(d + 14, r.chance(0.9) ? r.int(size + 2) : r.int(0x10000));
    if (flags === D.INDIRECT && r.chance(0.7)) {
      // Point it at a second random table inside RAM.
      const t = r.int(RAM - 256) & ~15;
      ram.mem.writeU64(d, BigInt(t));
      for (let j = 0; j < 8; j++) {
        const e = t + 16 * j;
        ram.mem.writeU64(e, addr(r));
        ram.mem.writeU32(e + 8, len(r));
        ram.mem.writeU16(e + 12, r.int(8) | (r.chance(0.5) ? D.NEXT : 0));
        ram.mem.writeU16(e + 14, r.int(10));
      }
    }
  }
}

test(`virtqueue parser: ${CASES} random tables and queue states, only VirtqueueError, no write outside RAM`, (t) => {
  const r = prng(SEED);
  let chains = 0;
  let errors = 0;
  for (let c = 0; c < CASES; c++) {
    const ram = new TestRam(RAM);
    const size = r.pick([1, 2, 4, 8, 16, 32]);
    const q = new SplitQueue(0, 32);
    q.size = size;
    q.descAddr = 0x100;
    q.driverAddr = 0x400;
    q.deviceAddr = 0x600;
    q.indirect = r.chance(0.7);
    q.eventIdx = r.chance(0.5);
    q.activate(ram.mem);
    scribbleDescriptors(r, ram, q.descAddr, size, size);
    for (let i = 0; i < size; i++)
      ram.mem.writeU16(q.driverAddr + 4 + 2 * i, r.chance(0.9) ? r.int(size) : r.int(0x10000));
    ram.mem.writeU16(q.driverAddr + 2, r.chance(0.9) ? r.int(size + 1) : r.int(0x10000));
    const lazy = r.chance(0.5); // walk the chain descriptor by descriptor, or stream it as a device does
    for (let step = 0; step <= size + 1; step++) {
      let head: number;
      let writable = 0;
      try {
        if (lazy) {
          const chain = q.pop(ram.mem);
          if (!chain) break;
          head = chain.head;
          // Every descriptor the parser yields lies inside RAM.
          for (let d = chain.next(); d; d = chain.next()) {
            assert.ok(ram.mem.contains(d.gpa, d.len), `case ${c}: descriptor outside RAM`);
            if (d.writable) writable += d.len;
          }
        } else {
          const chain = q.take(ram.mem);
          if (!chain) break;
          head = chain.head;
          // Every view a device is given is guest RAM, and together they are the chain's length.
          const inRam = (v: Uint8Array) =>
            assert.ok(
              v.buffer === ram.backing.buffer &&
                v.byteOffset >= TestRam.GUARD &&
                v.byteOffset + v.length <= TestRam.GUARD + RAM,
              `case ${c}: view outside RAM`,
            );
          const { reader, writer } = chain;
          assert.equal(reader.stream(Infinity, inRam), reader.length);
          assert.equal(writer.fill(Infinity, inRam), writer.length);
          writable = writer.length;
        }
      } catch (e) {
        assert.ok(e instanceof VirtqueueError, `case ${c}: ${String(e)}`);
        errors++;
        break;
      }
      chains++;
      q.pushUsed(ram.mem, head, Math.min(writable, 0xffff_ffff));
      q.needsInterrupt();
      q.enableNotifications();
    }
    assert.ok(ram.guardsIntact(), `case ${c}: guard bytes changed`);
  }
  t.diagnostic(`${chains} chains parsed, ${errors} rejected`);
  // The generator must exercise both outcomes, or it tests nothing.
  assert.ok(chains > CASES / 4, `only ${chains} valid chains`);
  assert.ok(errors > CASES / 4, `only ${errors} rejected chains`);
});

test(`devices through the transport: ${CASES} random queue states and register writes, no exception escapes`, (tc) => {
  const r = prng(SEED + 1);
  let broken = 0;
  let completed = 0;
  for (let c = 0; c < CASES; c++) {
    const ram = new TestRam(RAM);
    const disk = new Uint8Array(16 * 512);
    const kind = c % 3;
    let device: VirtioDevice;
    let console: VirtioConsole | undefined;
    if (kind === 0) device = new VirtioRng((b) => b.fill(0x11));
    else if (kind === 1) device = console = new VirtioConsole(() => {});
    else
      device = new VirtioBlk({
        size: disk.length,
        readOnly: r.chance(0.3),
        id: "fuzz",
        read: (o, into) => {
          assert.ok(o >= 0 && o + into.length <= disk.length, "read inside the disk");
          into.set(disk.subarray(o, o + into.length));
        },
        write: (o, d) => {
          assert.ok(o >= 0 && o + d.length <= disk.length, "write inside the disk");
          disk.set(d, o);
        },
        flush: () => {},
      });
    const t = new VirtioMmioTransport(device, { memory: ram.mem, irq: new IrqRecorder() });
    const drv = new MmioDriver(t);
    const features = r.pick([
      FEAT.VERSION_1,
      FEAT.VERSION_1 | FEAT.INDIRECT,
      FEAT.VERSION_1 | FEAT.INDIRECT | FEAT.EVENT_IDX,
    ]);
    const run = () => {
      drv.negotiate(features);
      const nq = device.queueMaxSizes.length;
      for (let qi = 0; qi < nq; qi++) {
        const size = r.chance(0.9) ? r.pick([2, 4, 8, 16]) : r.int(300);
        const base = 0x100 + 0x800 * qi;
        drv.w(REG.QUEUE_SEL, qi);
        drv.w(REG.QUEUE_NUM, size);
        drv.w(REG.QUEUE_DESC_LOW, r.chance(0.95) ? base : r.int(2 ** 32));
        drv.w(REG.QUEUE_DRIVER_LOW, base + 0x400);
        drv.w(REG.QUEUE_DEVICE_LOW, r.chance(0.95) ? base + 0x600 : base + 0x601);
        scribbleDescriptors(r, ram, base, 16, size);
        for (let i = 0; i < 16; i++) ram.mem.writeU16(base + 0x404 + 2 * i, r.int(size + 1));
        drv.w(REG.QUEUE_READY, 1);
      }
      if (r.chance(0.9)) drv.driverOk();
      for (let k = 0; k < 4; k++) {
        const qi = r.int(nq + 1);
        if (qi < nq) ram.mem.writeU16(0x100 + 0x800 * qi + 0x402, r.chance(0.9) ? r.int(20) : r.int(0x10000));
        if (console && r.chance(0.5)) console.push(new Uint8Array(r.int(40)).fill(0x41));
        // A random register access now and then (any offset, any size).
        if (r.chance(0.3)) {
          const off = r.int(0x200);
          const sz = r.pick([1, 2, 4, 8] as const);
          if (r.chance(0.5)) readMmio(t, off, sz);
          else writeMmio(t, off, sz, BigInt(r.int(2 ** 32)));
        }
        drv.w(REG.QUEUE_NOTIFY, qi);
      }
    };
    assert.doesNotThrow(run, `case ${c}`);
    assert.ok(ram.guardsIntact(), `case ${c}: guard bytes changed`);
    // A device broken by an exception other than the guest's fault would be a bug in vmtool.
    assert.doesNotMatch(t.brokenReason ?? "", /internal error/, `case ${c}`);
    if (t.brokenReason) broken++;
    for (const q of t.queues) if (q.active) completed++;
  }
  tc.diagnostic(`${broken} devices broke (DEVICE_NEEDS_RESET), ${completed} queues still working`);
  assert.ok(broken > CASES / 10, `only ${broken} cases broke the device`);
  assert.ok(completed > CASES / 10, `only ${completed} cases left a working queue`);
});
