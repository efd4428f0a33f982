// The metric names the exporter will use (src/stats/metrics.ts), for every statistic a real VM reports, against
// Prometheus' naming rules; and the units layer's conversions (values in their units, histogram buckets).
import { test } from "node:test";
import assert from "node:assert/strict";
import { StatsCollector } from "../../src/stats/collector.js";
import { metricFor } from "../../src/stats/metrics.js";
import { bucketBounds, formatRate, formatValue, histogramBar } from "../../src/stats/units.js";
import type { StatDesc } from "../../src/stats/types.js";
import { busyGuest, runArgs } from "./guests.js";
import { startVm, waitFor } from "./helpers.js";

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

test("every statistic of a real VM has a valid, unique Prometheus name in base units", async (t) => {
  const vm = startVm(t, runArgs(busyGuest(), "--cpus", "2"));
  const c = new StatsCollector({ sources: ["stats", "vmtool"], pids: new Set([vm.pid]), reapIntervalMs: 0 });
  t.after(() => c.close());
  const sample = await waitFor("the VM's statistics", () => {
    const s = c.poll().vms[0];
    // The VM's and its vCPUs' stats (a first poll may come before the vCPUs exist), and vmtool's counters.
    return s?.stats.some((x) => x.desc.source === "stats" && x.desc.scope === "vm") &&
      s.stats.some((x) => x.desc.name === "halt_wait_hist") &&
      s.stats.some((x) => x.desc.name === "vmtool_exits(IO)")
      ? s
      : undefined;
  });
  const seen = new Map<string, string>();
  for (const s of sample.stats) {
    const m = metricFor(s.desc);
    assert.match(m.name, NAME, s.desc.name);
    for (const l of Object.keys(m.labels)) assert.match(l, LABEL, `${s.desc.name}: label ${l}`);
    assert.ok(
      !["vm", "pid", "vcpu", "le"].some((l) => l in m.labels),
      `${s.desc.name}: the exporter's labels are its own`,
    );
    if (m.type === "counter") assert.match(m.name, /_total$/, s.desc.name);
    else assert.doesNotMatch(m.name, /_total$/, s.desc.name);
    if (s.desc.unit === "seconds") assert.match(m.name, /_seconds(_total)?$/, s.desc.name);
    assert.doesNotMatch(m.name, /_ns(_|$)/, `${s.desc.name}: base units`);
    if (m.redundant) continue;
    const key = `${m.name}${JSON.stringify(Object.entries(m.labels).sort())}`;
    assert.ok(!seen.has(key), `${s.desc.name} and ${seen.get(key)} would be one series: ${key}`);
    seen.set(key, s.desc.name);
  }
  assert.deepEqual(metricFor(sample.stats.find((s) => s.desc.name === "halt_wait_hist")!.desc), {
    name: "kvm_vcpu_halt_wait_seconds",
    type: "histogram",
    labels: {},
    sumFrom: "halt_wait_ns",
  });
  assert.deepEqual(metricFor(sample.stats.find((s) => s.desc.name === "vmtool_io(0x80,out)")!.desc).labels, {
    port: "0x80",
    direction: "out",
  });
});

const desc = (d: Partial<StatDesc>): StatDesc => ({
  name: "x",
  source: "stats",
  scope: "vcpu",
  type: "cumulative",
  unit: "none",
  base: 10,
  exponent: 0,
  scale: 1,
  buckets: 0,
  bucketSize: 0,
  ...d,
});

test("values in their units, and histogram buckets' bounds", () => {
  const ns = desc({ unit: "seconds", exponent: -9, scale: 1e-9 });
  assert.equal(formatValue(ns, 1_008_978_424), "1.01s");
  assert.equal(formatValue(ns, 245_000_000), "245ms");
  assert.equal(formatValue(ns, 12_300), "12.3µs");
  assert.equal(formatRate(ns, 980_000_000), "980ms/s");
  const bool = desc({ unit: "boolean", type: "instant" });
  assert.equal(formatValue(bool, 1), "yes");
  assert.equal(formatValue(bool, 0), "no");
  assert.equal(formatValue(bool, 1, 4), "1/4");
  assert.equal(formatValue(desc({ unit: "bytes", base: 2 }), 12 * 1024 * 1024), "12MiB");
  const log = desc({ type: "log-hist", unit: "seconds", exponent: -9, scale: 1e-9, buckets: 32 });
  assert.deepEqual(bucketBounds(log, 0), [0, 1e-9]);
  assert.deepEqual(bucketBounds(log, 1), [1e-9, 2e-9]);
  assert.deepEqual(bucketBounds(log, 24), [2 ** 23 * 1e-9, 2 ** 24 * 1e-9]);
  assert.equal(bucketBounds(log, 31)[1], Infinity, "the last bucket holds everything above");
  const lin = desc({ type: "linear-hist", buckets: 4, bucketSize: 10 });
  assert.deepEqual(bucketBounds(lin, 2), [20, 30]);
  assert.equal(bucketBounds(lin, 3)[1], Infinity);
  // 101 waits of ~10 ms (bucket 24: 2^23..2^24 ns) and one short one: one bar each, the range they cover.
  const buckets = new Array<number>(32).fill(0);
  buckets[24] = 101;
  buckets[20] = 1;
  assert.equal(histogramBar(log, buckets), "▁   █  524µs..16.8ms");
  assert.equal(histogramBar(log, new Array<number>(32).fill(0)), "");
  // A histogram's value is its count of samples, in no unit (the unit is the buckets').
  assert.equal(formatValue(log, 102), "102");
  assert.equal(formatRate(log, 19.9), "20");
});
