// The debug console (0xE9) and the exit port (0xF4) as state machines (test/cli/exit-status.test.ts: the status).
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { DebugConsole } from "../../src/devices/debug-console.js";
import { ExitPort } from "../../src/devices/exit-port.js";
import { GuestExitRequest } from "../../src/devices/types.js";

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
  function value(size: 1 | 2 | 4, v: number): number {
    try {
      new ExitPort().pioWrite(0, size, v);
    } catch (e) {
      assert.ok(e instanceof GuestExitRequest);
      return e.value;
    }
    assert.fail("no GuestExitRequest");
  }

  test("a write ends the run with the value written, whole for its width and only its width", () => {
    assert.equal(value(1, 0), 0);
    assert.equal(value(1, 0x10), 0x10);
    assert.equal(value(1, 0x1ff), 0xff, "a byte write carries only its byte");
    assert.equal(value(2, 0x1234), 0x1234);
    assert.equal(value(2, 0x12345), 0x2345);
    assert.equal(value(4, 0xffff_ffff), 0xffff_ffff);
    assert.equal(value(4, -1), 0xffff_ffff);
  });

  test("reads return all ones", () => {
    assert.equal(new ExitPort().pioRead(0, 1), 0xff);
    assert.equal(new ExitPort().pioRead(0, 4), 0xffff_ffff);
  });
});
