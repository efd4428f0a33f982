// What a guest can make vmtool allocate is bounded: a real guest (guest/tests/virtio-console-4g.c) sends one
// virtio-console transmit chain of 64 descriptors, each covering all 64 MiB of its RAM (4 GiB in one
// request), through `vmtool run --console` in a memory cgroup of 512 MiB. vmtool must not be OOM-killed, its
// peak memory must stay far below the chain's size, and the run must end as documented (docs/virtio.md): the
// first CONSOLE_TRANSMIT_LIMIT bytes on standard output, the rest dropped with a trace line, the chain
// completed, the device still working, status 0.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { CLI } from "../helpers/paths.js";
import { GUEST_OUT } from "../helpers/guests.js";
import { buildSdkGuest } from "../helpers/sdk-guest.js";
import { createMemoryCgroup } from "../helpers/memory-cgroup.js";
import { CONSOLE_TRANSMIT_LIMIT } from "../../src/devices/virtio/console.js";

const MiB = 1 << 20;
const CGROUP_LIMIT = 512 * MiB;
/**
 * How much more the run with the 4 GiB chain may peak at than a run of the echo guest that moves a few
 * bytes (the same Node, worker threads and 64 MiB guest): far less than one copy of the guest's RAM.
 */
const EXTRA_BOUND = 32 * MiB;

/** Run `vmtool run ARGS` inside a new 512 MiB memory cgroup; `skip` says why when none can be made. */
function runInCgroup(name: string, args: string[], input: string) {
  const cgroup = createMemoryCgroup(`vmtool-test-${process.pid}-${name}`, CGROUP_LIMIT);
  if (typeof cgroup === "string") return { skip: cgroup };
  try {
    const [cmd, ...rest] = cgroup.wrap([process.execPath, CLI, "run", ...args]);
    const r = spawnSync(cmd, rest, {
      input,
      timeout: 120_000,
      // Twice what the run may write: a device that wrote the whole chain is stopped here, not by the disk.
      maxBuffer: 2 * CONSOLE_TRANSMIT_LIMIT,
    });
    return { r, peak: cgroup.peak(), oomKills: cgroup.oomKills(), version: cgroup.version };
  } finally {
    cgroup.remove();
  }
}

test("a 64 x 64 MiB virtio-console chain in a 512 MiB memory cgroup: no OOM kill, bounded peak, 1 MiB out, status 0", (t) => {
  const elf = buildSdkGuest("guest/tests/virtio-console-4g.c");
  const base = runInCgroup(
    "echo",
    ["--mem", "64M", "--console", join(GUEST_OUT, "virtio-console.elf")],
    "quit\n",
  );
  if (!base.r) {
    t.skip(`needs a memory cgroup: ${base.skip}`);
    return;
  }
  assert.equal(base.r.stdout.toString(), "virtio-console ready\nbye\n", base.r.stderr.toString());
  const run = runInCgroup("4g", ["--mem", "64M", "--console", "--trace", elf], "");
  if (!run.r) throw new Error(`a second memory cgroup could not be made: ${run.skip}`);
  const { r, peak } = run;
  t.diagnostic(
    `cgroup v${run.version}: peak ${(peak / MiB).toFixed(1)} MiB with the 4 GiB chain, ` +
      `${(base.peak / MiB).toFixed(1)} MiB for the echo guest (limit ${CGROUP_LIMIT / MiB} MiB)`,
  );
  const stderr = r.stderr.toString();
  assert.equal(r.error, undefined, `vmtool did not end on its own: ${String(r.error)}`);
  assert.equal(r.signal, null, `vmtool was killed (${r.signal}); OOM kills: ${run.oomKills}\n${stderr}`);
  assert.equal(run.oomKills ?? 0, 0);
  assert.equal(r.status, 0, stderr);
  const report = `\nvirtio-console-4g: 64 x ${64 * MiB} bytes, used len 0, status 0xf\n`;
  assert.equal(r.stdout.length, CONSOLE_TRANSMIT_LIMIT + report.length, "the first 1 MiB, then the report");
  assert.equal(r.stdout.subarray(CONSOLE_TRANSMIT_LIMIT).toString(), report);
  assert.match(
    stderr,
    new RegExp(
      `virtio-console@0x[0-9a-f]+: transmit chain 0: ${2 ** 32} bytes, the ${2 ** 32 - CONSOLE_TRANSMIT_LIMIT} past ${CONSOLE_TRANSMIT_LIMIT} dropped`,
    ),
  );
  assert.doesNotMatch(stderr, /DEVICE_NEEDS_RESET/);
  assert.ok(
    peak < base.peak + EXTRA_BOUND,
    `peak ${peak} bytes, more than the echo guest's ${base.peak} + ${EXTRA_BOUND}`,
  );
});
