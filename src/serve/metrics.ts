// What /metrics exports, as metric families: every statistic of every VM the stats layer saw at this scrape
// (named by metricFor(), values in base units, labels vm, pid, vcpu), where each vCPU last ran (the observer),
// one info series per VM and one for the host, and the exporter's own health (each collector's `up`, the
// scrape's duration). Values are the sources' own totals since each VM started: Prometheus computes rates.
import { metricFor } from "../stats/metrics.js";
import { bucketBounds, inUnit } from "../stats/units.js";
import type { Snapshot, StatDesc, StatSample, StatValue, VmSample } from "../stats/types.js";
import type { Family, Labels, Sample } from "./exposition.js";
import type { HostFacts, Placement } from "./sources.js";

const SOURCE_HELP: Readonly<Record<string, string>> = {
  stats: "KVM binary statistic (KVM_GET_STATS_FD)",
  vmtool: "vmtool run's live exit counters",
  tracepoints: "perf counter on KVM's tracepoints",
  debugfs: "KVM debugfs file",
};

interface Building {
  family: Family;
  /** Label sets written already (a series is written once). */
  keys: Set<string>;
}

class Families {
  readonly list: Building[] = [];
  private readonly byName = new Map<string, Building>();

  get(name: string, make: () => Omit<Family, "name" | "samples">): Building {
    let b = this.byName.get(name);
    if (!b) {
      b = { family: { name, samples: [], ...make() }, keys: new Set() };
      this.byName.set(name, b);
      this.list.push(b);
    } else if (b.family.type !== make().type)
      throw new Error(`metric family ${name} would be both a ${b.family.type} and a ${make().type}`);
    return b;
  }

  add(b: Building, s: Sample): void {
    const key = `${s.suffix}\0${JSON.stringify(s.labels)}`;
    if (b.keys.has(key)) return;
    b.keys.add(key);
    b.family.samples.push(s);
  }
}

/** `kvm_vcpu_halt_wait_seconds_total` -> family `kvm_vcpu_halt_wait_seconds`, unit `seconds`. */
function familyOf(metric: string, type: "counter" | "gauge" | "histogram") {
  const name = type === "counter" ? metric.replace(/_total$/, "") : metric;
  const unit = /_(seconds|bytes)$/.exec(name)?.[1];
  return { name, unit };
}

function vmLabels(vm: VmSample): Record<string, string> {
  return { vm: vm.vm.name, pid: String(vm.vm.pid) };
}

function addStat(
  fams: Families,
  base: Record<string, string>,
  s: StatSample,
  bySum: Map<string, StatSample>,
) {
  const m = metricFor(s.desc);
  if (m.redundant) return;
  const { name, unit } = familyOf(m.name, m.type);
  const b = fams.get(name, () => ({
    type: m.type,
    unit,
    help: `${SOURCE_HELP[s.desc.source] ?? s.desc.source} ${s.desc.name.replace(/\(.*$/, "")}${
      s.desc.scope === "vcpu" ? ", per vCPU" : ""
    }${unit ? ` (${unit})` : ""}`,
  }));
  const vcpus = s.desc.scope === "vcpu" && s.vcpus !== undefined && s.vcpus.size > 0 ? s.vcpus : undefined;
  const series: Array<[Record<string, string>, StatValue, StatValue | undefined]> = [];
  const sum = m.sumFrom ? bySum.get(`${s.desc.source}\0${m.sumFrom}`) : undefined;
  if (vcpus)
    for (const [vcpu, v] of vcpus)
      series.push([{ ...base, vcpu: String(vcpu), ...m.labels }, v, sum?.vcpus?.get(vcpu)]);
  else series.push([{ ...base, ...m.labels }, s, sum]);
  for (const [labels, v, sumValue] of series) {
    if (m.type === "histogram") addHistogram(fams, b, s.desc, labels, v, sumValue);
    else
      fams.add(b, { suffix: m.type === "counter" ? "_total" : "", labels, value: inUnit(s.desc, v.value) });
  }
}

/** KVM's buckets as Prometheus' cumulative `le` buckets (docs/serve.md: the bucket rule). */
function addHistogram(
  fams: Families,
  b: Building,
  desc: StatDesc,
  labels: Labels,
  v: StatValue,
  sum: StatValue | undefined,
): void {
  const buckets = v.buckets ?? [];
  let acc = 0;
  for (let i = 0; i < buckets.length; i++) {
    acc += buckets[i];
    const [, high] = bucketBounds(desc, i);
    if (high === Infinity) break;
    fams.add(b, { suffix: "_bucket", labels: { ...labels, le: String(high) }, value: acc });
  }
  const count = buckets.reduce((s, x) => s + x, 0);
  fams.add(b, { suffix: "_bucket", labels: { ...labels, le: "+Inf" }, value: count });
  if (sum) fams.add(b, { suffix: "_sum", labels, value: inUnit(desc, sum.value) });
  fams.add(b, { suffix: "_count", labels, value: count });
}

export interface ScrapeParts {
  snapshot?: Snapshot;
  placement?: Placement;
  host?: HostFacts;
  /** Each collector's health and its time in seconds. */
  collectors: Array<{ name: string; up: boolean; seconds: number }>;
}

/** Every family of one scrape, in a stable order (vmtool's own first, then each statistic as first seen). */
export function scrapeFamilies(p: ScrapeParts, scrapeSeconds: number): Family[] {
  const fams = new Families();
  const up = fams.get("vmtool_exporter_collector_up", () => ({
    type: "gauge",
    help: "1 when the collector's last read worked (kvm_stats, placement, host), else 0",
  }));
  const dur = fams.get("vmtool_exporter_collector_duration_seconds", () => ({
    type: "gauge",
    unit: "seconds",
    help: "time each collector took at this scrape",
  }));
  for (const c of p.collectors) {
    fams.add(up, { suffix: "", labels: { collector: c.name }, value: c.up ? 1 : 0 });
    fams.add(dur, { suffix: "", labels: { collector: c.name }, value: c.seconds });
  }
  fams.add(
    fams.get("vmtool_exporter_scrape_duration_seconds", () => ({
      type: "gauge",
      unit: "seconds",
      help: "time this scrape took to collect, all collectors together",
    })),
    { suffix: "", labels: {}, value: scrapeSeconds },
  );
  if (p.host) {
    const h = p.host;
    fams.add(
      fams.get("vmtool_host", () => ({
        type: "info",
        help: "the host: CPU vendor and model, hardware virtualization (vmx, svm or none), the KVM module, vmtool host's verdict",
      })),
      {
        suffix: "_info",
        labels: {
          vendor: h.vendor,
          model: h.model,
          virtualization: h.virtualization,
          kvm_module: h.modules.join(",") || "none",
          can_run_vms: h.canRunVms ? "yes" : "no",
        },
        value: 1,
      },
    );
    const param = fams.get("vmtool_kvm_module_parameter", () => ({
      type: "info",
      help: "each parameter of the loaded KVM modules (/sys/module/<module>/parameters)",
    }));
    for (const [module, params] of Object.entries(h.parameters))
      for (const [parameter, value] of Object.entries(params))
        fams.add(param, { suffix: "_info", labels: { module, parameter, value }, value: 1 });
  }
  if (p.snapshot) {
    const src = fams.get("vmtool_stats_source_available", () => ({
      type: "gauge",
      help: "1 when a source of statistics works on this host for this user (stats, vmtool, tracepoints, debugfs)",
    }));
    for (const r of p.snapshot.sources)
      fams.add(src, { suffix: "", labels: { source: r.source }, value: r.available ? 1 : 0 });
    const info = fams.get("vmtool_vm", () => ({
      type: "info",
      help: "one series per VM process: its name, pid, VMM, vCPU count and the sources that gave its numbers",
    }));
    for (const vm of p.snapshot.vms) {
      const used = Object.entries(vm.sources)
        .filter(([, u]) => u?.used)
        .map(([s]) => s);
      fams.add(info, {
        suffix: "_info",
        labels: {
          ...vmLabels(vm),
          vmm: vm.vm.vmm,
          vcpus: String(vm.vm.vcpus.length),
          source: used.join(",") || "none",
        },
        value: 1,
      });
    }
  }
  if (p.placement?.vcpus.length) {
    const cpu = fams.get("vmtool_vcpu_last_host_cpu", () => ({
      type: "gauge",
      help: "the host CPU each vCPU's thread last ran on (the observer: /proc/<pid>/task/<tid>/stat field 39)",
    }));
    const seen = fams.get("vmtool_vcpu_last_seen_timestamp_seconds", () => ({
      type: "gauge",
      unit: "seconds",
      help: "when each vCPU was last seen running (its thread's CPU time advanced), POSIX time",
    }));
    for (const v of p.placement.vcpus) {
      const labels = { vm: v.vm, pid: String(v.pid), vcpu: String(v.vcpu) };
      if (v.cpu !== null) fams.add(cpu, { suffix: "", labels, value: v.cpu });
      if (v.lastSeen !== null) fams.add(seen, { suffix: "", labels, value: v.lastSeen });
    }
  }
  for (const vm of p.snapshot?.vms ?? []) {
    const base = vmLabels(vm);
    const bySum = new Map(vm.stats.map((s) => [`${s.desc.source}\0${s.desc.name}`, s]));
    // A time histogram's sum is a counter of KVM's own (halt_wait_ns for halt_wait_hist): it is exported as the
    // histogram's _sum only, since as a counter it would have the histogram's family name in OpenMetrics.
    const sums = new Set<string>();
    for (const s of vm.stats) {
      const m = metricFor(s.desc);
      if (m.type === "histogram" && m.sumFrom) sums.add(`${s.desc.source}\0${m.sumFrom}`);
    }
    for (const s of vm.stats)
      if (!sums.has(`${s.desc.source}\0${s.desc.name}`)) addStat(fams, base, s, bySum);
  }
  return fams.list.map((b) => b.family);
}
