// --stats in bounded memory: a guest that touches more distinct addresses than the table keeps gets its first
// MAX_ADDRESS_ROWS a row each and every other exit counted in one "other addresses" row; nothing is lost.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { CLI } from "../helpers/paths.js";
import { buildSdkGuest } from "../helpers/sdk-guest.js";
import { GUEST_OUT, guests } from "../helpers/guests.js";
import { join } from "node:path";
import { MAX_ADDRESS_ROWS, OTHER_ADDRESSES, ExitStats, mergeStats } from "../../src/vmm/exit-stats.js";

const SCAN = 3 * MAX_ADDRESS_ROWS;

test(`a guest reading ${SCAN} distinct unclaimed MMIO addresses: rows capped, the rest counted, no exit lost`, () => {
  const elf = buildSdkGuest("guest/tests/mmio-scan.c");
  const r = spawnSync(process.execPath, [CLI, "run", "--json", "--cmdline", String(SCAN), elf], {
    encoding: "utf8",
    timeout: 120_000,
  });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`mmio-scan: ${SCAN} reads`));
  const stats = JSON.parse(r.stderr.trim().split("\n").pop()!) as {
    exits: number;
    byReason: { key: string; count: number }[];
    byAddress: { key: string; count: number }[];
    otherAddressExits: number;
  };
  const mmioRows = stats.byAddress.filter((a) => a.key.startsWith("mmio "));
  const other = stats.byAddress.find((a) => a.key === OTHER_ADDRESSES);
  assert.ok(stats.byAddress.length <= MAX_ADDRESS_ROWS + 1, `${stats.byAddress.length} rows`);
  assert.ok(other, "the other-addresses row");
  assert.equal(other.count, stats.otherAddressExits);
  const mmioExits = stats.byReason.find((x) => x.key === "MMIO")!.count;
  assert.equal(mmioExits, SCAN);
  const inRows = stats.byAddress.reduce((s, a) => s + a.count, 0);
  const ioAndMmio = stats.byReason
    .filter((x) => x.key === "MMIO" || x.key === "IO")
    .reduce((s, x) => s + x.count, 0);
  assert.equal(inRows, ioAndMmio, "every port and MMIO exit is in a row");
  assert.ok(mmioRows.length <= MAX_ADDRESS_ROWS, "the table stopped growing");
  assert.ok(other.count >= SCAN - MAX_ADDRESS_ROWS);
});

test("several vCPUs' tables merged keep the same bound and the same totals", () => {
  const a = new ExitStats();
  const b = new ExitStats();
  for (let i = 0; i < MAX_ADDRESS_ROWS; i++) {
    a.add(6, 0.001, 0.001, 0xe000_0000 + 4 * i, 2);
    b.add(6, 0.001, 0.001, 0xf000_0000 + 4 * i, 2);
  }
  const m = mergeStats([a.summary(), b.summary()])!;
  assert.equal(m.byAddress.length, MAX_ADDRESS_ROWS + 1);
  assert.equal(m.otherAddressExits, MAX_ADDRESS_ROWS);
  assert.equal(
    m.byAddress.reduce((s, r) => s + r.count, 0),
    2 * MAX_ADDRESS_ROWS,
  );
});

test("--stats and --json report what each virtio device counted", () => {
  const elf = buildSdkGuest("guest/examples/virtio-rng.c");
  const r = spawnSync(process.execPath, [CLI, "run", "--json", "--rng", elf], {
    encoding: "utf8",
    timeout: 60_000,
  });
  assert.equal(r.status, 0, r.stderr);
  const stats = JSON.parse(r.stderr.trim().split("\n").pop()!) as {
    devices: { name: string; counters: Record<string, number>; broken?: string }[];
  };
  assert.deepEqual(stats.devices, [{ name: "virtio-rng@0xd0000000", counters: { "bytes served": 4096 } }]);
  const text = spawnSync(process.execPath, [CLI, "run", "--stats", "--rng", elf], { encoding: "utf8" });
  assert.match(text.stderr, /^ {2}virtio-rng@0xd0000000: 4096 bytes served$/m);
});

test("the statistics are printed at the end of every run, also when the I/O worker started on demand", () => {
  // smp-hello's APs write COM1 at once: the I/O worker starts then. Its last message must reach the main thread
  // before the process ends (an early exit once every thread was released printed nothing, with status 0, in
  // about one run of six).
  guests();
  const smpHello = join(GUEST_OUT, "smp-hello.elf");
  for (let i = 0; i < 20; i++) {
    const r = spawnSync(
      process.execPath,
      [CLI, "run", "--json", "--cpus", "4", "--cmdline", "uart", smpHello],
      {
        encoding: "utf8",
      },
    );
    assert.equal(r.status, 0, r.stderr);
    const last = r.stderr.trim().split("\n").pop() ?? "";
    assert.ok(last.startsWith("{"), `run ${i + 1}: no statistics at the end of standard error: ${r.stderr}`);
    assert.ok((JSON.parse(last) as { forwarded: number }).forwarded > 0);
  }
});
