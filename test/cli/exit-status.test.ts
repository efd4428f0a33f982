// The one place that maps errors and run ends to exit statuses (src/cli/exit-status.ts), against the README's
// table: every layer's error classes, every kind of run end.
import { test } from "node:test";
import assert from "node:assert/strict";
import { exitPortStatus, statusForError, statusForRun } from "../../src/cli/exit-status.js";
import { ExitCode } from "../../src/cli/exit-codes.js";
import { StdoutError, UsageError } from "../../src/cli/errors.js";
import { BusConfigError, BusOverlapError } from "../../src/devices/bus.js";
import { VmConfigError, VmResourceError } from "../../src/vm/errors.js";
import { KvmCapabilityError, KvmUnavailableError } from "../../src/kvm/errors.js";
import { SysError } from "../../src/kvm/libc.js";
import { GuestMemoryError } from "../../src/memory/guest-memory.js";
import type { RunEnd } from "../../src/vmm/run-end.js";

test("errors: bad input is 2, what the host cannot do is 6, a VMM bug (a device overlap) is 8", () => {
  assert.equal(statusForError(new UsageError("x")), ExitCode.USAGE);
  assert.equal(statusForError(new VmConfigError("x")), ExitCode.USAGE);
  assert.equal(statusForError(new KvmUnavailableError("x")), ExitCode.HOST_UNSUPPORTED);
  assert.equal(statusForError(new KvmCapabilityError("x")), ExitCode.HOST_UNSUPPORTED);
  assert.equal(statusForError(new VmResourceError("x")), ExitCode.HOST_UNSUPPORTED);
  assert.equal(statusForError(new BusOverlapError("x")), ExitCode.INTERNAL);
  assert.equal(statusForError(new BusConfigError("x")), ExitCode.INTERNAL);
  assert.equal(statusForError(new SysError("KVM_RUN", 14)), ExitCode.INTERNAL);
  assert.equal(statusForError(new GuestMemoryError(0x1000, 4)), ExitCode.INTERNAL);
  assert.equal(statusForError(new TypeError("x")), ExitCode.INTERNAL);
  assert.equal(statusForError("a string"), ExitCode.INTERNAL);
  assert.equal(statusForError(new StdoutError("EPIPE")), 141);
  assert.equal(statusForError(new StdoutError("ENOSPC")), 10);
});

test("run ends: the README's table", () => {
  const cases: [RunEnd, number][] = [
    [{ kind: "halted", reason: "" }, 0],
    [{ kind: "stopped", reason: "" }, 0],
    [{ kind: "fault", reason: "" }, 4],
    [{ kind: "internal", reason: "" }, 8],
    [{ kind: "output-failed", reason: "" }, 10],
    [{ kind: "peer", reason: "" }, 12],
    [{ kind: "reset", reason: "" }, 14],
    [{ kind: "signal", signal: "SIGHUP", reason: "" }, 129],
    [{ kind: "signal", signal: "SIGINT", reason: "" }, 130],
    [{ kind: "signal", signal: "SIGQUIT", reason: "" }, 131],
    [{ kind: "signal", signal: "SIGTERM", reason: "" }, 143],
    [{ kind: "escape", reason: "" }, 130],
    [{ kind: "output-closed", reason: "" }, 141],
    [{ kind: "exit-port", value: 0x10, reason: "" }, 33],
  ];
  for (const [end, status] of cases) assert.equal(statusForRun(end), status, JSON.stringify(end));
});

test("vmtool's own statuses are distinct, and even below 128 (the odd ones belong to the exit port)", () => {
  const values = Object.values(ExitCode) as number[];
  assert.equal(new Set(values).size, values.length, JSON.stringify(ExitCode));
  for (const v of values) if (v < 128) assert.equal(v % 2, 0, `${v}`);
});

test("the exit port: (V << 1) | 1, of which the OS keeps 8 bits; always odd, never one of vmtool's own", () => {
  assert.equal(exitPortStatus(0), 1);
  assert.equal(exitPortStatus(1), 3);
  assert.equal(exitPortStatus(0x7f), 255);
  assert.equal(exitPortStatus(0x80), 1);
  assert.equal(exitPortStatus(0x1234), ((0x1234 << 1) | 1) & 0xff);
  assert.equal(exitPortStatus(0xffff_ffff), 255);
  for (let v = 0; v < 1024; v++) assert.equal(exitPortStatus(v) % 2, 1);
});
