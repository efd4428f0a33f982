// `vmtool stat --json`: one object per interval (JSON lines), every VM with every event (and each vCPU's
// values), raw values with their unit and scale, so that a consumer never guesses what a number is.
import type { Tracked, TrackedSnapshot } from "../../stats/deltas.js";
import { metricFor } from "../../stats/metrics.js";
import { flatEvents } from "./view.js";

export interface JsonOptions {
  pids?: ReadonlySet<number>;
  filter?: RegExp;
  perVcpu: boolean;
}

const round = (v: number) => Math.round(v * 1000) / 1000;

function eventJson(t: Tracked, seconds: number, perVcpu: boolean) {
  const d = t.desc;
  return {
    name: d.name,
    source: d.source,
    type: d.type,
    unit: d.unit,
    /** The value in `unit` is raw × scale. */
    scale: d.scale,
    ...(d.parent ? { parent: d.parent } : {}),
    ...(d.exit ? { exitReason: d.exit } : {}),
    metric: metricFor(d).name,
    total: t.total,
    delta: t.delta,
    rate: seconds > 0 && d.type !== "instant" && d.type !== "peak" ? round(t.delta / seconds) : null,
    ...(t.buckets ? { buckets: t.buckets } : {}),
    ...(perVcpu && t.vcpus
      ? {
          vcpus: Object.fromEntries(
            [...t.vcpus].map(([v, x]) => [
              String(v),
              { total: x.total, delta: x.delta, ...(x.buckets ? { buckets: x.buckets } : {}) },
            ]),
          ),
        }
      : {}),
  };
}

export function snapshotJson(t: TrackedSnapshot, opts: JsonOptions): unknown {
  const seconds = t.elapsedMs / 1000;
  const keep = (x: Tracked) => !opts.filter || opts.filter.test(x.desc.name);
  const vms = t.vms
    .filter((v) => !opts.pids || opts.pids.has(v.sample.vm.pid))
    .map((v) => {
      const vm = v.sample.vm;
      return {
        pid: vm.pid,
        name: vm.name,
        comm: vm.comm,
        vmm: vm.vmm,
        key: vm.key,
        ended: v.sample.ended,
        cmdline: vm.cmdline,
        vcpus: vm.vcpus,
        threads: Object.fromEntries([...vm.threads].map(([c, tid]) => [String(c), tid])),
        sources: v.sample.sources,
        events: v.stats.filter(keep).map((x) => eventJson(x, seconds, opts.perVcpu)),
      };
    });
  const summary = Object.fromEntries(
    [...flatEvents(t, opts.pids, { filter: opts.filter, children: true, perVcpu: false, sort: "total" })].map(
      ([name, e]) => [name, { total: e.total, delta: e.delta }],
    ),
  );
  return {
    time: new Date(t.snapshot.takenAt).toISOString(),
    seconds: round(seconds),
    vms,
    ...(t.host && !opts.pids
      ? {
          host: {
            cpus: t.snapshot.host?.cpus ?? [],
            events: t.host.filter(keep).map((x) => eventJson(x, seconds, false)),
          },
        }
      : {}),
    summary,
    sources: t.snapshot.sources,
    notes: t.snapshot.notes,
    problems: t.snapshot.problems,
  };
}
