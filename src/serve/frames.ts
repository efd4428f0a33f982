// The dashboard's data: one frame per interval for every VM (exits per second by reason, halt time, the
// per-port and per-address rows of vmtool VMs) and the vCPU map, each number with the source it came from.
// Rates are differences between this frame's poll and the previous one of the same VM (a VM's first frame has
// none); what is kept between frames is only the VMs of the last poll.
import type { BinaryStatFilter } from "../stats/collector.js";
import type { Snapshot, StatSample, VmSample } from "../stats/types.js";
import type { Placement } from "./sources.js";

export interface VmFrame {
  key: string;
  pid: number;
  name: string;
  vmm: string;
  vcpus: number[];
  ended: boolean;
  /** Sources that gave this VM's numbers. */
  sources: string[];
  /** Exits per second by exit reason (null on a VM's first frame), from `exitsSource`. */
  exits: {
    source: string;
    what: string;
    rates: Record<string, number> | null;
    totals: Record<string, number>;
  };
  /** KVM's own exit counter (binary stats), all reasons together. */
  kvmExits: { total: number; rate: number | null } | null;
  /** Seconds of halt per second, summed over vCPUs (1 = one vCPU halted all the time). */
  halt: { source: string; rate: number | null; totalSeconds: number } | null;
  /** vmtool VMs: exits per port and MMIO address, the busiest first (at most ROWS). */
  rows: Array<{
    kind: "port" | "mmio";
    address: string;
    direction: string;
    total: number;
    rate: number | null;
  }>;
}

export interface Frame {
  id: number;
  /** ms since the epoch. */
  t: number;
  vms: VmFrame[];
  placement: Placement | { error: string };
  statsError?: string;
}

const ROWS = 16;

/** The KVM binary statistics a frame uses (vmFrame below): a dashboard poll decodes only these. */
export const FRAME_BINARY_STATS: BinaryStatFilter = (name) => name === "exits" || name === "halt_wait_ns";

export const SOURCE_WORDS: Readonly<Record<string, string>> = {
  vmtool: "vmtool run's exit counters",
  stats: "KVM binary stats (KVM_GET_STATS_FD)",
  tracepoints: "KVM tracepoints (perf counters)",
  debugfs: "KVM debugfs",
};

interface Memory {
  mono: number;
  values: Map<string, number>;
}

export class FrameMaker {
  private memory = new Map<string, Memory>();
  private nextId = 1;

  constructor(first = 1) {
    this.nextId = first;
  }

  make(
    snap: Snapshot | undefined,
    statsError: string | undefined,
    placement: Placement | { error: string },
  ): Frame {
    const next = new Map<string, Memory>();
    const vms: VmFrame[] = [];
    for (const vm of snap?.vms ?? []) {
      const prev = this.memory.get(vm.vm.key);
      const mem: Memory = { mono: snap?.monoMs ?? 0, values: new Map() };
      vms.push(vmFrame(vm, prev, mem));
      if (!vm.ended) next.set(vm.vm.key, mem);
    }
    this.memory = next;
    return {
      id: this.nextId++,
      t: snap?.takenAt ?? Date.now(),
      vms,
      placement,
      ...(statsError ? { statsError } : {}),
    };
  }
}

function vmFrame(vm: VmSample, prev: Memory | undefined, mem: Memory): VmFrame {
  const seconds = prev ? (mem.mono - prev.mono) / 1000 : 0;
  const rate = (key: string, value: number): number | null => {
    mem.values.set(key, value);
    const before = prev?.values.get(key);
    return before === undefined || seconds <= 0 ? null : Math.max(0, (value - before) / seconds);
  };
  const by = (source: string, name: string): StatSample | undefined =>
    vm.stats.find((s) => s.desc.source === source && s.desc.name === name);

  // Exit reasons: vmtool's own counters where the VM publishes them, else the tracepoints' children, else KVM's
  // single `exits` counter.
  const reasons = (source: string, re: RegExp) =>
    vm.stats.filter((s) => s.desc.source === source && re.test(s.desc.name));
  let exitsSource = "vmtool";
  let what = "vmtool_exits by KVM exit reason";
  let parts = reasons("vmtool", /^vmtool_exits\(\w+\)$/);
  if (parts.length === 0) {
    exitsSource = "tracepoints";
    what = "kvm_userspace_exit by reason";
    parts = reasons("tracepoints", /^kvm_userspace_exit\(\w+\)$/);
  }
  const totals: Record<string, number> = {};
  let rates: Record<string, number> | null = {};
  if (parts.length === 0) {
    const e = by("stats", "exits") ?? by("debugfs", "exits");
    exitsSource = e?.desc.source ?? "none";
    what = "KVM's exits counter (every reason)";
    if (e) parts = [e];
  }
  for (const p of parts) {
    const reason = /\((\w+)\)$/.exec(p.desc.name)?.[1] ?? "all";
    totals[reason] = p.value;
    const r = rate(`exits:${p.desc.name}`, p.value);
    if (r === null) rates = null;
    else if (rates) rates[reason] = r;
  }
  const kvm = by("stats", "exits");
  const halt = by("stats", "halt_wait_ns") ?? by("debugfs", "halt_wait_ns");
  const rows: VmFrame["rows"] = [];
  for (const s of vm.stats) {
    if (s.desc.source !== "vmtool") continue;
    const m = /^vmtool_(io|mmio)\((0x[0-9a-f]+|other)(?:,(\w+))?\)$/.exec(s.desc.name);
    if (!m) continue;
    rows.push({
      kind: m[1] === "io" ? "port" : "mmio",
      address: m[2],
      direction: m[3] ?? "",
      total: s.value,
      rate: rate(`row:${s.desc.name}`, s.value),
    });
  }
  rows.sort((a, b) => (b.rate ?? 0) - (a.rate ?? 0) || b.total - a.total);
  return {
    key: vm.vm.key,
    pid: vm.vm.pid,
    name: vm.vm.name,
    vmm: vm.vm.vmm,
    vcpus: vm.vm.vcpus,
    ended: vm.ended,
    sources: Object.entries(vm.sources)
      .filter(([, u]) => u?.used)
      .map(([s]) => s),
    exits: { source: exitsSource, what, rates, totals },
    kvmExits: kvm ? { total: kvm.value, rate: rate("kvm:exits", kvm.value) } : null,
    halt: halt
      ? {
          source: halt.desc.source,
          rate: (() => {
            const r = rate("halt", halt.value);
            return r === null ? null : r * halt.desc.scale;
          })(),
          totalSeconds: halt.value * halt.desc.scale,
        }
      : null,
    rows: rows.slice(0, ROWS),
  };
}
