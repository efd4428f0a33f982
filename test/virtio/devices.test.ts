// virtio-rng, virtio-console and virtio-blk driven by the spec-following test driver, with real files for
// the file-backed disk.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { VirtioMmioTransport } from "../../src/devices/virtio/mmio-transport.js";
import { VirtioRng, cryptoEntropy } from "../../src/devices/virtio/rng.js";
import {
  VirtioConsole,
  CONSOLE_INPUT_LIMIT,
  CONSOLE_TRANSMIT_LIMIT,
} from "../../src/devices/virtio/console.js";
import { VirtioBlk, BLK_MAX_DATA_BYTES, type BlockBackend } from "../../src/devices/virtio/blk.js";
import { RNG_MAX_BYTES_PER_REQUEST } from "../../src/devices/virtio/rng.js";
import { GUEST_RAM_WINDOW } from "../../src/memory/guest-memory.js";
import { FileBlockBackend } from "../../src/backends/block-file.js";
import type { VirtioDevice } from "../../src/devices/virtio/device.js";
import { InputError } from "../../src/errors.js";
import { FEAT, IrqRecorder, MmioDriver, REG, TestRam, type DriverQueue } from "./driver.js";
import { readMmio, writeMmio } from "../helpers/mmio.js";

const ALL = FEAT.VERSION_1 | FEAT.INDIRECT | FEAT.EVENT_IDX;

/** RAM for the whole-RAM chains below: 4 MiB, so 64 descriptors over all of it make a 256 MiB chain. */
const BIG_RAM = 4 << 20;
/** Where those chains' indirect tables go (a table of 64 descriptors is 1 KiB). */
const TABLE = 0x30000;

/** `count` descriptors, each covering all of RAM (device-writable or not). */
function wholeRam(count: number, write = false) {
  return Array.from({ length: count }, () => ({ addr: 0, len: BIG_RAM, write }));
}

/** True when `view` is part of the test's guest RAM itself (not a copy). */
function isGuestRam(ram: TestRam, view: Uint8Array): boolean {
  return (
    view.buffer === ram.backing.buffer &&
    view.byteOffset >= TestRam.GUARD &&
    view.byteOffset + view.length <= TestRam.GUARD + ram.size
  );
}

function bring(device: VirtioDevice, features = ALL, queues = 1, ramSize = 0x40000) {
  const ram = new TestRam(ramSize);
  const irq = new IrqRecorder();
  const traces: string[] = [];
  const t = new VirtioMmioTransport(device, { memory: ram.mem, irq, trace: (l) => traces.push(l) });
  const drv = new MmioDriver(t);
  assert.ok(drv.negotiate(features));
  const qs: DriverQueue[] = [];
  for (let i = 0; i < queues; i++)
    qs.push(drv.setupQueue(ram, i, 16, 0x1000 + 0x1000 * i, (features & FEAT.EVENT_IDX) !== 0n));
  drv.driverOk();
  return { ram, irq, traces, t, drv, qs };
}

// ---- virtio-rng

test("virtio-rng fills 4 KiB with bytes from the host's CSPRNG", () => {
  const { ram, qs } = bring(new VirtioRng(cryptoEntropy));
  const head = qs[0].addChain([{ addr: 0x10000, len: 4096, write: true }]);
  qs[0].kick();
  assert.deepEqual(qs[0].takeUsed(), [{ id: head, len: 4096 }]);
  const bytes = ram.mem.read(0x10000, 4096);
  const distinct = new Set(bytes).size;
  assert.ok(distinct > 200, `4 KiB of random bytes has ${distinct} distinct values`);
});

test("virtio-rng: a 256 MiB chain gets RNG_MAX_BYTES_PER_REQUEST bytes, written in place in guest RAM", () => {
  let asked = 0;
  const envRef: { ram?: TestRam } = {};
  const dev = new VirtioRng((buf) => {
    assert.ok(envRef.ram && isGuestRam(envRef.ram, buf), "entropy is written into guest RAM, not a copy");
    asked += buf.length;
    buf.fill(0x5a);
  });
  const { ram, qs } = bring(dev, ALL, 1, BIG_RAM);
  envRef.ram = ram;
  const head = qs[0].addChain(wholeRam(64, true), TABLE);
  qs[0].kick();
  assert.deepEqual(qs[0].takeUsed(), [{ id: head, len: RNG_MAX_BYTES_PER_REQUEST }]);
  assert.equal(asked, RNG_MAX_BYTES_PER_REQUEST);
  assert.equal(ram.mem.readU8(RNG_MAX_BYTES_PER_REQUEST - 1), 0x5a);
  assert.equal(ram.mem.readU8(RNG_MAX_BYTES_PER_REQUEST), 0, "nothing past the bound");
});

test("virtio-rng: a request with no writable buffer completes with length 0", () => {
  const dev = new VirtioRng(() => assert.fail("entropy asked for nothing"));
  const { qs, traces } = bring(dev);
  qs[0].addChain([{ addr: 0x10000, len: 16 }]);
  qs[0].kick();
  assert.deepEqual(qs[0].takeUsed(), [{ id: 0, len: 0 }]);
  assert.match(traces.join("\n"), /no device-writable buffer/);
});

// ---- virtio-console

test("virtio-console: transmitq output reaches the sink; emergency write outputs one byte", () => {
  const out: number[] = [];
  const dev = new VirtioConsole((b) => out.push(...b));
  const { ram, qs, t } = bring(dev, ALL, 2);
  ram.mem.write(0x10000, new TextEncoder().encode("hello, "));
  ram.mem.write(0x10100, new TextEncoder().encode("world\n"));
  const head = qs[1].addChain([
    { addr: 0x10000, len: 7 },
    { addr: 0x10100, len: 6 },
  ]);
  qs[1].kick();
  assert.deepEqual(qs[1].takeUsed(), [{ id: head, len: 0 }]);
  writeMmio(t, REG.CONFIG + 8, 4, 0x21n);
  assert.equal(new TextDecoder().decode(new Uint8Array(out)), "hello, world\n!");
  assert.equal(readMmio(t, REG.CONFIG + 4, 4), 0n, "max_nr_ports unused without MULTIPORT");
});

test("virtio-console: a 256 MiB transmit chain is streamed from guest RAM up to its bound, the rest dropped and counted", () => {
  const views: Uint8Array[] = [];
  let bytes = 0;
  const dev = new VirtioConsole((b) => {
    views.push(b);
    bytes += b.length;
  });
  const { ram, qs, traces } = bring(dev, ALL, 2, BIG_RAM);
  const head = qs[1].addChain(wholeRam(64), TABLE);
  qs[1].kick();
  assert.deepEqual(qs[1].takeUsed(), [{ id: head, len: 0 }], "completed");
  assert.equal(bytes, CONSOLE_TRANSMIT_LIMIT);
  assert.ok(
    views.every((v) => isGuestRam(ram, v) && v.length <= GUEST_RAM_WINDOW),
    "the sink gets views of guest RAM (no copy of the chain), none longer than a RAM window",
  );
  assert.equal(dev.droppedOutput, 64 * BIG_RAM - CONSOLE_TRANSMIT_LIMIT);
  assert.match(
    traces.join("\n"),
    new RegExp(
      `transmit chain ${head}: ${64 * BIG_RAM} bytes, the ${64 * BIG_RAM - CONSOLE_TRANSMIT_LIMIT} past`,
    ),
  );
  // The next request goes through whole.
  ram.mem.write(0x10000, new TextEncoder().encode("ok\n"));
  views.length = bytes = 0;
  qs[1].addChain([{ addr: 0x10000, len: 3 }]);
  qs[1].kick();
  assert.equal(new TextDecoder().decode(views[0]), "ok\n");
});

test("virtio-console: a 256 MiB receive chain takes only the input there is", () => {
  const dev = new VirtioConsole(() => {});
  const { ram, qs } = bring(dev, ALL, 2, BIG_RAM);
  dev.push(new TextEncoder().encode("hello"));
  const head = qs[0].addChain(wholeRam(64, true), TABLE);
  qs[0].kick();
  assert.deepEqual(qs[0].takeUsed(), [{ id: head, len: 5 }]);
  assert.equal(new TextDecoder().decode(ram.mem.read(0, 5)), "hello");
  assert.equal(ram.mem.readU8(5), 0);
});

test("virtio-console: input keeps its order across the input ring's wrap-around", () => {
  const dev = new VirtioConsole(() => {});
  const { ram, qs } = bring(dev, ALL, 2, BIG_RAM);
  const pattern = (n: number, from: number) => new Uint8Array(n).map((_, i) => (from + i) % 251);
  // Fill most of the ring, let the guest read part of it, then push past the ring's end.
  dev.push(pattern(60_000, 0));
  qs[0].addChain([{ addr: 0x100000, len: 50_000, write: true }]);
  qs[0].kick();
  dev.push(pattern(50_000, 60_000));
  assert.equal(dev.pendingInput, 60_000);
  assert.equal(dev.droppedInput, 0);
  qs[0].addChain([{ addr: 0x100000 + 50_000, len: 70_000, write: true }]);
  qs[0].kick();
  assert.deepEqual(
    qs[0].takeUsed().map((u) => u.len),
    [50_000, 60_000],
  );
  assert.deepEqual(ram.mem.read(0x100000, 110_000), pattern(110_000, 0));
});

test("virtio-console: input waits for receive buffers, then fills them across chains", () => {
  const dev = new VirtioConsole(() => {});
  const { ram, qs, irq, drv } = bring(dev, ALL, 2);
  dev.push(new TextEncoder().encode("abcdefgh"));
  assert.equal(dev.pendingInput, 8);
  assert.equal(irq.level, false);
  qs[0].addChain([{ addr: 0x10000, len: 5, write: true }]);
  qs[0].addChain([{ addr: 0x10100, len: 5, write: true }]);
  qs[0].kick();
  assert.deepEqual(qs[0].takeUsed(), [
    { id: 0, len: 5 },
    { id: 1, len: 3 },
  ]);
  assert.equal(new TextDecoder().decode(ram.mem.read(0x10000, 5)), "abcde");
  assert.equal(new TextDecoder().decode(ram.mem.read(0x10100, 3)), "fgh");
  assert.equal(dev.pendingInput, 0);
  assert.ok(irq.level);
  drv.ack();
  qs[0].setUsedEvent(qs[0].usedIdx()); // as a driver re-enabling callbacks does (EVENT_IDX)
  // A buffer already offered is filled as soon as input arrives.
  qs[0].addChain([{ addr: 0x10200, len: 8, write: true }]);
  qs[0].kick();
  assert.equal(qs[0].takeUsed().length, 0, "no input yet: the buffer is kept");
  dev.push(new TextEncoder().encode("xy"));
  assert.deepEqual(qs[0].takeUsed(), [{ id: 2, len: 2 }]);
  assert.ok(irq.level);
});

test("virtio-console: input beyond the buffer limit is dropped and counted, not kept", () => {
  const dev = new VirtioConsole(() => {});
  bring(dev, ALL, 2);
  dev.push(new Uint8Array(CONSOLE_INPUT_LIMIT + 10));
  assert.equal(dev.pendingInput, CONSOLE_INPUT_LIMIT);
  assert.equal(dev.droppedInput, 10);
});

// ---- virtio-blk

function memBackend(size: number, readOnly = false) {
  const data = new Uint8Array(size);
  const b = {
    data,
    flushes: 0,
    size,
    readOnly,
    id: "mem-disk",
    read(o: number, into: Uint8Array) {
      into.set(data.subarray(o, o + into.length));
    },
    write(o: number, d: Uint8Array) {
      data.set(d, o);
    },
    flush() {
      b.flushes++;
    },
  };
  return b;
}

const HDR = 0x20000;
const DATA = 0x21000;
const STATUS = 0x23000;

/** One blk request: header, data (out or in), status byte. Returns [used length, status]. */
function blkRequest(
  env: ReturnType<typeof bring>,
  type: number,
  sector: bigint,
  data: { out?: Uint8Array; inLen?: number },
  indirect?: number,
): [number, number] {
  const { ram, qs } = env;
  ram.mem.writeU32(HDR, type);
  ram.mem.writeU32(HDR + 4, 0);
  ram.mem.writeU64(HDR + 8, sector);
  ram.mem.writeU8(STATUS, 0xff);
  const bufs = [{ addr: HDR, len: 16 }];
  if (data.out) {
    ram.mem.write(DATA, data.out);
    bufs.push({ addr: DATA, len: data.out.length });
  }
  if (data.inLen) bufs.push({ addr: DATA, len: data.inLen, write: true } as never);
  bufs.push({ addr: STATUS, len: 1, write: true } as never);
  qs[0].addChain(bufs, indirect);
  qs[0].kick();
  const used = qs[0].takeUsed();
  assert.equal(used.length, 1);
  return [used[0].len, ram.mem.readU8(STATUS)];
}

test("virtio-blk: capacity in config; write then read back whole sectors; flush reaches the backend", () => {
  const backend = memBackend(64 * 512);
  const env = bring(new VirtioBlk(backend));
  assert.equal(readMmio(env.t, REG.CONFIG, 8), 64n);
  const pattern = new Uint8Array(1024).map((_, i) => (i * 7) & 0xff);
  assert.deepEqual(blkRequest(env, 1, 3n, { out: pattern }), [1, 0]);
  assert.deepEqual(backend.data.subarray(3 * 512, 5 * 512), pattern);
  env.ram.mem.fill(DATA, 1024, 0);
  assert.deepEqual(
    blkRequest(env, 0, 3n, { inLen: 1024 }, 0x30000),
    [1025, 0],
    "read through an indirect table",
  );
  assert.deepEqual(env.ram.mem.read(DATA, 1024), pattern);
  assert.deepEqual(blkRequest(env, 4, 0n, {}), [1, 0]);
  assert.equal(backend.flushes, 1);
});

test("virtio-blk: get id returns the backend's id, zero-padded to 20 bytes", () => {
  const env = bring(new VirtioBlk(memBackend(8 * 512)));
  env.ram.mem.fill(DATA, 20, 0xee);
  assert.deepEqual(blkRequest(env, 8, 0n, { inLen: 20 }), [21, 0]);
  const id = env.ram.mem.read(DATA, 20);
  assert.equal(new TextDecoder().decode(id.subarray(0, 8)), "mem-disk");
  assert.ok(id.subarray(8).every((b) => b === 0));
});

test("virtio-blk: read-only disk offers VIRTIO_BLK_F_RO and refuses writes with IOERR, data untouched", () => {
  const backend = memBackend(8 * 512, true);
  const env = bring(new VirtioBlk(backend));
  assert.ok(env.drv.deviceFeatures() & (1n << 5n));
  assert.deepEqual(blkRequest(env, 1, 0n, { out: new Uint8Array(512).fill(1) }), [1, 1]);
  assert.ok(backend.data.every((b) => b === 0));
  assert.deepEqual(blkRequest(env, 0, 0n, { inLen: 512 }), [513, 0], "reads still work");
});

test("virtio-blk: out-of-range, partial-sector, unknown-type and short-header requests fail with the spec's status", () => {
  const backend = memBackend(8 * 512);
  const env = bring(new VirtioBlk(backend));
  assert.deepEqual(blkRequest(env, 0, 8n, { inLen: 512 }), [1, 1], "read past the end: IOERR");
  assert.deepEqual(blkRequest(env, 0, 7n, { inLen: 1024 }), [1, 1], "read crossing the end: IOERR");
  assert.deepEqual(
    blkRequest(env, 1, 0xffff_ffff_ffff_ffffn, { out: new Uint8Array(512) }),
    [1, 1],
    "huge sector",
  );
  assert.deepEqual(blkRequest(env, 1, 0n, { out: new Uint8Array(100) }), [1, 1], "partial sector: IOERR");
  assert.deepEqual(blkRequest(env, 99, 0n, {}), [1, 2], "unknown type: UNSUPP");
  assert.ok(backend.data.every((b) => b === 0));
  // Header shorter than 16 bytes.
  env.ram.mem.writeU8(STATUS, 0xff);
  env.qs[0].addChain([
    { addr: HDR, len: 8 },
    { addr: STATUS, len: 1, write: true },
  ]);
  env.qs[0].kick();
  assert.deepEqual(
    env.qs[0].takeUsed().map((u) => u.len),
    [1],
  );
  assert.equal(env.ram.mem.readU8(STATUS), 1, "short header: IOERR");
});

test("virtio-blk: a backend error completes the request with IOERR and the queue goes on", () => {
  const backend: BlockBackend = {
    size: 8 * 512,
    readOnly: false,
    id: "bad",
    read() {
      throw new Error("EIO");
    },
    write() {},
    flush() {},
  };
  const env = bring(new VirtioBlk(backend));
  assert.deepEqual(blkRequest(env, 0, 0n, { inLen: 512 }), [1, 1]);
  assert.match(env.traces.join("\n"), /backend error: EIO/);
  assert.deepEqual(blkRequest(env, 1, 0n, { out: new Uint8Array(512) }), [1, 0]);
});

test("virtio-blk: data is streamed between guest RAM and the backend; a request past BLK_MAX_DATA_BYTES fails with IOERR untouched", () => {
  const views: Uint8Array[] = [];
  const backend: BlockBackend = {
    size: 2 ** 40, // a 1 TiB disk: only the request bound can refuse these requests
    readOnly: false,
    id: "big",
    read(_o, into) {
      views.push(into);
      into.fill(0x77);
    },
    write(_o, data) {
      views.push(data);
    },
    flush() {},
  };
  const env = bring(new VirtioBlk(backend), ALL, 1, BIG_RAM);
  const { ram, qs } = env;
  assert.equal(readMmio(env.t, REG.CONFIG + 8, 4), 1n << 20n, "size_max");
  assert.equal(readMmio(env.t, REG.CONFIG + 12, 4), 126n, "seg_max");
  assert.equal(BLK_MAX_DATA_BYTES, 126 << 20);
  const request = (type: number, data: { addr: number; len: number; write?: boolean }[]) => {
    ram.mem.writeU32(HDR, type);
    ram.mem.writeU64(HDR + 8, 8n);
    ram.mem.writeU8(STATUS, 0xff);
    views.length = 0;
    qs[0].addChain([{ addr: HDR, len: 16 }, ...data, { addr: STATUS, len: 1, write: true }], TABLE);
    qs[0].kick();
    const used = qs[0].takeUsed();
    assert.equal(used.length, 1);
    return { len: used[0].len, status: ram.mem.readU8(STATUS) };
  };
  // 31 x 4 MiB = 124 MiB: inside the bound, passed through as views of guest RAM.
  const within = wholeRam(31);
  assert.deepEqual(request(1, within), { len: 1, status: 0 });
  assert.equal(
    views.reduce((n, v) => n + v.length, 0),
    31 * BIG_RAM,
  );
  assert.ok(views.every((v) => isGuestRam(ram, v) && v.length <= GUEST_RAM_WINDOW));
  // 32 x 4 MiB = 128 MiB, one way or the other: refused before any byte moves.
  assert.deepEqual(request(1, wholeRam(32)), { len: 1, status: 1 }, "write: IOERR");
  assert.equal(views.length, 0, "nothing written to the backend");
  ram.mem.writeU8(0x200000, 0x11);
  assert.deepEqual(request(0, wholeRam(32, true)), { len: 1, status: 1 }, "read: IOERR");
  assert.equal(views.length, 0, "nothing read from the backend");
  assert.equal(ram.mem.readU8(0x200000), 0x11, "guest RAM untouched");
  assert.match(env.traces.join("\n"), /write of 134217728 bytes at sector 8: more than 132120576/);
});

test("virtio-blk over a real file: guest writes are in the file byte for byte; ro refuses; bad files are usage errors", () => {
  const dir = mkdtempSync(join(tmpdir(), "vmtool-virtio-"));
  try {
    const path = join(dir, "disk.img");
    writeFileSync(path, new Uint8Array(16 * 512));
    const backend = FileBlockBackend.open(path, false);
    const env = bring(new VirtioBlk(backend));
    const data = new Uint8Array(2048).map((_, i) => (i * 13 + 5) & 0xff);
    assert.deepEqual(blkRequest(env, 1, 5n, { out: data }), [1, 0]);
    assert.deepEqual(blkRequest(env, 4, 0n, {}), [1, 0]);
    const file = readFileSync(path);
    assert.deepEqual(new Uint8Array(file.subarray(5 * 512, 5 * 512 + 2048)), data);
    assert.ok(file.subarray(0, 5 * 512).every((b) => b === 0));
    assert.ok(file.subarray(5 * 512 + 2048).every((b) => b === 0));
    env.ram.mem.fill(DATA, 2048, 0);
    assert.deepEqual(blkRequest(env, 0, 5n, { inLen: 2048 }), [2049, 0]);
    assert.deepEqual(env.ram.mem.read(DATA, 2048), data);
    assert.deepEqual(blkRequest(env, 8, 0n, { inLen: 20 }), [21, 0]);
    assert.equal(new TextDecoder().decode(env.ram.mem.read(DATA, 8)), "disk.img");
    backend.close();

    const ro = FileBlockBackend.open(path, true);
    const envRo = bring(new VirtioBlk(ro));
    assert.deepEqual(blkRequest(envRo, 1, 0n, { out: new Uint8Array(512).fill(9) }), [1, 1]);
    assert.ok(
      readFileSync(path)
        .subarray(0, 512)
        .every((b) => b === 0),
    );
    ro.close();

    assert.throws(() => FileBlockBackend.open(join(dir, "missing.img"), false), InputError);
    writeFileSync(join(dir, "tiny.img"), new Uint8Array(100));
    assert.throws(
      () => FileBlockBackend.open(join(dir, "tiny.img"), false),
      /smaller than one 512-byte sector/,
    );
    assert.throws(() => FileBlockBackend.open(dir, true), InputError);
    chmodSync(path, 0o444);
    if (process.getuid?.() !== 0)
      assert.throws(() => FileBlockBackend.open(path, false), /permission denied/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
