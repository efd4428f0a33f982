// The i8042 as a state machine: the answers Linux's probe polls for, and the CPU reset line.
import { test } from "node:test";
import assert from "node:assert/strict";
import { GuestResetRequest, I8042, STATUS } from "../../src/devices/i8042.js";

const cmd = (k: I8042, c: number) => k.pioWrite(4, 1, c);
const status = (k: I8042) => k.pioRead(4, 1);
const data = (k: I8042) => k.pioRead(0, 1);

test("status: system flag, nothing to read, never busy (a poll for IBF clear ends at once)", () => {
  const k = new I8042();
  assert.equal(status(k), STATUS.SYS);
});

test("probe commands: self-test, interface tests, command byte read and write, output port", () => {
  const k = new I8042();
  cmd(k, 0xaa);
  assert.equal(status(k) & STATUS.OBF, STATUS.OBF);
  assert.equal(data(k), 0x55);
  assert.equal(status(k) & STATUS.OBF, 0);
  cmd(k, 0xab);
  assert.equal(data(k), 0x00);
  cmd(k, 0x20);
  assert.equal(data(k), 0x45);
  cmd(k, 0x60);
  k.pioWrite(0, 1, 0x65);
  cmd(k, 0x20);
  assert.equal(data(k), 0x65);
  cmd(k, 0xad); // disable keyboard: bit 4 of the command byte
  cmd(k, 0x20);
  assert.equal(data(k), 0x75);
  cmd(k, 0xd0);
  assert.equal(data(k) & 1, 1, "the reset line is high (not in reset)");
  cmd(k, 0xa9);
  assert.notEqual(data(k), 0, "no aux port");
  // A keyboard byte gets no answer: nobody is behind the port.
  k.pioWrite(0, 1, 0xff);
  assert.equal(status(k) & STATUS.OBF, 0);
  // The output buffer is bounded whatever the guest asks.
  for (let i = 0; i < 1000; i++) cmd(k, 0x20);
  let n = 0;
  while (status(k) & STATUS.OBF) {
    data(k);
    n++;
  }
  assert.ok(n <= 16, `${n} bytes queued`);
});

test("the reset line: 0xFE, any pulse with bit 0 clear, or output-port bit 0 cleared", () => {
  for (const c of [0xfe, 0xf0, 0xfa])
    assert.throws(() => cmd(new I8042(), c), GuestResetRequest, `command ${c}`);
  assert.doesNotThrow(() => cmd(new I8042(), 0xff), "0xFF pulses nothing");
  const k = new I8042();
  cmd(k, 0xd1);
  assert.doesNotThrow(() => k.pioWrite(0, 1, 0x03));
  cmd(k, 0xd1);
  assert.throws(
    () => k.pioWrite(0, 1, 0x02),
    (e: unknown) => e instanceof GuestResetRequest && /output port/.test(e.message),
  );
});
