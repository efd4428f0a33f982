// Option values: numbers with K/M/G suffixes and decimal fractions that make whole bytes (3.25G, as the docs
// write the RAM limit), and a --cmdline that is too long only with vmtool's own virtio words.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { parseIntOption, UsageError } from "../../src/cli/errors.js";
import { CLI } from "../helpers/paths.js";
import { guests } from "../helpers/guests.js";

test("numbers: decimal, hex, suffixes, and fractions that are whole bytes", () => {
  assert.equal(parseIntOption("3.25G", "--mem"), 0xd000_0000n);
  assert.equal(parseIntOption("3328M", "--mem"), 0xd000_0000n);
  assert.equal(parseIntOption("0xD0000000", "--mem"), 0xd000_0000n);
  assert.equal(parseIntOption("1.5K", "x"), 1536n);
  assert.equal(parseIntOption("64M", "x"), 64n << 20n);
  assert.equal(parseIntOption("1_000", "x"), 1000n);
  for (const bad of ["1.5", "0.3K", "2.0000001G", "1e5", "", "0x", "-1", "1.G", ".5G"])
    assert.throws(() => parseIntOption(bad, "x"), UsageError, bad);
});

test("--mem 3.25G, the documented largest RAM, runs", () => {
  const r = spawnSync(process.execPath, [CLI, "run", "--mem", "3.25G", guests().halt], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
});

test("--cmdline: too long only with the virtio words vmtool appends, the message counts both", () => {
  const r = spawnSync(process.execPath, [CLI, "run", "--rng", "--cmdline", "a".repeat(4095), guests().halt], {
    encoding: "utf8",
  });
  assert.equal(r.status, 2);
  assert.match(
    r.stderr,
    /^vmtool: error: --cmdline: 4095 bytes, plus the 38 vmtool appends for the virtio devices \(virtio_mmio\.device=0x200@0xd0000000:5\), is more than 4095 bytes\n$/,
  );
});
