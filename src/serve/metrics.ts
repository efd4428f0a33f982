// What /metrics exports, as metric families: every statistic of every VM the stats layer saw at this scrape
// (named by metricFor(), values in base units, labels vm, pid, vcpu), where each vCPU last ran (the observer),
// one info series per VM and one for the host, and the exporter's own health (each collector's `up`, the
// scrape's duration). Values are the sources' own totals since each VM started: Prometheus computes rates.
import { metricFor, type MetricName } from "../stats/metrics.js";
import { bucketBounds, inUnit } from "../stats/units.js";
import type { Snapshot, StatDesc, StatSample, StatValue, VmSample } from "../stats/types.js";
import { RenderedLabels, type Family, type Labels } from "./exposition.js";
import type { HostFacts, Placement } from "./sources.js";

const SOURCE_HELP: Readonly<Record<string, string>> = {
  stats: "KVM binary statistic (KVM_GET_STATS_FD)",
  vmtool: "vmtool run's live exit counters",
  tracepoints: "perf counter on KVM's tracepoints",
  debugfs: "KVM debugfs file",
};

interface Building {
  family: Family;
  /** Series written already, by their labels (a series is written once: the first VM or stat that gives it). */
  keys: Set<string>;
}

class Families {
  readonly list: Building[] = [];
  private readonly byName = new Map<string, Building>();

  /** The family `name`, made by `make` the first time. `type`: what the caller would make (make() not called). */
  get(name: string, make: () => Omit<Family, "name" | "samples">, type?: Family["type"]): Building {
    let b = this.byName.get(name);
    if (!b) {
      b = { family: { name, samples: [], ...make() }, keys: new Set() };
      this.byName.set(name, b);
      this.list.push(b);
    } else if (b.family.type !== (type ?? make().type))
      throw new Error(`metric family ${name} would be both a ${b.family.type} and a ${type ?? make().type}`);
    return b;
  }

  /** A series of one sample. */
  add(b: Building, s: { suffix: string; labels: Labels; value: number }): void {
    this.addRendered(b, s.suffix, RenderedLabels.of(s.labels), s.value);
  }

  addRendered(b: Building, suffix: string, labels: RenderedLabels, value: number): void {
    if (this.isNew(b, labels)) b.family.samples.push({ suffix, labels, value });
  }

  /** True the first time a family sees these labels. */
  isNew(b: Building, labels: RenderedLabels): boolean {
    if (b.keys.has(labels.text)) return false;
    b.keys.add(labels.text);
    return true;
  }
}

/** What a statistic is exported as, worked out once per descriptor (descriptors are kept by the stats layer). */
interface Exported {
  metric: MetricName;
  name: string;
  unit: string | undefined;
  help: string;
  /** The labels the statistic implies (`reason`), or undefined when there are none. */
  labels: Labels | undefined;
  /** A histogram's `le` text per bucket index (undefined: not worked out yet; null: the last, unbounded one). */
  le: Array<string | null | undefined>;
}

const exported = new WeakMap<StatDesc, Exported>();

function exportedOf(desc: StatDesc): Exported {
  let e = exported.get(desc);
  if (!e) {
    const metric = metricFor(desc);
    const { name, unit } = familyOf(metric.name, metric.type);
    const help = `${SOURCE_HELP[desc.source] ?? desc.source} ${desc.name.replace(/\(.*$/, "")}${
      desc.scope === "vcpu" ? ", per vCPU" : ""
    }${unit ? ` (${unit})` : ""}`;
    const labels = Object.keys(metric.labels).length > 0 ? metric.labels : undefined;
    e = { metric, name, unit, help, labels, le: [] };
    exported.set(desc, e);
  }
  return e;
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

/** One VM's label sets: `vm,pid`, and `vm,pid,vcpu` per vCPU, each written once. */
class VmLabels {
  readonly base: RenderedLabels;
  private readonly vcpus = new Map<number, RenderedLabels>();

  constructor(vm: VmSample) {
    this.base = RenderedLabels.of(vmLabels(vm));
  }

  vcpu(id: number): RenderedLabels {
    let l = this.vcpus.get(id);
    if (!l) this.vcpus.set(id, (l = this.base.with({ vcpu: String(id) })));
    return l;
  }
}

function addStat(fams: Families, vmLabels: VmLabels, s: StatSample, bySum: Map<string, StatSample>) {
  const e = exportedOf(s.desc);
  const m = e.metric;
  if (m.redundant) return;
  const b = fams.get(e.name, () => ({ type: m.type, unit: e.unit, help: e.help }), m.type);
  const vcpus = s.desc.scope === "vcpu" && s.vcpus !== undefined && s.vcpus.size > 0 ? s.vcpus : undefined;
  const sum = m.sumFrom ? bySum.get(`${s.desc.source}\0${m.sumFrom}`) : undefined;
  const suffix = m.type === "counter" ? "_total" : "";
  const one = (labels: RenderedLabels, v: StatValue, sumValue: StatValue | undefined) => {
    if (e.labels) labels = labels.with(e.labels);
    if (m.type === "histogram") addHistogram(fams, b, s.desc, e, labels, v, sumValue);
    else fams.addRendered(b, suffix, labels, inUnit(s.desc, v.value));
  };
  if (vcpus) for (const [vcpu, v] of vcpus) one(vmLabels.vcpu(vcpu), v, sum?.vcpus?.get(vcpu));
  else one(vmLabels.base, s, sum);
}

/** KVM's buckets as Prometheus' cumulative `le` buckets (docs/serve.md: the bucket rule). */
function addHistogram(
  fams: Families,
  b: Building,
  desc: StatDesc,
  e: Exported,
  labels: RenderedLabels,
  v: StatValue,
  sum: StatValue | undefined,
): void {
  if (!fams.isNew(b, labels)) return;
  const samples = b.family.samples;
  const buckets = v.buckets ?? [];
  let acc = 0;
  let count = 0;
  let bounded = true;
  for (let i = 0; i < buckets.length; i++) {
    count += buckets[i];
    if (!bounded) continue;
    acc += buckets[i];
    let le = e.le[i];
    if (le === undefined) {
      const [, high] = bucketBounds(desc, i);
      le = e.le[i] = high === Infinity ? null : String(high);
    }
    if (le === null) bounded = false;
    else samples.push({ suffix: "_bucket", labels, le, value: acc });
  }
  samples.push({ suffix: "_bucket", labels, le: "+Inf", value: count });
  if (sum) samples.push({ suffix: "_sum", labels, value: inUnit(desc, sum.value) });
  samples.push({ suffix: "_count", labels, value: count });
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
      const labels = RenderedLabels.of({ vm: v.vm, pid: String(v.pid), vcpu: String(v.vcpu) });
      if (v.cpu !== null) fams.addRendered(cpu, "", labels, v.cpu);
      if (v.lastSeen !== null) fams.addRendered(seen, "", labels, v.lastSeen);
    }
  }
  for (const vm of p.snapshot?.vms ?? []) {
    const labels = new VmLabels(vm);
    const bySum = new Map(vm.stats.map((s) => [`${s.desc.source}\0${s.desc.name}`, s]));
    // A time histogram's sum is a counter of KVM's own (halt_wait_ns for halt_wait_hist): it is exported as the
    // histogram's _sum only, since as a counter it would have the histogram's family name in OpenMetrics.
    const sums = new Set<string>();
    for (const s of vm.stats) {
      const m = exportedOf(s.desc).metric;
      if (m.type === "histogram" && m.sumFrom) sums.add(`${s.desc.source}\0${m.sumFrom}`);
    }
    for (const s of vm.stats)
      if (!sums.has(`${s.desc.source}\0${s.desc.name}`)) addStat(fams, labels, s, bySum);
  }
  return fams.list.map((b) => b.family);
}
