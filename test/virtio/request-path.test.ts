// The per-request paths that bench/virtio.mjs times: virtio-rng's pooled entropy (each byte of the source
// handed out once, the pool filled when it is made), virtio-blk's sector arithmetic without BigInt (exact at
// the 2^53 edge), and chains read through the queue's views of its descriptor table and available ring.
import { test } from "node:test";
import assert from "node:assert/strict";
import { VirtioMmioTransport } from "../../src/devices/virtio/mmio-transport.js";
import { ENTROPY_POOL_BYTES, VirtioRng, pooledEntropy } from "../../src/devices/virtio/rng.js";
import { VirtioBlk, type BlockBackend } from "../../src/devices/virtio/blk.js";
import type { VirtioDevice } from "../../src/devices/virtio/device.js";
import { FEAT, IrqRecorder, MmioDriver, TestRam, type DriverQueue } from "./driver.js";

/** A source that writes a running byte counter, and counts its calls. */
function counterSource() {
  const s = { calls: 0, next: 0, fill: (_buf: Uint8Array) => {} };
  s.fill = (buf) => {
    s.calls++;
    for (let i = 0; i < buf.length; i++) buf[i] = s.next++ & 0xff;
  };
  return s;
}

test("pooledEntropy fills its pool when made, then hands out each byte of the source once, across refills", () => {
  const src = counterSource();
  const entropy = pooledEntropy(src.fill, 1000);
  assert.equal(src.calls, 1, "the pool is filled at once: the source's start-up is not the first request's");
  const got: number[] = [];
  for (const size of [1, 999, 1, 2500, 64, 435]) {
    const buf = new Uint8Array(size);
    entropy(buf);
    got.push(...buf);
  }
  assert.equal(got.length, 4000);
  assert.ok(
    got.every((b, i) => b === (i & 0xff)),
    "the bytes are the source's stream in order: none repeated, none skipped",
  );
  assert.equal(src.calls, 4, "refilled only when used up (4000 bytes from a pool of 1000)");
});

test("virtio-rng's default source gives distinct 64-byte requests (pooled host CSPRNG)", () => {
  const { ram, qs } = bring(new VirtioRng());
  const seen = new Set<string>();
  // More than a pool's worth, so a refill happens in between.
  const requests = ENTROPY_POOL_BYTES / 64 + 8;
  for (let i = 0; i < requests; i++) {
    qs[0].addChain([{ addr: 0x10000, len: 64, write: true }]);
    qs[0].kick();
    assert.deepEqual(
      qs[0].takeUsed().map((u) => u.len),
      [64],
    );
    seen.add(Buffer.from(ram.mem.read(0x10000, 64)).toString("hex"));
  }
  assert.equal(seen.size, requests, "no two requests got the same bytes");
});

// ---- virtio-blk: the sector read as two 32-bit halves

function memBackend(size: number): BlockBackend & { data: Uint8Array } {
  const data = new Uint8Array(size);
  return {
    size,
    readOnly: false,
    id: "mem-disk",
    data,
    read: (offset, into) => into.set(data.subarray(offset, offset + into.length)),
    write: (offset, bytes) => data.set(bytes, offset),
    flush: () => {},
  };
}

const HDR = 0x20000;
const DATA = 0x21000;
const STATUS = 0x23000;

function bring(device: VirtioDevice) {
  const ram = new TestRam(0x40000);
  const traces: string[] = [];
  const t = new VirtioMmioTransport(device, {
    memory: ram.mem,
    irq: new IrqRecorder(),
    trace: (l) => traces.push(l),
  });
  const drv = new MmioDriver(t);
  assert.ok(drv.negotiate(FEAT.VERSION_1 | FEAT.INDIRECT));
  const qs: DriverQueue[] = [drv.setupQueue(ram, 0, 16, 0x1000, false)];
  drv.driverOk();
  return { ram, traces, qs };
}

/** A write of one sector at `sector`; returns [used length, status]. */
function write(
  env: ReturnType<typeof bring>,
  sector: bigint,
  fill: number,
  indirect?: number,
): [number, number] {
  const { ram, qs } = env;
  ram.mem.writeU32(HDR, 1);
  ram.mem.writeU32(HDR + 4, 0);
  ram.mem.writeU64(HDR + 8, sector);
  ram.mem.fill(DATA, 512, fill);
  ram.mem.writeU8(STATUS, 0xff);
  qs[0].addChain(
    [
      { addr: HDR, len: 16 },
      { addr: DATA, len: 512 },
      { addr: STATUS, len: 1, write: true },
    ],
    indirect,
  );
  qs[0].kick();
  const used = qs[0].takeUsed();
  assert.equal(used.length, 1);
  return [used[0].len, ram.mem.readU8(STATUS)];
}

test("virtio-blk: sectors whose high half is set are out of range, and traced exactly, at and around 2^53", () => {
  const backend = memBackend(16 * 512);
  const env = bring(new VirtioBlk(backend));
  for (const sector of [1n << 32n, (1n << 53n) - 1n, 1n << 53n, (1n << 53n) + 1n, (1n << 64n) - 1n]) {
    assert.deepEqual(write(env, sector, 0x11), [1, 1], `sector ${sector}: IOERR`);
    assert.match(env.traces.join("\n"), new RegExp(`at sector ${sector}: not whole sectors inside the disk`));
  }
  assert.ok(
    backend.data.every((b) => b === 0),
    "nothing written",
  );
  assert.deepEqual(write(env, 15n, 0x22), [1, 0], "the last sector");
  assert.ok(backend.data.subarray(15 * 512).every((b) => b === 0x22));
  assert.deepEqual(write(env, 16n, 0x33), [1, 1], "one past the last");
  assert.deepEqual(write(env, 2n, 0x44, 0x30000), [1, 0], "through an indirect table");
  assert.ok(backend.data.subarray(2 * 512, 3 * 512).every((b) => b === 0x44));
});
