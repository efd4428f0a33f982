// Everything `vmtool serve` reads, behind one object that the scrape and the dashboard's stream share: the
// stats layer's collector (every VM, every source), the observer (where each vCPU's thread ran, from KVM's
// debugfs and /proc), and the host's facts (`vmtool host`'s report and the VMX capabilities decoded). Each is a
// collector of its own with its own health: one that fails leaves the others' numbers intact.
import { readFileSync } from "node:fs";
import { StatsCollector, type BinaryStatFilter, type CollectorOptions } from "../stats/collector.js";
import type { Snapshot } from "../stats/types.js";
import { DEFAULT_DEBUGFS, openSource } from "../observer/debugfs.js";
import type { Poll, Source } from "../observer/types.js";
import { hostReport, type Check } from "../host/checks.js";
import { readVmxValues } from "../host/vmx-source.js";
import { decodeAll } from "../arch/vmx/decode.js";

/** One vCPU's placement: where its thread last ran, and when it was last seen running there. */
export interface VcpuPlace {
  pid: number;
  vm: string;
  vcpu: number;
  tid: number;
  /** The host CPU its thread last ran on, or null (never ran yet). */
  cpu: number | null;
  /** POSIX seconds it was last seen running anywhere, or null. */
  lastSeen: number | null;
  /** Every host CPU it was seen on, with when (POSIX seconds; null: placed there, not seen running). */
  seen: Array<{ cpu: number; lastSeen: number | null }>;
}

export interface Placement {
  takenAt: number;
  /** Host CPUs a vCPU ran on, ascending. */
  cpus: number[];
  onlineCpus: number;
  vcpus: VcpuPlace[];
}

export interface HostFacts {
  vendor: string;
  model: string;
  virtualization: "vmx" | "svm" | "none";
  modules: string[];
  parameters: Record<string, Record<string, string>>;
  verdict: string;
  canRunVms: boolean;
  checks: Check[];
  /** The extension's capabilities decoded: VMX's capability MSRs field by field, or SVM's CPUID features. */
  capabilities: {
    kind: "vmx" | "svm" | "none";
    from: string;
    groups: Array<{ name: string; fields: Array<{ name: string; value: string }> }>;
    note?: string;
  };
}

export interface Collected<T> {
  value?: T;
  error?: string;
  seconds: number;
}

/** Host facts change with a module reload at most: read again after this long. */
const HOST_TTL_MS = 60_000;

function time<T>(fn: () => T): Collected<T> {
  const t0 = process.hrtime.bigint();
  try {
    const value = fn();
    return { value, seconds: Number(process.hrtime.bigint() - t0) / 1e9 };
  } catch (e) {
    return {
      error: e instanceof Error ? e.message : String(e),
      seconds: Number(process.hrtime.bigint() - t0) / 1e9,
    };
  }
}

function readHost(): HostFacts {
  const r = hostReport();
  const parameters: Record<string, Record<string, string>> = {};
  for (const b of r.backends) parameters[b.module] = b.parameters;
  const facts: HostFacts = {
    vendor: r.cpu.vendor,
    model: r.cpu.modelName ?? "",
    virtualization: r.virtualization ?? "none",
    modules: r.backends.map((b) => b.module),
    parameters,
    verdict: r.verdict,
    canRunVms: r.canRunVms,
    checks: r.checks,
    capabilities: { kind: "none", from: "", groups: [] },
  };
  if (r.virtualization === "svm" && r.svm) {
    facts.capabilities = {
      kind: "svm",
      from: "CPUID 0x8000000A",
      groups: [
        {
          name: `SVM revision ${r.svm.revision}, ${r.svm.asids} ASIDs`,
          fields: r.svm.features.map((f) => ({ name: f, value: "yes" })),
        },
      ],
    };
  } else {
    try {
      const values = readVmxValues({ source: "auto" });
      facts.capabilities = {
        kind: "vmx",
        from: values.from,
        groups: decodeAll(values.msrs).map((g) => ({
          name: g.name,
          fields: g.fields.map((f) => ({
            name: f.name,
            value: typeof f.value === "boolean" ? (f.value ? "yes" : "no") : String(f.value),
          })),
        })),
      };
    } catch (e) {
      facts.capabilities = {
        kind: "none",
        from: "",
        groups: [],
        note: `no VMX or SVM capabilities to decode: ${e instanceof Error ? e.message : String(e)}`,
      };
    }
  }
  return facts;
}

/** Host CPUs (the highest online one + 1), for the map's columns. */
function onlineCpus(): number {
  try {
    const text = readFileSync("/sys/devices/system/cpu/online", "utf8").trim();
    return Math.max(...text.split(",").map((p) => Number(p.split("-").pop()))) + 1;
  } catch {
    return 1;
  }
}

export interface SourcesOptions {
  collector?: CollectorOptions;
  /** debugfs's mount point, for the observer. */
  debugfs?: string;
}

export class ServeSources {
  readonly stats: StatsCollector;
  private observer: Source | undefined;
  private observerError: string | undefined;
  private observerTriedAt = 0;
  private host: { at: number; got: Collected<HostFacts> } | undefined;
  private readonly debugfs: string;
  private readonly cpusOnline = onlineCpus();
  /** Names by pid, from the last stats poll (the observer names VMs the same way; this keeps them equal). */
  private names = new Map<number, string>();

  constructor(opts: SourcesOptions = {}) {
    // Tracepoints per VM thread, never per host CPU: a series belongs to a VM. Exited VMMs are looked for once a
    // second between polls (a dashboard polls every second anyway; their copied fds are closed within that).
    this.stats = new StatsCollector({ tracepointScope: "vms", reapIntervalMs: 1000, ...opts.collector });
    this.debugfs = opts.debugfs ?? DEFAULT_DEBUGFS;
  }

  /** Every VM's statistics now; `only`: of KVM's binary statistics, just these (the dashboard's). */
  pollStats(only?: BinaryStatFilter): Collected<Snapshot> {
    const got = time(() => this.stats.poll(only));
    if (got.value) this.names = new Map(got.value.vms.map((v) => [v.vm.pid, v.vm.name]));
    return got;
  }

  hostFacts(): Collected<HostFacts> {
    const now = Date.now();
    if (!this.host || now - this.host.at > HOST_TTL_MS || this.host.got.error)
      this.host = { at: now, got: time(readHost) };
    return this.host.got;
  }

  /** The observer's view: KVM's debugfs VM folders and each vCPU thread's /proc stat. */
  placement(): Collected<Placement> {
    return time(() => {
      if (!this.observer) {
        // Opening fails without root or debugfs: try again at most every 10 s, and say why meanwhile.
        if (this.observerError && Date.now() - this.observerTriedAt < 10_000)
          throw new Error(this.observerError);
        this.observerTriedAt = Date.now();
        try {
          this.observer = openSource({ source: "kvm", debugfs: this.debugfs });
          this.observerError = undefined;
        } catch (e) {
          this.observerError = e instanceof Error ? e.message : String(e);
          throw e;
        }
      }
      return this.toPlacement(this.observer.poll());
    });
  }

  private toPlacement(poll: Poll): Placement {
    const seenBy = new Map<string, Array<{ cpu: number; lastSeen: number | null }>>();
    for (const s of poll.sightings) {
      let l = seenBy.get(s.vcpu);
      if (!l) seenBy.set(s.vcpu, (l = []));
      l.push({ cpu: s.cpu, lastSeen: s.lastSeen });
    }
    const vcpus: VcpuPlace[] = [];
    for (const vm of poll.vms ?? [])
      for (const v of vm.vcpus) {
        const seen = (seenBy.get(v.id) ?? []).sort((a, b) => a.cpu - b.cpu);
        const times = seen.map((s) => s.lastSeen).filter((x): x is number => x !== null);
        vcpus.push({
          pid: vm.pid,
          vm: this.names.get(vm.pid) ?? vm.name,
          vcpu: v.index,
          tid: v.tid,
          cpu: v.cpu,
          lastSeen: times.length ? Math.max(...times) : null,
          seen,
        });
      }
    return { takenAt: poll.takenAt, cpus: poll.cpus, onlineCpus: this.cpusOnline, vcpus };
  }

  close(): void {
    this.stats.close();
    (this.observer as { close?: () => void } | undefined)?.close?.();
  }
}
