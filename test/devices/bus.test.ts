// The port-I/O and MMIO buses: registration, overlap refused, lookup with offsets, misses, all-ones values.
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import {
  allOnes,
  BUS_MISS,
  BusConfigError,
  BusOverlapError,
  MissLog,
  MmioBus,
  PioBus,
} from "../../src/devices/bus.js";
import type { AccessSize, MmioDevice, PioDevice } from "../../src/devices/types.js";
import { InputError } from "../../src/errors.js";

const hexBytes = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");

/** A device that records its accesses and answers reads with a value made of offset and size. */
class Recorder implements PioDevice, MmioDevice {
  readonly log: string[] = [];
  constructor(readonly name: string) {}
  pioRead(offset: number, size: AccessSize): number {
    this.log.push(`r${offset}/${size}`);
    return offset * 16 + size;
  }
  pioWrite(offset: number, size: AccessSize, value: number): void {
    this.log.push(`w${offset}/${size}=${value.toString(16)}`);
  }
  /** Reads give the bytes offset, offset+1, ... (low byte of each). */
  mmioRead(offset: number, data: Uint8Array): void {
    this.log.push(`r${offset}/${data.length}`);
    for (let i = 0; i < data.length; i++) data[i] = (offset + i) & 0xff;
  }
  mmioWrite(offset: number, data: Uint8Array): void {
    this.log.push(`w${offset}/${data.length}=${hexBytes(data)}`);
  }
}

describe("PioBus", () => {
  test("an access reaches the device owning the port, with the offset from its base and the size", () => {
    const bus = new PioBus();
    const a = new Recorder("a");
    const b = new Recorder("b");
    bus.register(0x3f8, 8, a);
    bus.register(0xe9, 1, b);
    assert.equal(bus.read(0x3fd, 1), 5 * 16 + 1);
    assert.equal(bus.write(0x3f8, 2, 0x1234), true);
    assert.equal(bus.read(0xe9, 4), 4);
    assert.deepEqual(a.log, ["r5/1", "w0/2=1234"]);
    assert.deepEqual(b.log, ["r0/4"]);
    assert.equal(bus.deviceAt(0x3ff), a);
    assert.equal(bus.deviceAt(0x400), undefined);
  });

  test("a port nobody claims: read reports BUS_MISS, write reports false, no device is called", () => {
    const bus = new PioBus();
    const a = new Recorder("a");
    bus.register(0x3f8, 8, a);
    assert.equal(bus.read(0x3f7, 1), BUS_MISS);
    assert.equal(bus.read(0x400, 2), BUS_MISS);
    assert.equal(bus.write(0x80, 1, 0), false);
    assert.deepEqual(a.log, []);
  });

  test("the ends of the port space work: 0x0 and 0xFFFF", () => {
    const bus = new PioBus();
    const lo = new Recorder("lo");
    const hi = new Recorder("hi");
    bus.register(0, 1, lo);
    bus.register(0xffff, 1, hi);
    assert.equal(bus.read(0, 1), 1);
    assert.equal(bus.read(0xffff, 1), 1);
    assert.deepEqual(
      bus.entries().map((e) => [e.base, e.size, e.device.name]),
      [
        [0, 1, "lo"],
        [0xffff, 1, "hi"],
      ],
    );
  });

  test("overlap is refused with a message naming both devices; the bus is unchanged", () => {
    const bus = new PioBus();
    const uart = new Recorder("com1");
    bus.register(0x3f8, 8, uart);
    for (const [base, size] of [
      [0x3f8, 1],
      [0x3ff, 4],
      [0x3f0, 9],
      [0x3f0, 0x20],
    ]) {
      assert.throws(
        () => bus.register(base, size, new Recorder("intruder")),
        (e: Error) =>
          e instanceof BusOverlapError && /intruder.*overlap.*com1 at 0x3f8\.\.0x3ff/.test(e.message),
      );
    }
    assert.equal(bus.deviceAt(0x3f0), undefined, "a refused registration claims nothing");
    bus.register(0x3f0, 8, new Recorder("neighbour")); // adjacent is fine
    bus.register(0x400, 1, new Recorder("after"));
    assert.equal(bus.entries().length, 3);
  });

  test("bad ranges are refused as a bug in how the machine was built (BusConfigError, not bad input)", () => {
    const bus = new PioBus();
    for (const [base, size] of [
      [-1, 1],
      [0xffff, 2],
      [0x10000, 1],
      [0x10, 0],
      [0.5, 1],
    ]) {
      assert.throws(
        () => bus.register(base, size, new Recorder("x")),
        (e: Error) =>
          e instanceof BusConfigError &&
          !(e instanceof InputError) &&
          /port range .* is not inside/.test(e.message),
      );
    }
  });

  test("allOnes gives what an unclaimed read returns for each size", () => {
    assert.equal(allOnes(1), 0xff);
    assert.equal(allOnes(2), 0xffff);
    assert.equal(allOnes(4), 0xffff_ffff);
  });
});

describe("MmioBus", () => {
  test("lookup by bisection finds the right device among many, with offsets", () => {
    const bus = new MmioBus();
    const devs: Recorder[] = [];
    // Registered out of order, 0x200 bytes apart with gaps.
    for (const i of [5, 1, 7, 0, 3, 6, 2, 4]) {
      const d = new Recorder(`d${i}`);
      devs[i] = d;
      bus.register(0xd000_0000 + i * 0x1000, 0x200, d);
    }
    for (let i = 0; i < 8; i++) {
      const base = 0xd000_0000 + i * 0x1000;
      const eight = new Uint8Array(8);
      assert.equal(bus.read(base + 0x1fe, eight), true);
      assert.equal(hexBytes(eight), "feff000102030405", "the device filled exactly the access's bytes");
      const four = new Uint8Array(4);
      assert.equal(bus.read(base + 0x200, four), false, "just past the end: a miss");
      assert.equal(hexBytes(four), "ffffffff", "a miss reads as all ones");
      assert.equal(bus.write(base, Uint8Array.of(0x0d, 0xf0, 0xfe, 0xca, 0xef, 0xbe, 0xad, 0xde)), true);
      assert.deepEqual(devs[i].log, ["r510/8", "w0/8=0df0fecaefbeadde"]);
    }
    assert.equal(bus.read(0xcfff_ffff, new Uint8Array(1)), false);
    assert.equal(bus.write(0xfec0_0000, new Uint8Array(4)), false);
    assert.deepEqual(
      bus.entries().map((e) => e.device.name),
      ["d0", "d1", "d2", "d3", "d4", "d5", "d6", "d7"],
    );
  });

  test("overlap is refused on either side and inside; adjacent ranges are fine", () => {
    const bus = new MmioBus();
    bus.register(0x1000, 0x1000, new Recorder("mid"));
    for (const [base, size] of [
      [0x1000, 1],
      [0xfff, 2],
      [0x1fff, 0x10],
      [0x800, 0x2000],
      [0x1800, 0x10],
    ])
      assert.throws(() => bus.register(base, size, new Recorder("x")), BusOverlapError);
    bus.register(0x0, 0x1000, new Recorder("below"));
    bus.register(0x2000, 0x1000, new Recorder("above"));
    assert.equal(bus.deviceAt(0xfff)?.name, "below");
    assert.equal(bus.deviceAt(0x1000)?.name, "mid");
    assert.equal(bus.deviceAt(0x2000)?.name, "above");
  });

  test("bad ranges are refused", () => {
    const bus = new MmioBus();
    for (const [base, size] of [
      [-4096, 4096],
      [0, 0],
      [2 ** 52, 1],
    ])
      assert.throws(() => bus.register(base, size, new Recorder("x")), BusConfigError);
  });

  test("an access of an odd length (KVM's pieces of a page-crossing access) reaches the device as it is", () => {
    const bus = new MmioBus();
    const d = new Recorder("d");
    bus.register(0x1000, 0x100, d);
    assert.equal(bus.write(0x1005, Uint8Array.of(1, 2, 3)), true);
    const five = new Uint8Array(5);
    bus.read(0x1010, five);
    assert.deepEqual(d.log, ["w5/3=010203", "r16/5"]);
    assert.equal(hexBytes(five), "1011121314");
  });
});

describe("MissLog", () => {
  test("reports each address once, and stops at its limit", () => {
    const log = new MissLog(3);
    assert.equal(log.firstMiss(0x80), true);
    assert.equal(log.firstMiss(0x80), false);
    assert.equal(log.firstMiss(0x81), true);
    assert.equal(log.firstMiss(0x82), true);
    assert.equal(log.firstMiss(0x83), false, "past the limit");
    assert.equal(log.count, 3);
  });
});
