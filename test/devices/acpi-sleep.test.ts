// The ACPI sleep registers (src/devices/acpi-sleep.ts): S5 with SLP_EN ends the run as a power-off, which
// `vmtool run` reports with exit status 0; every other write is ignored, and the status register reads 0.
import { test } from "node:test";
import assert from "node:assert/strict";
import { AcpiSleep, GuestPowerOffRequest, SLP_EN, S5_SLEEP_TYPE } from "../../src/devices/acpi-sleep.js";
import { SLEEP_CONTROL, S5_SLEEP_TYPE as TABLES_S5 } from "../../src/loader/linux/tables/acpi.js";
import { statusForRun } from "../../src/cli/exit-status.js";

test("SLP_TYP 5 with SLP_EN powers off; the value the tables give the kernel is the one the device takes", () => {
  assert.equal(S5_SLEEP_TYPE, TABLES_S5);
  assert.equal(SLP_EN, SLEEP_CONTROL.ENABLE);
  const d = new AcpiSleep();
  // What Linux's acpi_hw_extended_sleep writes: (SLP_TYP << 2) & 0x1C | SLP_EN, one byte.
  const value =
    ((S5_SLEEP_TYPE << SLEEP_CONTROL.TYPE_SHIFT) & SLEEP_CONTROL.TYPE_MASK) | SLEEP_CONTROL.ENABLE;
  assert.equal(value, 0x34);
  assert.throws(() => d.pioWrite(0, 1, value), GuestPowerOffRequest);
  // Higher bits (reserved) do not hide the request; a word write carries the control byte low.
  assert.throws(() => d.pioWrite(0, 2, 0x8034), GuestPowerOffRequest);
});

test("other writes change nothing: S5 without SLP_EN, other sleep types, the status register", () => {
  const d = new AcpiSleep();
  for (const v of [0x14, 0x20, 0x24, 0x28, 0x2c, 0x30, 0x38, 0x3c, 0x00, 0xff & ~0x20])
    assert.doesNotThrow(() => d.pioWrite(0, 1, v), `control 0x${v.toString(16)}`);
  assert.doesNotThrow(() => d.pioWrite(1, 1, 0x80)); // WAK_STS write-1-to-clear
  assert.doesNotThrow(() => d.pioWrite(1, 1, 0x34)); // the control value, on the status port
  assert.equal(d.pioRead(0, 1), 0);
  assert.equal(d.pioRead(1, 1), 0, "WAK_STS never set: the machine does not wake");
});

test("a power-off ends vmtool run with status 0", () => {
  assert.equal(statusForRun({ kind: "poweroff", reason: new GuestPowerOffRequest().message }), 0);
});
