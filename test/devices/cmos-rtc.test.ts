// The MC146818 CMOS RTC as a state machine with an injected clock: the time in BCD and binary, 12- and
// 24-hour formats, the update-in-progress window, setting the time under SET, CMOS RAM, shared state.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  A_UIP,
  B_24H,
  B_BINARY,
  B_SET,
  CMOS_STATE_BYTES,
  CmosRtc,
  REG,
  UIP_WINDOW_MS,
} from "../../src/devices/cmos-rtc.js";

/** 2024-02-29 23:59:58.5 UTC, a Thursday. */
const T0 = Date.UTC(2024, 1, 29, 23, 59, 58, 500);

function rtc(now: { t: number }, state?: SharedArrayBuffer) {
  return new CmosRtc({ clock: () => now.t, state });
}
function rd(r: CmosRtc, reg: number): number {
  r.pioWrite(0, 1, reg);
  return r.pioRead(1, 1);
}
function wr(r: CmosRtc, reg: number, v: number): void {
  r.pioWrite(0, 1, reg);
  r.pioWrite(1, 1, v);
}

test("power-on: BCD, 24-hour, the host's UTC time, battery good", () => {
  const now = { t: T0 };
  const r = rtc(now);
  assert.equal(rd(r, REG.B) & (B_BINARY | B_24H), B_24H);
  assert.deepEqual(
    [REG.SECONDS, REG.MINUTES, REG.HOURS, REG.DAY, REG.MONTH, REG.YEAR, REG.CENTURY, REG.WEEKDAY].map((x) =>
      rd(r, x),
    ),
    [0x58, 0x59, 0x23, 0x29, 0x02, 0x24, 0x20, 0x05],
  );
  assert.equal(rd(r, REG.D), 0x80);
  assert.equal(rd(r, REG.C), 0);
  now.t += 2000; // the clock runs: 2024-03-01 00:00:00.5
  assert.deepEqual(
    [REG.SECONDS, REG.MINUTES, REG.HOURS, REG.DAY, REG.MONTH].map((x) => rd(r, x)),
    [0x00, 0x00, 0x00, 0x01, 0x03],
  );
});

test("UIP is set only in the last 244 us before each second, so a reader waiting for it clear is never stuck", () => {
  const now = { t: T0 };
  const r = rtc(now);
  const base = Math.floor(T0 / 1000) * 1000;
  for (const [frac, uip] of [
    [0, false],
    [500, false],
    [999.7, false],
    [1000 - UIP_WINDOW_MS + 0.01, true],
    [999.99, true],
  ] as const) {
    now.t = base + frac;
    assert.equal((rd(r, REG.A) & A_UIP) !== 0, uip, `at ${frac} ms`);
  }
  // Linux's loop: wait while UIP is set; with the clock moving on it ends within the window.
  now.t = base + 999.9;
  let spins = 0;
  while (rd(r, REG.A) & A_UIP) {
    now.t += 0.05;
    assert.ok(++spins < 10, "UIP stayed set");
  }
  // Register A's other bits are the guest's; UIP is not writable.
  wr(r, REG.A, 0xaf);
  now.t = base + 10;
  assert.equal(rd(r, REG.A), 0x2f);
});

test("binary and 12-hour modes", () => {
  const now = { t: Date.UTC(2031, 6, 4, 15, 7, 9) };
  const r = rtc(now);
  wr(r, REG.B, B_BINARY); // binary, 12-hour
  assert.deepEqual(
    [rd(r, REG.SECONDS), rd(r, REG.MINUTES), rd(r, REG.HOURS), rd(r, REG.YEAR)],
    [9, 7, 0x80 | 3, 31],
  );
  wr(r, REG.B, 0); // BCD, 12-hour
  assert.equal(rd(r, REG.HOURS), 0x80 | 0x03);
  now.t = Date.UTC(2031, 6, 4, 0, 30);
  assert.equal(rd(r, REG.HOURS), 0x12, "midnight is 12 AM");
});

test("setting the time under SET: the registers freeze, and the new time runs on from there", () => {
  const now = { t: T0 };
  const r = rtc(now);
  wr(r, REG.B, B_24H | B_SET);
  now.t += 5000;
  assert.equal(rd(r, REG.SECONDS), 0x58, "frozen while SET");
  assert.equal(rd(r, REG.A) & A_UIP, 0);
  wr(r, REG.YEAR, 0x99);
  wr(r, REG.CENTURY, 0x19);
  wr(r, REG.MONTH, 0x12);
  wr(r, REG.DAY, 0x31);
  wr(r, REG.HOURS, 0x23);
  wr(r, REG.MINUTES, 0x59);
  wr(r, REG.SECONDS, 0x50);
  wr(r, REG.B, B_24H);
  now.t += 15_000;
  assert.deepEqual(
    [REG.SECONDS, REG.MINUTES, REG.HOURS, REG.DAY, REG.MONTH, REG.YEAR, REG.CENTURY].map((x) => rd(r, x)),
    [0x05, 0x00, 0x00, 0x01, 0x01, 0x00, 0x20],
  );
});

test("CMOS RAM keeps bytes; the index port ignores the NMI bit and reads 0xFF; state is shared between vCPUs", () => {
  const state = new SharedArrayBuffer(CMOS_STATE_BYTES);
  const now = { t: T0 };
  const a = rtc(now, state);
  const b = rtc(now, state);
  wr(a, 0x80 | 0x40, 0x5a);
  assert.equal(rd(b, 0x40), 0x5a);
  assert.equal(a.pioRead(0, 1), 0xff);
  wr(a, REG.B, B_24H | B_BINARY);
  assert.equal(rd(b, REG.SECONDS), 58);
  wr(a, REG.HOURS, 1); // without SET: takes effect at once, for every vCPU
  assert.equal(rd(b, REG.HOURS), 1);
  assert.throws(() => new CmosRtc({ state: new ArrayBuffer(100) }), RangeError);
});
