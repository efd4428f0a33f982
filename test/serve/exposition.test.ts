// The exposition writer against the strict parser: escaping of label values and HELP, counters' `_total` in
// both formats, OpenMetrics' `# EOF` and UNIT, histogram buckets from KVM's log and linear histograms in `le`
// order, cumulative, and bad names refused. No KVM: families are built from statistic descriptions.
import { test } from "node:test";
import assert from "node:assert/strict";
import { negotiate, writeExposition, type Family } from "../../src/serve/exposition.js";
import { scrapeFamilies } from "../../src/serve/metrics.js";
import type { Snapshot, StatDesc, VmSample } from "../../src/stats/types.js";
import { parseExposition, valueOf } from "./parser.js";

const nasty = 'a\\b"c\nd é';

test("label values and HELP are escaped; the parser reads back exactly what was written", () => {
  const fams: Family[] = [
    {
      name: "x_events",
      type: "counter",
      help: 'help with \\ and "quotes"\nand a newline',
      samples: [{ suffix: "_total", labels: { vm: nasty, pid: "1" }, value: 3 }],
    },
    {
      name: "x_temp_seconds",
      type: "gauge",
      unit: "seconds",
      help: "g",
      samples: [{ suffix: "", labels: {}, value: 1.5e-9 }],
    },
    {
      name: "x_vm",
      type: "info",
      help: "i",
      samples: [{ suffix: "_info", labels: { name: nasty }, value: 1 }],
    },
  ];
  const text = writeExposition(fams, "text");
  assert.ok(text.includes('vm="a\\\\b\\"c\\nd é"'), text);
  assert.ok(text.includes('# HELP x_events_total help with \\\\ and "quotes"\\nand a newline\n'), text);
  const parsed = parseExposition(text, "text");
  assert.equal(parsed.get("x_events_total")?.type, "counter");
  assert.equal(valueOf(parsed, "x_events_total", { vm: nasty }), 3);
  assert.equal(parsed.get("x_vm_info")?.type, "gauge");
  assert.equal(valueOf(parsed, "x_vm_info", { name: nasty }), 1);
  assert.equal(valueOf(parsed, "x_temp_seconds", {}), 1.5e-9);

  const om = writeExposition(fams, "openmetrics");
  assert.ok(om.endsWith("# EOF\n"));
  const p = parseExposition(om, "openmetrics");
  assert.equal(p.get("x_events")?.type, "counter");
  assert.equal(p.get("x_temp_seconds")?.unit, "seconds");
  assert.equal(p.get("x_vm")?.type, "info");
  assert.equal(valueOf(p, "x_events_total", { vm: nasty }), 3);
  // The parser is strict: a counter family named with _total in OpenMetrics is refused.
  assert.throws(() =>
    parseExposition(om.replace("# TYPE x_events counter", "# TYPE x_events_total counter"), "openmetrics"),
  );
  assert.throws(() => parseExposition(om.replace("# EOF\n", ""), "openmetrics"), /EOF/);
});

test("bad names and a family written twice are refused", () => {
  const f = (name: string, labels: Record<string, string> = {}): Family => ({
    name,
    type: "gauge",
    help: "h",
    samples: [{ suffix: "", labels, value: 1 }],
  });
  assert.throws(() => writeExposition([f("1bad")], "text"), /not valid/);
  assert.throws(() => writeExposition([f("ok", { "bad-label": "x" })], "text"), /label name/);
  assert.throws(() => writeExposition([f("ok", { __reserved: "x" })], "text"), /label name/);
  assert.throws(() => writeExposition([f("ok"), f("ok")], "text"), /twice/);
});

test("Accept: OpenMetrics only when asked for with a q-value at least text's", () => {
  assert.equal(negotiate(undefined), "text");
  assert.equal(negotiate("text/plain;version=0.0.4"), "text");
  // Prometheus 2.x/3.x scrape Accept header (protobuf first, then OpenMetrics, then text).
  assert.equal(
    negotiate(
      "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.6,application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
    ),
    "openmetrics",
  );
  assert.equal(negotiate("application/openmetrics-text;version=1.0.0;q=0.1,text/plain;q=0.9"), "text");
  assert.equal(negotiate("application/openmetrics-text;version=2.0.0"), "text");
});

const desc = (over: Partial<StatDesc>): StatDesc => ({
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
  ...over,
});

test("KVM histograms become cumulative Prometheus histograms in le order, the _ns counter their _sum", () => {
  const hist = desc({
    name: "halt_wait_hist",
    type: "log-hist",
    unit: "seconds",
    exponent: -9,
    scale: 1e-9,
    buckets: 32,
  });
  const ns = desc({ name: "halt_wait_ns", unit: "seconds", exponent: -9, scale: 1e-9 });
  const lin = desc({ name: "lin_hist", type: "linear-hist", buckets: 4, bucketSize: 10 });
  const buckets = new Array<number>(32).fill(0);
  buckets[0] = 2; // zero-length waits
  buckets[24] = 101; // [2^23, 2^24) ns
  buckets[31] = 1; // the last bucket: everything above
  const vm: VmSample = {
    vm: {
      key: "1@1",
      pid: 1,
      startTime: 1,
      name: 'we"ird',
      named: true,
      comm: "x",
      cmdline: [],
      vmm: "qemu",
      vcpus: [0],
      threads: new Map(),
    },
    stats: [
      { desc: hist, value: 104, buckets, vcpus: new Map([[0, { value: 104, buckets }]]) },
      { desc: ns, value: 1_008_978_424, vcpus: new Map([[0, { value: 1_008_978_424 }]]) },
      {
        desc: lin,
        value: 6,
        buckets: [1, 2, 0, 3],
        vcpus: new Map([[0, { value: 6, buckets: [1, 2, 0, 3] }]]),
      },
    ],
    sources: { stats: { used: true } },
    ended: false,
  };
  const snap: Snapshot = { takenAt: 0, monoMs: 0, vms: [vm], sources: [], problems: [], notes: [] };
  const fams = scrapeFamilies(
    { snapshot: snap, collectors: [{ name: "kvm_stats", up: true, seconds: 0.001 }] },
    0.002,
  );
  for (const format of ["text", "openmetrics"] as const) {
    const p = parseExposition(writeExposition(fams, format), format);
    const h = p.get("kvm_vcpu_halt_wait_seconds");
    assert.equal(h?.type, "histogram");
    const b = h.samples.filter((s) => s.name.endsWith("_bucket"));
    assert.equal(b.length, 32, "31 bounded buckets and +Inf");
    assert.deepEqual(b[0].labels, { vm: 'we"ird', pid: "1", vcpu: "0", le: "1e-9" });
    assert.equal(b[0].value, 2);
    assert.equal(b[23].value, 2, "le=2^23 ns: the 10 ms waits are not in yet");
    assert.equal(b[24].labels.le, String(2 ** 24 * 1e-9));
    assert.equal(b[24].value, 103);
    assert.equal(b[31].labels.le, "+Inf");
    assert.equal(b[31].value, 104);
    assert.equal(valueOf(p, "kvm_vcpu_halt_wait_seconds_sum", { vcpu: "0" }), 1_008_978_424 * 1e-9);
    assert.equal(valueOf(p, "kvm_vcpu_halt_wait_seconds_count", { vcpu: "0" }), 104);
    // halt_wait_ns is the histogram's _sum, not also a counter of the same family name.
    assert.equal(valueOf(p, "kvm_vcpu_halt_wait_seconds_total", {}), undefined);
    const l = p.get("kvm_vcpu_lin")!.samples.filter((s) => s.name.endsWith("_bucket"));
    assert.deepEqual(
      l.map((s) => [s.labels.le, s.value]),
      [
        ["10", 1],
        ["20", 3],
        ["30", 3],
        ["+Inf", 6],
      ],
    );
    assert.equal(valueOf(p, "vmtool_exporter_collector_up", { collector: "kvm_stats" }), 1);
  }
});
