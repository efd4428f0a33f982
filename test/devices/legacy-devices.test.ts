// The debug console (0xE9), the exit port (0xF4), and the PC device set on a real port bus.
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { PioBus } from "../../src/devices/bus.js";
import { DebugConsole } from "../../src/devices/debug-console.js";
import { ExitPort, exitStatusFor } from "../../src/devices/exit-port.js";
import { attachPcDevices } from "../../src/devices/pc-devices.js";
import { VmStopRequest } from "../../src/devices/types.js";

describe("DebugConsole", () => {
  test("bytes written go to the sink; wide writes give their bytes lowest first", () => {
    const got: number[] = [];
    const con = new DebugConsole((b) => got.push(...b));
    for (const c of "Hi") con.pioWrite(0, 1, c.charCodeAt(0));
    con.pioWrite(0, 2, 0x0a21); // "!\n"
    con.pioWrite(0, 4, 0x64636261); // "abcd"
    con.pioWrite(0, 1, 0x1ff); // only the byte
    assert.equal(Buffer.from(got).toString("latin1"), "Hi!\nabcd\xff");
  });

  test("a read returns 0xE9, the presence check", () => {
    const con = new DebugConsole(() => {});
    assert.equal(con.pioRead(0, 1), 0xe9);
    assert.equal(con.pioRead(0, 2), 0xe9e9);
    assert.equal(con.pioRead(0, 4), 0xe9e9e9e9);
  });
});

describe("ExitPort", () => {
  function stop(size: 1 | 2 | 4, value: number): VmStopRequest {
    try {
      new ExitPort().pioWrite(0, size, value);
    } catch (e) {
      assert.ok(e instanceof VmStopRequest);
      return e;
    }
    assert.fail("no VmStopRequest");
  }

  test("a write of V stops the VM with status (V << 1) | 1", () => {
    assert.equal(stop(1, 0).status, 1);
    assert.equal(stop(1, 1).status, 3);
    assert.equal(stop(1, 0x10).status, 33);
    assert.equal(stop(1, 0x7f).status, 255);
    assert.match(stop(1, 0x10).reason, /wrote 16 to the exit port: exit status 33/);
  });

  test("the OS keeps 8 bits: V = 0x80 gives 1; a wide write uses its whole value; the message says so", () => {
    const r = stop(1, 0x80);
    assert.equal(r.status, 1);
    assert.match(r.reason, /0x101, of which the OS keeps 8 bits: exit status 1/);
    assert.equal(stop(2, 0x1234).status, exitStatusFor(0x1234));
    assert.equal(stop(2, 0x1234).status, ((0x1234 << 1) | 1) & 0xff);
    assert.equal(stop(4, 0xffff_ffff).status, 255);
    assert.equal(stop(1, 0x1ff).status, 255, "a byte write carries only its byte");
  });

  test("every status is odd, never one of vmtool's own", () => {
    for (let v = 0; v < 1024; v++) assert.equal(exitStatusFor(v) % 2, 1);
  });

  test("reads return all ones", () => {
    assert.equal(new ExitPort().pioRead(0, 1), 0xff);
    assert.equal(new ExitPort().pioRead(0, 4), 0xffff_ffff);
  });
});

describe("PC device set on the port bus", () => {
  test("0xE9, 0xF4 and COM1 0x3F8..0x3FF answer through the bus; neighbours miss", () => {
    const bus = new PioBus();
    const consoleOut: number[] = [];
    const serialOut: number[] = [];
    const levels: boolean[] = [];
    const { com1 } = attachPcDevices(bus, {
      console: (b) => consoleOut.push(...b),
      serial: (b) => serialOut.push(...b),
      com1Irq: { setLevel: (h) => levels.push(h) },
    });
    bus.write(0xe9, 1, 0x41);
    assert.deepEqual(consoleOut, [0x41]);
    assert.equal(bus.read(0xe9, 1), 0xe9);
    bus.write(0x3f8, 1, 0x42);
    assert.deepEqual(serialOut, [0x42]);
    assert.equal(bus.read(0x3fd, 1), 0x60);
    bus.write(0x3f9, 1, 0x01); // IER: received data
    bus.write(0x3fc, 1, 0x08); // MCR: OUT2
    com1.pushInput(Uint8Array.of(0x43));
    assert.deepEqual(levels, [true]);
    assert.equal(bus.read(0x3f8, 1), 0x43);
    assert.deepEqual(levels, [true, false]);
    assert.equal(bus.read(0x3f7, 1), -1);
    assert.equal(bus.read(0x400, 1), -1);
    assert.throws(
      () => bus.write(0xf4, 1, 3),
      (e: Error) => e instanceof VmStopRequest && e.status === 7,
    );
    assert.match(bus.deviceAt(0x3fa)!.name, /com1 \(16550A, irq 4\)/);
  });
});
