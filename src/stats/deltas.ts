// Totals "since the watch started" and deltas "since the last poll", kvm_stat's two numbers, from raw values
// that each source counts from its own origin (binary stats and vmtool's counters from the VM's creation,
// perf counters from their opening). Cumulative stats: total = value - baseline; gauges (instant, peak,
// boolean) are shown as they are. The baseline of a VM present at the first poll is its first value (unless
// the past is included, `-i`); a VM that appears later started after the watch did, so its baseline is 0.
// reset() makes every current value the new baseline (`r`). VMs that end keep their totals in `retired`, so
// that a summary never goes backwards when a guest goes away.
import type { Snapshot, StatDesc, StatSample, VmSample } from "./types.js";

export interface Tracked {
  desc: StatDesc;
  /** Since the baseline (cumulative) or the current value (gauges). */
  total: number;
  /** Since the last poll (0 at a VM's first poll). */
  delta: number;
  /** Histograms: bucket counts since the baseline. */
  buckets?: number[];
  /** vCPU stats: the same per vCPU. */
  vcpus?: Map<number, { total: number; delta: number; buckets?: number[] }>;
}

export interface TrackedVm {
  sample: VmSample;
  stats: Tracked[];
}

export interface TrackedSnapshot {
  snapshot: Snapshot;
  vms: TrackedVm[];
  host?: Tracked[];
  /** Totals of VMs that ended since the watch started (or the last reset), by `source\0name`. */
  retired: Map<string, Tracked>;
  /** ms since the previous poll (0 at the first). */
  elapsedMs: number;
}

const isCounter = (d: StatDesc) =>
  d.type === "cumulative" || d.type === "linear-hist" || d.type === "log-hist";

interface Memory {
  base: number;
  last: number;
  baseBuckets?: number[];
}

export class DeltaTracker {
  private readonly memory = new Map<string, Memory>();
  private readonly seenVms = new Set<string>();
  private first = true;
  private resetPending = false;
  private lastMono: number | undefined;
  private retired = new Map<string, Tracked>();

  constructor(private readonly includePast = false) {}

  /** From the next update on, totals count from the values it sees. */
  reset(): void {
    this.resetPending = true;
    this.retired = new Map();
  }

  update(snapshot: Snapshot): TrackedSnapshot {
    const elapsedMs = this.lastMono === undefined ? 0 : snapshot.monoMs - this.lastMono;
    this.lastMono = snapshot.monoMs;
    const reset = this.resetPending;
    this.resetPending = false;
    const vms: TrackedVm[] = [];
    for (const sample of snapshot.vms) {
      const known = this.seenVms.has(sample.vm.key);
      // Present from the first poll: its past is not ours (unless -i). Appearing later: all of it is.
      const fromNow = reset || (!known && this.first && !this.includePast);
      this.seenVms.add(sample.vm.key);
      const stats = sample.stats.map((s) => this.track(sample.vm.key, s, fromNow));
      vms.push({ sample, stats });
      if (sample.ended) {
        for (const t of stats) if (isCounter(t.desc)) this.retire(t);
        this.forget(sample.vm.key);
      }
    }
    let host: Tracked[] | undefined;
    if (snapshot.host) {
      // Per-CPU perf counters count from their opening, at the first poll: that poll is their baseline.
      const known = this.seenVms.has("host");
      this.seenVms.add("host");
      host = snapshot.host.stats.map((s) => this.track("host", s, reset || !known));
    }
    this.first = false;
    return { snapshot, vms, host, retired: this.retired, elapsedMs };
  }

  private retire(t: Tracked): void {
    const key = `${t.desc.source}\0${t.desc.name}`;
    const r = this.retired.get(key);
    if (!r) this.retired.set(key, { desc: t.desc, total: t.total, delta: 0, buckets: t.buckets?.slice() });
    else {
      r.total += t.total;
      t.buckets?.forEach((b, i) => r.buckets && (r.buckets[i] = (r.buckets[i] ?? 0) + b));
    }
  }

  private forget(vmKey: string): void {
    const prefix = `${vmKey}\0`;
    for (const k of this.memory.keys()) if (k.startsWith(prefix)) this.memory.delete(k);
    this.seenVms.delete(vmKey);
  }

  /**
   * One value. First sight: a counter's baseline is its value when its past is not ours (`fromNow`), else 0
   * (and everything it counted is this poll's delta); a gauge has no baseline.
   */
  private one(key: string, value: number, buckets: number[] | undefined, counter: boolean, fromNow: boolean) {
    let m = this.memory.get(key);
    if (!m) {
      m = counter
        ? {
            base: fromNow ? value : 0,
            last: fromNow ? value : 0,
            baseBuckets: fromNow ? buckets?.slice() : undefined,
          }
        : { base: 0, last: value };
      this.memory.set(key, m);
    } else if (fromNow && counter) {
      m.base = value;
      m.baseBuckets = buckets?.slice();
    }
    // A counter that went backwards restarted underneath (perf counters reopened): count from 0 again.
    if (counter && value < m.last) m.base = m.last = 0;
    if (counter && value < m.base) m.base = 0;
    const total = counter ? value - m.base : value;
    const delta = value - m.last;
    m.last = value;
    const b =
      buckets && counter ? buckets.map((x, i) => Math.max(0, x - (m.baseBuckets?.[i] ?? 0))) : buckets;
    return { total, delta, buckets: b };
  }

  private track(vmKey: string, s: StatSample, fromNow: boolean): Tracked {
    const counter = isCounter(s.desc);
    const key = `${vmKey}\0${s.desc.source}\0${s.desc.name}`;
    const t: Tracked = { desc: s.desc, ...this.one(key, s.value, s.buckets, counter, fromNow) };
    if (s.vcpus) {
      t.vcpus = new Map();
      for (const [v, val] of s.vcpus)
        t.vcpus.set(v, this.one(`${key}\0${v}`, val.value, val.buckets, counter, fromNow));
    }
    return t;
  }
}
