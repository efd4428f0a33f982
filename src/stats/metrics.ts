// Prometheus metric names for every statistic (the exporter of `vmtool serve` writes these; docs/stat.md has
// the table). Prometheus' rules: base units in the name (`_seconds`, `_bytes`), `_total` on counters, labels
// for dimensions (reason, port, event), never a label name inside a metric name. Per-VM labels (`vm`, `pid`)
// and `vcpu` are the exporter's; the ones a statistic itself implies are given here.
import type { StatDesc } from "./types.js";

export interface MetricName {
  name: string;
  type: "counter" | "gauge" | "histogram";
  /** Labels that come from the statistic itself (`reason="IO"`). */
  labels: Record<string, string>;
  /** For a histogram: the counter whose value (in the same unit) is its `_sum`, when the source has one. */
  sumFrom?: string;
  /** The sum of other series of the same name (vmtool's exit total: the sum over reasons): not exported. */
  redundant?: true;
}

const clean = (s: string) => s.replace(/[^a-zA-Z0-9_]/g, "_");

/** `halt_wait_ns` -> `halt_wait`, with the unit's base-unit suffix. */
function withUnit(name: string, desc: StatDesc): string {
  if (desc.unit === "seconds") return `${name.replace(/_ns$|_us$|_ms$/, "")}_seconds`;
  if (desc.unit === "bytes") return `${name.replace(/_bytes$/, "")}_bytes`;
  if (desc.unit === "cycles") return `${name.replace(/_cycles$/, "")}_cycles`;
  return name;
}

/** The metric a statistic is exported as. */
export function metricFor(desc: StatDesc): MetricName {
  const counter = desc.type === "cumulative";
  const hist = desc.type === "log-hist" || desc.type === "linear-hist";
  const type = hist ? "histogram" : counter ? "counter" : "gauge";
  const total = counter ? "_total" : "";
  if (desc.source === "vmtool") {
    const reason = /^vmtool_exits\((\w+)\)$/.exec(desc.name);
    if (desc.name === "vmtool_exits")
      return { name: "vmtool_vcpu_exits_total", type, labels: {}, redundant: true };
    if (reason) return { name: "vmtool_vcpu_exits_total", type, labels: { reason: reason[1] } };
    const addr = /^vmtool_(io|mmio)\((0x[0-9a-f]+),(in|out|read|write)\)$/.exec(desc.name);
    if (addr)
      return {
        name: addr[1] === "io" ? "vmtool_vcpu_port_exits_total" : "vmtool_vcpu_mmio_exits_total",
        type,
        labels: { [addr[1] === "io" ? "port" : "address"]: addr[2], direction: addr[3] },
      };
    const other = /^vmtool_(io|mmio)\(other\)$/.exec(desc.name);
    if (other)
      return {
        name: other[1] === "io" ? "vmtool_vcpu_port_exits_total" : "vmtool_vcpu_mmio_exits_total",
        type,
        labels: { [other[1] === "io" ? "port" : "address"]: "other" },
      };
    return { name: `vmtool_vcpu_${clean(desc.name)}${total}`, type, labels: {} };
  }
  if (desc.source === "tracepoints") {
    const child = /^(\w+)\((\w+)\)$/.exec(desc.name);
    return child
      ? {
          name: "kvm_tracepoint_events_total",
          type: "counter",
          labels: { event: child[1], reason: child[2] },
        }
      : { name: "kvm_tracepoint_events_total", type: "counter", labels: { event: desc.name } };
  }
  const prefix = desc.source === "debugfs" ? "kvm_debugfs" : desc.scope === "vcpu" ? "kvm_vcpu" : "kvm_vm";
  if (hist) {
    const base = clean(desc.name).replace(/_hist$/, "");
    // KVM keeps each time histogram's sum as the counter of the same stem: halt_wait_hist / halt_wait_ns.
    const sumFrom = desc.unit === "seconds" ? `${base}_ns` : undefined;
    return { name: `${prefix}_${withUnit(base, desc)}`, type, labels: {}, sumFrom };
  }
  return { name: `${prefix}_${withUnit(clean(desc.name), desc)}${total}`, type, labels: {} };
}
