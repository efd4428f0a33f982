// What `vmtool stat` shows, as rows: the events of the selected VMs summed (kvm_stat's summary, or one VM with
// -p/-g), grouped by where they come from, child events under their parents (`x`), each vCPU under its event
// (`v`), or one row per guest (`b`). Pure functions of a tracked snapshot: no I/O, no terminal.
import type { TrackedSnapshot, Tracked } from "../../stats/deltas.js";
import { combine } from "../../stats/collector.js";
import type { SourceName, StatDesc, VmSample } from "../../stats/types.js";

/** Binary stats and debugfs share KVM's names and meanings: one group. */
export type Group = "kvm" | "vmtool" | "tracepoints";
export const GROUPS: readonly Group[] = ["kvm", "vmtool", "tracepoints"];
export const GROUP_TITLES: Record<Group, string> = {
  kvm: "KVM statistics (binary stats fds, debugfs)",
  vmtool: "vmtool's exit counters (by exit reason, port and MMIO address)",
  tracepoints: "KVM tracepoints (perf counters)",
};
export const groupOf = (s: SourceName): Group => (s === "stats" || s === "debugfs" ? "kvm" : s);

export interface Row {
  /** Unique among the rows: group, event and vCPU. */
  id: string;
  /** The event's name (`kvm_exit(HLT)`), or `vcpu0` / `1234/vcpu0` for a vCPU's row. */
  name: string;
  group: Group;
  desc: StatDesc;
  /** 0 an event, 1 a child event (or a vCPU row of an event), 2 below that. */
  depth: number;
  total: number;
  delta: number;
  buckets?: number[];
  /** Share of the group's total (events) or of the parent's (children, vCPUs); undefined for gauges. */
  percent?: number;
  /** How many vCPUs a boolean's total counts over. */
  vcpus?: number;
  /** For `b`: the guest this row is. */
  pid?: number;
}

export interface GroupRows {
  group: Group;
  rows: Row[];
  /** kvm_stat's Total row: the sum of the group's top-level counts (unit-less counters), and its delta. */
  total: number;
  delta: number;
}

export interface ViewOptions {
  /** Event names to show (anchored, kvm_stat's re.match); parents of shown children are shown too. */
  filter?: RegExp;
  children: boolean;
  perVcpu: boolean;
  sort: "rate" | "total";
  /** Keep events whose total and delta are 0 (-1 and -l list every event; the screen hides them). */
  zeros?: boolean;
}

const isCounter = (d: StatDesc) =>
  d.type === "cumulative" || d.type === "log-hist" || d.type === "linear-hist";
const counts = (d: StatDesc) => d.type === "cumulative" && d.unit === "none";

interface Acc {
  group: Group;
  desc: StatDesc;
  parts: { total: number; delta: number; buckets?: number[] }[];
  vcpus: Map<string, { total: number; delta: number; buckets?: number[] }>;
  vcpuCount: number;
}

/** The VMs a view covers: all of them (pids undefined) or those of `pids`. */
export function selectedVms(t: TrackedSnapshot, pids?: ReadonlySet<number>) {
  return t.vms.filter((v) => !pids || pids.has(v.sample.vm.pid));
}

/** Events summed over the selected VMs (and the host's per-CPU counts, and VMs that ended, in a summary). */
export function eventRows(t: TrackedSnapshot, opts: ViewOptions, pids?: ReadonlySet<number>): GroupRows[] {
  const vms = selectedVms(t, pids);
  const acc = new Map<string, Acc>();
  const several = vms.length > 1;
  const add = (tr: Tracked, vm?: VmSample) => {
    const group = groupOf(tr.desc.source);
    const key = `${group}\0${tr.desc.name}`;
    let a = acc.get(key);
    if (!a) acc.set(key, (a = { group, desc: tr.desc, parts: [], vcpus: new Map(), vcpuCount: 0 }));
    a.parts.push(tr);
    if (vm) a.vcpuCount += tr.vcpus?.size ?? vm.vm.vcpus.length;
    if (vm && tr.vcpus)
      for (const [v, val] of tr.vcpus) a.vcpus.set(several ? `${vm.vm.pid}/vcpu${v}` : `vcpu${v}`, val);
  };
  // In a summary, a VM that ended counts through `retired` (which holds its last totals), not twice.
  for (const v of vms) if (pids || !v.sample.ended) for (const tr of v.stats) add(tr, v.sample);
  if (!pids) {
    for (const tr of t.host ?? []) add(tr);
    for (const tr of t.retired.values()) add(tr);
  }
  const wanted = (name: string) => !opts.filter || opts.filter.test(name);
  const out: GroupRows[] = [];
  for (const group of GROUPS) {
    const all = [...acc.values()].filter((a) => a.group === group);
    if (all.length === 0) continue;
    const rowOf = (a: Acc): Row => {
      const c = combineParts(a.desc, a.parts);
      return {
        id: `${group}\0${a.desc.name}`,
        name: a.desc.name,
        group,
        desc: a.desc,
        depth: 0,
        ...c,
        vcpus: a.desc.unit === "boolean" ? a.vcpuCount : undefined,
      };
    };
    const byName = new Map(all.map((a) => [a.desc.name, a]));
    // A child is shown if it passes the filter (and `x` is on); it pulls its parents in.
    const shown = new Set<string>();
    for (const a of all) {
      if (!wanted(a.desc.name)) continue;
      if (a.desc.parent && !opts.children) continue;
      shown.add(a.desc.name);
      for (let p = a.desc.parent; p; p = byName.get(p)?.desc.parent) shown.add(p);
    }
    const rows = [...shown]
      .flatMap((n) => {
        const a = byName.get(n);
        return a ? [rowOf(a)] : [];
      })
      .filter((r) => opts.zeros || r.total !== 0 || r.delta !== 0);
    const children = new Map<string, Row[]>();
    const top: Row[] = [];
    for (const r of rows) {
      const parent = r.desc.parent && shown.has(r.desc.parent) ? r.desc.parent : undefined;
      if (parent) children.set(parent, [...(children.get(parent) ?? []), r]);
      else top.push(r);
    }
    const order = (a: Row, b: Row) =>
      opts.sort === "rate" ? b.delta - a.delta || b.total - a.total : b.total - a.total || b.delta - a.delta;
    const groupTotal = top.filter((r) => counts(r.desc)).reduce((s, r) => s + r.total, 0);
    const groupDelta = top.filter((r) => counts(r.desc)).reduce((s, r) => s + r.delta, 0);
    const list: Row[] = [];
    const place = (r: Row, depth: number, parentTotal: number) => {
      r.depth = depth;
      if (isCounter(r.desc) && r.desc.unit !== "seconds")
        r.percent = parentTotal > 0 ? (100 * r.total) / parentTotal : 0;
      list.push(r);
      const a = byName.get(r.name);
      if (opts.perVcpu && a) {
        for (const [label, v] of [...a.vcpus].sort((x, y) => naturalOrder(x[0], y[0]))) {
          if (!opts.zeros && v.total === 0 && v.delta === 0 && a.desc.unit !== "boolean") continue;
          list.push({
            id: `${r.id}\0${label}`,
            name: label,
            group,
            desc: a.desc,
            depth: depth + 1,
            total: v.total,
            delta: v.delta,
            buckets: v.buckets,
            percent:
              isCounter(a.desc) && a.desc.unit !== "seconds" && r.total > 0
                ? (100 * v.total) / r.total
                : undefined,
            vcpus: a.desc.unit === "boolean" ? 1 : undefined,
          });
        }
      }
      for (const c of (children.get(r.name) ?? []).sort(order)) place(c, depth + 1, r.total);
    };
    for (const r of top.sort(order)) place(r, 0, groupTotal);
    if (list.length > 0) out.push({ group, rows: list, total: groupTotal, delta: groupDelta });
  }
  return out;
}

function combineParts(desc: StatDesc, parts: { total: number; delta: number; buckets?: number[] }[]) {
  const t = combine(
    desc.type,
    parts.map((p) => ({ value: p.total, buckets: p.buckets })),
  );
  const d = combine(
    desc.type === "peak" ? "peak" : "cumulative",
    parts.map((p) => ({ value: p.delta })),
  );
  return { total: t.value, delta: d.value, buckets: t.buckets };
}

function naturalOrder(a: string, b: string): number {
  return a.localeCompare(b, "en", { numeric: true });
}

/** `b`: one row per guest, its events summed (those passing the filter; without a filter, its exits). */
export function guestRows(t: TrackedSnapshot, opts: ViewOptions): { rows: Row[]; event: string } {
  const rows: Row[] = [];
  let event = opts.filter ? "events matching the filter" : "exits";
  for (const v of t.vms) {
    // One source per guest, so that nothing is counted twice: binary stats, else vmtool's, else tracepoints.
    const pick = (group: Group) => v.stats.filter((s) => groupOf(s.desc.source) === group && counts(s.desc));
    const groups = (["kvm", "vmtool", "tracepoints"] as const).map(pick).filter((g) => g.length > 0);
    const chosen = groups[0] ?? [];
    const exitsName = (n: string) =>
      n === "exits" || n === "vmtool_exits" || n === "kvm_userspace_exit" || n === "kvm_exit";
    const parts = chosen.filter((s) =>
      opts.filter ? !s.desc.parent && opts.filter.test(s.desc.name) : exitsName(s.desc.name),
    );
    const total = parts.reduce((s, p) => s + p.total, 0);
    const delta = parts.reduce((s, p) => s + p.delta, 0);
    if (parts.length === 0 && opts.filter) continue;
    rows.push({
      id: `guest\0${v.sample.vm.key}`,
      name: `${v.sample.vm.name} [${v.sample.vm.pid}]${v.sample.ended ? " (ended)" : ""}`,
      group: groupOf(chosen[0]?.desc.source ?? "stats"),
      desc: chosen[0]?.desc ?? PLAIN,
      depth: 0,
      total,
      delta,
      pid: v.sample.vm.pid,
    });
  }
  const sum = rows.reduce((s, r) => s + r.total, 0);
  for (const r of rows) r.percent = sum > 0 ? (100 * r.total) / sum : 0;
  rows.sort((a, b) =>
    opts.sort === "rate" ? b.delta - a.delta || b.total - a.total : b.total - a.total || b.delta - a.delta,
  );
  if (rows.length === 0) event = "nothing yet";
  return { rows, event };
}

const PLAIN: StatDesc = {
  name: "",
  source: "stats",
  scope: "vm",
  type: "cumulative",
  unit: "none",
  base: 10,
  exponent: 0,
  scale: 1,
  buckets: 0,
  bucketSize: 0,
};

/** Flat `name -> [total, delta]` of every event (children and vCPU rows as `name/vcpuN`), for -1 and -l. */
export function flatEvents(t: TrackedSnapshot, pids: ReadonlySet<number> | undefined, opts: ViewOptions) {
  const out = new Map<string, { total: number; delta: number; desc: StatDesc }>();
  for (const g of eventRows(t, { ...opts, children: true, zeros: true }, pids)) {
    const parents: string[] = [];
    for (const r of g.rows) {
      parents[r.depth] = r.name;
      const isVcpu = r.id.split("\0").length > 2;
      const name = isVcpu ? `${parents[r.depth - 1]}/${r.name}` : r.name;
      const key = out.has(name) ? `${g.group}:${name}` : name;
      out.set(key, { total: r.total, delta: r.delta, desc: r.desc });
    }
  }
  return out;
}
