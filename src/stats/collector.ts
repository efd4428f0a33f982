// The stats layer's entry point: a collector that, on each poll, finds every VM of the host (discover.ts), keeps
// what it needs to read each one (copies of the stats fds its VMM holds, its published counters, perf counters
// on its threads), reads every source asked for and returns one Snapshot. VMs appear and vanish at any time:
// a new one is picked up at the next poll; one whose process exits is noticed through its pidfd (at each poll,
// and by a timer between polls) and everything held for it is closed at once, so a watched VM is never kept
// alive after its VMM is gone (a held stats fd would keep the kernel's VM).
//
// Sources, and what `auto` does with them (docs/stat.md):
//   stats        KVM's binary stats, read from copies (pidfd_getfd) of the stats fds the VMM holds; vmtool
//                opens its own at VM and vCPU creation; QEMU >= 8.1 keeps one per vCPU.
//   vmtool       the live exit counters of a `vmtool run` (by exit reason and by port/address).
//   debugfs      <debugfs>/kvm/<pid>-<fd>/; in auto, only for VMs that give no binary stats.
//   tracepoints  perf counters on KVM's tracepoints; in auto, only for VMs that give neither binary stats nor
//                vmtool counters (they cost the guest 10-15% of its exit rate). Per thread of the VM's process,
//                or per host CPU (scope "host": every VM of the host together, as kvm_stat counts).
import { spawn } from "node:child_process";
import { closeSync, readFileSync, readlinkSync } from "node:fs";
import { join } from "node:path";
import { KVM_EXIT, exitReasonName } from "../kvm/ioctls.js";
import { hex } from "../format.js";
import { LIVE_ACCESS } from "../vmm/live-counters.js";
import { BinaryStatsFile, vcpuOfStatsId, type BinaryStatDesc } from "./binary-stats.js";
import {
  FdScanner,
  discoverVms,
  identify,
  qemuVcpuOfThread,
  threadsOf,
  vmPidsFromDebugfs,
  type KvmProcess,
  type ProcessIdentity,
} from "./discover.js";
import { processStartTime } from "../vmm/run-dir.js";
import { findDebugfs, readDebugfsVm, type DebugfsRead } from "./debugfs.js";
import { CountersReader, RunFinder, type PublishedRun, type VcpuCounters } from "./run-dirs.js";
import { exitedPidfds, pidfdGetfd, pidfdOpen, errnoName } from "./sys.js";
import { findTracefs, kvmEvents, type TraceEvent } from "./tracefs.js";
import {
  PerfGroup,
  counterSpecs,
  hardwareExitTable,
  perfErrorText,
  type CounterSpec,
} from "./tracepoints.js";
import { StatsFormatError } from "./errors.js";
import type {
  Problem,
  Snapshot,
  SourceName,
  SourceReport,
  SourceUse,
  StatDesc,
  StatSample,
  StatType,
  StatUnit,
  StatValue,
  VmInfo,
  VmSample,
} from "./types.js";

/**
 * Which KVM binary statistics a poll builds samples of (by name): the rest are read with their file, as KVM
 * gives them, but not decoded. For a consumer that shows a few of them often (the dashboard).
 */
export type BinaryStatFilter = (name: string) => boolean;

export interface CollectorOptions {
  /** Which sources to read: "auto" (the default) or a list. */
  sources?: "auto" | readonly SourceName[];
  /** Only these VM processes (pids). */
  pids?: ReadonlySet<number>;
  /** Tracepoints per host CPU ("host") or per thread of each VM ("vms"). Default: "host" unless pids is set. */
  tracepointScope?: "host" | "vms";
  /** Which tracepoint counters to open (by name, `kvm_exit` or `kvm_exit(HLT)`): all by default. */
  tracepointFilter?: (name: string) => boolean;
  /** /proc, /proc/cpuinfo, /proc/mounts, /sys/devices/system/cpu/online: other places, for tests. */
  proc?: string;
  /** debugfs's mount point (default: from /proc/mounts). */
  debugfs?: string;
  /** How often exited VMMs are looked for between polls, in ms (0: only at polls). Default 250. */
  reapIntervalMs?: number;
  /** Most perf descriptors to hold (default: the descriptor limit minus 256). */
  perfFdBudget?: number;
}

const isRoot = () => process.getuid?.() === 0;

/** How a source's values of one stat combine over vCPUs (and over VMs): peaks by maximum, the rest by sum. */
export function combine(type: StatType, values: readonly StatValue[]): StatValue {
  if (values.length === 0) return { value: 0 };
  if (type === "peak") return { value: Math.max(...values.map((v) => v.value)) };
  if (type === "linear-hist" || type === "log-hist") {
    const n = Math.max(...values.map((v) => v.buckets?.length ?? 0));
    const buckets = new Array<number>(n).fill(0);
    for (const v of values) v.buckets?.forEach((b, i) => (buckets[i] += b));
    return { value: buckets.reduce((s, b) => s + b, 0), buckets };
  }
  return { value: values.reduce((s, v) => s + v.value, 0) };
}

interface StatsCopy {
  /** The fd number in the VMM's process and the copy's, with the file's layout. */
  target: number;
  copy: number;
  file: BinaryStatsFile;
  vcpu?: number;
  /** The StatDesc of each of the file's descriptors, in its order. */
  descs?: StatDesc[];
  /** The indexes of the descriptors a poll's filter keeps, for the last filter used. */
  kept?: { only: BinaryStatFilter; indexes: number[] };
}

interface VmState {
  info: VmInfo;
  pidfd: number;
  process: KvmProcess;
  copies: Map<number, StatsCopy>;
  /** debugfs files of this VM's folders that refuse reads (not tried again). */
  debugfsRefused?: Map<string, Map<string, string>>;
  /** Thread id -> name, read once per thread. */
  threadNames?: Map<number, string>;
  threadNamesAt?: number;
  /** Counted through tracepoints (auto decides it once per VM). */
  traced?: boolean;
  /** The stats fds the VMM held at the last poll (a fd is copied once seen twice: syncCopies). */
  seenStatsFds: Set<number>;
  seenAt?: number;
  /** Why stats fds could not be copied (pidfd_getfd's error), once. */
  copyError?: string;
  counters?: CountersReader;
  countersDir?: string;
  run?: PublishedRun;
  perf: Map<number, PerfGroup>;
  /** Counts of threads that ended, by spec name. */
  perfRetired: Map<string, number>;
  perfError?: string;
  /** Set once the VMM exited: the values read just before everything was closed. */
  final?: VmSample;
}

const EXIT_NAME = (r: number) => exitReasonName(r);

export class StatsCollector {
  private readonly proc: string;
  private readonly sources: "auto" | ReadonlySet<SourceName>;
  private pids: ReadonlySet<number> | undefined;
  private tracepointScope: "host" | "vms";
  private tracepointFilter: (name: string) => boolean;
  private readonly vms = new Map<string, VmState>();
  private readonly descs = new Map<string, StatDesc>();
  private readonly reported = new Set<string>();
  private readonly debugfsKvm: string | undefined;
  private readonly tracefs: string | undefined;
  private traceEvents: TraceEvent[] | undefined;
  private traceError: string | undefined;
  private specs: CounterSpec[] | undefined;
  private hostGroups: PerfGroup[] | undefined;
  private keeper: PerfGroup | undefined;
  private hostCpus: number[] = [];
  private perfFds = 0;
  private readonly perfFdBudget: number;
  private readonly exitTable: "vmx" | "svm" | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  /** Binary stats descriptors seen (name -> desc), to type debugfs files of the same names. */
  private readonly binaryKinds = new Map<string, BinaryStatDesc>();
  private readonly identities = new Map<number, ProcessIdentity>();
  private readonly reasonDescs: StatDesc[] = [];
  private readonly addressDescs = new Map<number, StatDesc>();
  private readonly scanner: FdScanner;
  private readonly runFinder: RunFinder;
  private readonly debugfsPids = new Map<string, number>();
  private reports: { at: number; list: SourceReport[] } | undefined;

  constructor(opts: CollectorOptions = {}) {
    this.proc = opts.proc ?? "/proc";
    this.scanner = new FdScanner(this.proc);
    this.runFinder = new RunFinder(this.proc);
    this.sources = opts.sources === undefined || opts.sources === "auto" ? "auto" : new Set(opts.sources);
    this.pids = opts.pids;
    this.tracepointScope = opts.tracepointScope ?? (opts.pids ? "vms" : "host");
    this.tracepointFilter = opts.tracepointFilter ?? (() => true);
    const mounts = join(this.proc, "mounts");
    const debugfs = opts.debugfs ?? findDebugfs(mounts);
    this.debugfsKvm = debugfs === undefined ? undefined : join(debugfs, "kvm");
    this.tracefs = findTracefs(mounts);
    this.exitTable = hardwareExitTable(readOr(join(this.proc, "cpuinfo")) ?? "");
    this.perfFdBudget = opts.perfFdBudget ?? Math.max(0, fdLimit(this.proc) - 256);
    const ms = opts.reapIntervalMs ?? 250;
    if (ms > 0) {
      this.timer = setInterval(() => this.reap(), ms);
      this.timer.unref();
    }
  }

  private wants(source: SourceName): boolean {
    return this.sources === "auto" || this.sources.has(source);
  }

  /** Restrict to these VM processes (undefined: every VM). VMs left out are dropped. */
  setPids(pids: ReadonlySet<number> | undefined): void {
    this.pids = pids;
    for (const [key, st] of this.vms) if (pids && !pids.has(st.info.pid)) this.drop(key);
  }

  /** Count tracepoints per host CPU or per VM thread from the next poll on (counts restart). */
  setTracepointScope(scope: "host" | "vms"): void {
    if (scope === this.tracepointScope) return;
    this.tracepointScope = scope;
    this.reports = undefined;
    this.closePerf();
  }

  /** Open only the tracepoint counters whose name passes `filter`, from the next poll on (counts restart). */
  setTracepointFilter(filter: (name: string) => boolean): void {
    this.tracepointFilter = filter;
    this.specs = undefined;
    this.closePerf();
  }

  /** Every tracepoint counter this host offers (for `-f help`), or why there are none. */
  tracepointNames(): string[] {
    return this.loadSpecs(() => true)?.map((s) => s.name) ?? [];
  }

  private closePerf(): void {
    for (const g of this.hostGroups ?? []) {
      this.perfFds -= g.size;
      g.close();
    }
    this.hostGroups = undefined;
    for (const st of this.vms.values()) {
      for (const g of st.perf.values()) {
        this.perfFds -= g.size;
        g.close();
      }
      st.perf.clear();
      st.perfRetired.clear();
    }
  }

  /** The sources, what they can do here, and why not (looked at again every 10 s). */
  sourceReports(): SourceReport[] {
    const now = Date.now();
    if (!this.reports || now - this.reports.at > 10_000)
      this.reports = { at: now, list: this.lookAtSources() };
    return this.reports.list;
  }

  private lookAtSources(): SourceReport[] {
    const root = isRoot();
    const out: SourceReport[] = [];
    out.push({
      source: "stats",
      available: true,
      needsRoot: !root,
      note: root
        ? "KVM binary stats (KVM_GET_STATS_FD) of every VM whose VMM holds stats fds, copied with pidfd_getfd"
        : "KVM binary stats of your own VMs only: other users' need root (pidfd_getfd)",
    });
    out.push({
      source: "vmtool",
      available: true,
      needsRoot: !root,
      note: root
        ? "the live exit counters every `vmtool run` publishes (by exit reason, port and MMIO address)"
        : "the live exit counters of your own `vmtool run`s: other users' need root",
    });
    const trace = this.traceAvailability();
    out.push({ source: "tracepoints", available: trace === undefined, needsRoot: !root, note: trace ?? "" });
    let debugfs: string;
    let debugOk = false;
    if (this.debugfsKvm === undefined) debugfs = "debugfs is not mounted";
    else if (!root) debugfs = "debugfs is readable by root only";
    else {
      try {
        readFileSync(join(this.debugfsKvm, "exits"));
        debugfs = `KVM's statistics files under ${this.debugfsKvm}`;
        debugOk = true;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        debugOk = code === "EPERM" || code === "ENOENT";
        debugfs =
          code === "EPERM"
            ? `${this.debugfsKvm}: the kernel's lockdown refuses reads of its writable files (EPERM): only the read-only ones (instant values) are shown`
            : `${this.debugfsKvm}: ${code ?? "not readable"}`;
      }
    }
    out.push({ source: "debugfs", available: debugOk, needsRoot: !root, note: debugfs });
    if (trace === undefined)
      out[2].note =
        this.tracepointScope === "host"
          ? `perf counters on ${this.traceEvents?.length ?? 0} KVM tracepoints, one group per host CPU`
          : `perf counters on ${this.traceEvents?.length ?? 0} KVM tracepoints, one group per thread of each VM counted`;
    return out;
  }

  /** undefined when tracepoints can be counted here, else why not. */
  private traceAvailability(): string | undefined {
    if (this.traceError !== undefined || this.traceEvents !== undefined) return this.traceError;
    if (this.tracefs === undefined)
      return (this.traceError = "no tracefs is mounted (and no debugfs/tracing)");
    try {
      this.traceEvents = kvmEvents(this.tracefs);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      return (this.traceError =
        code === "EACCES" || code === "EPERM"
          ? `${this.tracefs} is readable by root only`
          : `${join(this.tracefs, "events", "kvm")}: ${code ?? (e as Error).message} (is KVM loaded?)`);
    }
    if (this.traceEvents.length === 0) return (this.traceError = "tracefs lists no kvm events");
    // One counter on this very thread tells whether perf_event_open is allowed at all.
    const probe = PerfGroup.open([{ name: this.traceEvents[0].name, event: this.traceEvents[0] }], 0, -1);
    if (typeof probe === "number") return (this.traceError = perfErrorText(probe));
    probe.close();
    return undefined;
  }

  private loadSpecs(filter = this.tracepointFilter): CounterSpec[] | undefined {
    if (this.traceAvailability() !== undefined) return undefined;
    const events = this.traceEvents;
    if (!events) return undefined;
    if (!this.keeper) {
      // The kernel unregisters a tracepoint from perf when its last counter closes, and waits for an RCU grace
      // period each time (~35 ms per event here): closing a VM's counters would stall a poll for seconds. One
      // counter of every event on this thread (where no guest runs) keeps them registered while counting lasts.
      const g = PerfGroup.open(
        events.map((event) => ({ name: event.name, event })),
        0,
        -1,
      );
      if (typeof g !== "number") {
        this.keeper = g;
        this.perfFds += g.size;
      }
    }
    if (filter !== this.tracepointFilter) return counterSpecs(events, this.exitTable, filter);
    return (this.specs ??= counterSpecs(events, this.exitTable, filter));
  }

  private desc(source: SourceName, name: string, make: () => Omit<StatDesc, "name" | "source">): StatDesc {
    const key = `${source}\0${name}`;
    let d = this.descs.get(key);
    if (!d) {
      d = { name, source, ...make() };
      // Bounded (a watch may last months, guests come and go): past the bound, descriptions are made anew.
      if (this.descs.size < 200_000) this.descs.set(key, d);
    }
    return d;
  }

  /** Look at every VM now and read every source (of the binary stats, those `only` keeps: all by default). */
  poll(only?: BinaryStatFilter): Snapshot {
    if (this.closed) throw new Error("StatsCollector used after close()");
    const problems: Problem[] = [];
    const notes: string[] = [];
    this.reap();
    const runs = this.wants("vmtool") ? this.runFinder.find(problems) : new Map<number, PublishedRun>();
    // KVM's debugfs folder lists every VM (root): then only those processes need their descriptors listed.
    const index =
      isRoot() && !this.pids ? vmPidsFromDebugfs(this.debugfsKvm, this.proc, this.debugfsPids) : undefined;
    if (index) for (const pid of runs.keys()) index.add(pid);
    const found = discoverVms(this.proc, this.pids, index, this.scanner);
    const seen = new Set<string>();
    const samples: VmSample[] = [];
    for (const p of found.processes) {
      const id = this.identify(p.pid);
      if (!id) continue; // ended between the two looks
      const key = `${p.pid}@${id.startTime}`;
      let st = this.vms.get(key);
      if (st?.final) continue; // exited: reported below
      if (!st) {
        const pidfd = pidfdOpen(p.pid);
        if (pidfd < 0) continue; // gone
        st = {
          info: { key, pid: p.pid, ...id, vcpus: [], threads: new Map() },
          pidfd,
          process: p,
          copies: new Map(),
          seenStatsFds: new Set(),
          perf: new Map(),
          perfRetired: new Map(),
        };
        this.vms.set(key, st);
      }
      st.process = p;
      seen.add(key);
      const run = runs.get(p.pid);
      if (run && run.run.startTime === id.startTime) {
        st.run = run;
        st.info.vmm = "vmtool";
      }
      samples.push(this.sample(st, problems, false, only));
    }
    // VMs that ended: their last values, once.
    for (const [key, st] of this.vms) {
      if (seen.has(key)) continue;
      const last = st.final ?? this.finish(st, problems);
      samples.push({ ...last, ended: true });
      this.vms.delete(key);
      this.identities.delete(st.info.pid);
      this.scanner.forget(st.info.pid);
    }
    samples.sort((a, b) => a.vm.pid - b.vm.pid);
    let host: Snapshot["host"];
    if (this.wants("tracepoints") && this.sources !== "auto" && this.tracepointScope === "host")
      host = this.sampleHost(problems);
    if (found.denied > 0 && !isRoot())
      notes.push(
        `${found.denied} processes of other users could not be looked at (their VMs need root to be seen)`,
      );
    const kvmExit = [host?.stats ?? [], ...samples.map((s) => s.stats)]
      .flat()
      .filter((s) => s.desc.source === "tracepoints");
    const userspace = kvmExit.find((s) => s.desc.name === "kvm_userspace_exit")?.value ?? 0;
    const hw = kvmExit.find((s) => s.desc.name === "kvm_exit");
    if (hw && hw.value === 0 && userspace > 0)
      notes.push(
        "kvm_exit has not fired although kvm_userspace_exit has: this KVM backend does not report hardware exits " +
          "through the kvm_exit tracepoint" +
          (this.exitTable
            ? ""
            : " (/proc/cpuinfo shows neither vmx nor svm: no VMX or SVM exit table applies)"),
      );
    return {
      takenAt: Date.now(),
      monoMs: performance.now(),
      vms: samples,
      host,
      sources: this.sourceReports(),
      problems: problems.filter((p) => {
        const k = `${p.what}\0${p.reason}`;
        if (this.reported.has(k)) return false;
        this.reported.add(k);
        return true;
      }),
      notes,
    };
  }

  /** Who a process is: read once per process (its start time tells a reused pid). */
  private identify(pid: number): ProcessIdentity | undefined {
    // A VM whose pidfd has not turned readable is still the same process: nothing to read again.
    const held = this.identities.get(pid);
    if (held && [...this.vms.values()].some((st) => st.info.pid === pid && !st.final && st.pidfd >= 0))
      return held;
    const startTime = processStartTime(pid, this.proc);
    if (startTime === undefined) return undefined;
    const known = this.identities.get(pid);
    if (known?.startTime === startTime) return known;
    const id = identify(pid, this.proc);
    if (id) this.identities.set(pid, id);
    return id;
  }

  /** Close what is held for VMs whose VMM exited (their pidfd is readable), keeping their last values. */
  reap(): void {
    const live = [...this.vms.values()].filter((st) => !st.final);
    const exited = exitedPidfds(live.map((st) => st.pidfd));
    live.forEach((st, i) => {
      if (exited[i]) st.final = { ...this.finish(st, []), ended: true };
    });
  }

  /** A last sample of `st`, then everything held for it closed. */
  private finish(st: VmState, problems: Problem[]): VmSample {
    let last: VmSample;
    try {
      last = this.sample(st, problems, true);
    } catch {
      last = { vm: st.info, stats: [], sources: {}, ended: true };
    }
    this.release(st);
    return last;
  }

  private release(st: VmState): void {
    for (const c of st.copies.values()) closeSync(c.copy);
    st.copies.clear();
    st.counters?.close();
    st.counters = undefined;
    for (const g of st.perf.values()) {
      this.perfFds -= g.size;
      g.close();
    }
    st.perf.clear();
    if (st.pidfd >= 0) closeSync(st.pidfd);
    st.pidfd = -1;
  }

  private drop(key: string): void {
    const st = this.vms.get(key);
    if (!st) return;
    this.release(st);
    this.vms.delete(key);
  }

  /** Read every source of one VM. `final`: its VMM has exited; read what is held, open nothing new. */
  private sample(st: VmState, problems: Problem[], final = false, only?: BinaryStatFilter): VmSample {
    const stats: StatSample[] = [];
    const sources: Partial<Record<SourceName, SourceUse>> = {};
    const vcpuIds = new Set<number>(st.process.vcpuFds.keys());
    if (this.wants("stats")) {
      sources.stats = this.sampleBinary(st, stats, problems, final, only);
      for (const c of st.copies.values()) if (c.vcpu !== undefined) vcpuIds.add(c.vcpu);
    }
    if (this.wants("vmtool") && (st.run || st.counters || st.info.vmm === "vmtool"))
      sources.vmtool = this.sampleCounters(st, stats, problems, final);
    if (this.wants("debugfs") && (this.sources !== "auto" || sources.stats?.used !== true))
      sources.debugfs = this.sampleDebugfs(st, stats);
    // auto: tracepoints for a VM that keeps no stats fds and publishes no counters, decided once and kept
    // (a VMM's stats fd of an instant must not switch it back and forth).
    const traced =
      this.sources === "auto"
        ? (st.traced ||=
            st.process.vcpuStatsFds.size === 0 &&
            st.copies.size === 0 &&
            sources.vmtool?.used !== true &&
            !st.run)
        : this.tracepointScope === "vms";
    if (this.wants("tracepoints") && traced) sources.tracepoints = this.sampleTracepoints(st, stats, final);
    st.info.vcpus = [...vcpuIds].sort((a, b) => a - b);
    if (st.info.vmm === "qemu" && st.info.threads.size === 0 && !final)
      for (const t of threadsOf(st.info.pid, this.proc)) {
        const v = qemuVcpuOfThread(t.comm);
        if (v !== undefined) st.info.threads.set(v, t.tid);
      }
    return { vm: { ...st.info, threads: new Map(st.info.threads) }, stats, sources, ended: final };
  }

  private sampleBinary(
    st: VmState,
    out: StatSample[],
    problems: Problem[],
    final: boolean,
    only?: BinaryStatFilter,
  ): SourceUse {
    const p = st.process;
    if (!final) this.syncCopies(st, problems);
    if (st.copies.size === 0) {
      if (st.copyError) return { used: false, note: st.copyError };
      return {
        used: false,
        note:
          st.info.vmm === "qemu"
            ? "holds no KVM stats fds (QEMU before 8.1 opens them only while it answers query-stats)"
            : "holds no KVM stats fds",
      };
    }
    // VM-scoped stats (one file per VM fd) and vCPU-scoped ones (one file per vCPU), combined by name.
    const vmValues = new Map<StatDesc, StatValue[]>();
    const vcpuValues = new Map<StatDesc, Map<number, StatValue>>();
    for (const c of st.copies.values()) {
      try {
        c.file.refresh();
      } catch (e) {
        problems.push({ what: `pid ${p.pid} ${c.file.id}`, reason: (e as Error).message });
        continue;
      }
      if (!c.descs) {
        const scope = c.vcpu === undefined ? "vm" : "vcpu";
        c.descs = c.file.descs.map((d) => this.binaryDesc(d, scope));
        for (const d of c.file.descs) this.binaryKinds.set(d.name, d);
      }
      const descs = c.descs;
      const vcpu = c.vcpu;
      let kept: number[] | undefined;
      if (only) {
        if (c.kept?.only !== only)
          c.kept = { only, indexes: c.file.descs.flatMap((d, i) => (only(d.name) ? [i] : [])) };
        kept = c.kept.indexes;
      }
      const fileDescs = c.file.descs;
      const decode = (i: number) => {
        const d = fileDescs[i];
        const desc = descs[i];
        let v: StatValue;
        if (desc.buckets > 0) {
          const buckets = c.file.values(d);
          let sum = 0;
          for (const b of buckets) sum += b;
          v = { value: sum, buckets };
        } else v = { value: c.file.value(d) };
        if (vcpu === undefined) {
          const list = vmValues.get(desc);
          if (list) list.push(v);
          else vmValues.set(desc, [v]);
        } else {
          let m = vcpuValues.get(desc);
          if (!m) vcpuValues.set(desc, (m = new Map<number, StatValue>()));
          m.set(vcpu, v);
        }
      };
      if (kept) for (const i of kept) decode(i);
      else for (let i = 0; i < fileDescs.length; i++) decode(i);
    }
    for (const [desc, values] of vmValues) out.push({ desc, ...combine(desc.type, values) });
    for (const [desc, byVcpu] of vcpuValues)
      out.push({ desc, ...combine(desc.type, [...byVcpu.values()]), vcpus: byVcpu });
    return { used: true };
  }

  /**
   * Copy the stats fds the VMM keeps, close the copies of those it closed. A VMM that opens stats fds only
   * while it answers a query (QEMU before 8.1; QEMU's VM stats fd always) holds them for an instant: a fd is
   * used once seen at two polls in a row, or at once when the VMM says it keeps it (run.json of a vmtool run).
   */
  private syncCopies(st: VmState, problems: Problem[]): void {
    const p = st.process;
    const now = new Map<number, number | undefined>();
    for (const fd of p.vmStatsFds) now.set(fd, undefined);
    for (const [vcpu, fd] of p.vcpuStatsFds) now.set(fd, vcpu);
    const kept = new Set<number>();
    if (st.run)
      for (const fd of [st.run.run.vmStatsFd, ...st.run.run.vcpus.map((c) => c.statsFd)]) kept.add(fd);
    const held = [...now].filter(([fd]) => kept.has(fd) || st.seenStatsFds.has(fd));
    // "Seen before" means in an earlier listing of the process's descriptors (discover.ts lists it less often
    // than every poll once it is known).
    if (p.listedAt !== st.seenAt) {
      st.seenStatsFds = new Set(now.keys());
      st.seenAt = p.listedAt;
    }
    for (const [target, c] of st.copies)
      if (!now.has(target)) {
        closeSync(c.copy);
        st.copies.delete(target);
      }
    for (const [target, vcpu] of held) {
      if (st.copies.has(target) || st.copyError) continue;
      // The number may have been closed (and reused) since it was listed: it must still be a stats fd.
      if (!isStatsLink(p.pid, target, this.proc)) continue;
      const copy = pidfdGetfd(st.pidfd, target);
      if (copy < 0) {
        if (copy === -9 /* EBADF: closed meanwhile */) continue;
        st.copyError =
          copy === -1
            ? "pidfd_getfd: EPERM (copying another process's descriptors needs root, or the same user where Yama allows ptrace)"
            : `pidfd_getfd: ${errnoName(-copy)}`;
        return;
      }
      try {
        const file = BinaryStatsFile.open(copy);
        st.copies.set(target, { target, copy, file, vcpu: vcpu ?? vcpuOfStatsId(file.id) });
      } catch (e) {
        closeSync(copy);
        problems.push({ what: `pid ${p.pid} fd ${target}`, reason: (e as Error).message });
      }
    }
  }

  private binaryDesc(d: BinaryStatDesc, scope: "vm" | "vcpu"): StatDesc {
    return this.desc("stats", d.name, () => ({
      scope,
      type: d.type,
      unit: d.unit,
      base: d.base,
      exponent: d.exponent,
      scale: d.base ** d.exponent,
      buckets: d.type === "linear-hist" || d.type === "log-hist" ? d.size : 0,
      bucketSize: d.bucketSize,
    }));
  }

  private plainDesc(source: SourceName, name: string, extra: Partial<StatDesc> = {}): StatDesc {
    return this.desc(source, name, () => ({
      scope: "vcpu",
      type: "cumulative",
      unit: "none",
      base: 10,
      exponent: 0,
      scale: 1,
      buckets: 0,
      bucketSize: 0,
      ...extra,
    }));
  }

  private sampleCounters(st: VmState, out: StatSample[], problems: Problem[], final: boolean): SourceUse {
    if (!st.run && !st.counters)
      return { used: false, note: "this `vmtool run` publishes no counters (no run directory found)" };
    if (!st.counters && !final && st.run) {
      const dir = st.run.dir;
      try {
        st.counters = CountersReader.open(dir);
        st.countersDir = dir;
      } catch (e) {
        const reason =
          e instanceof StatsFormatError ? e.message : ((e as NodeJS.ErrnoException).code ?? String(e));
        problems.push({ what: dir, reason });
        return { used: false, note: `its counters cannot be read (${reason})` };
      }
    }
    if (!st.counters) return { used: false };
    const blocks = st.counters.read();
    const byDesc = new Map<StatDesc, Map<number, StatValue>>();
    const add = (desc: StatDesc, vcpu: number, value: number) => {
      let m = byDesc.get(desc);
      if (!m) byDesc.set(desc, (m = new Map<number, StatValue>()));
      const was = m.get(vcpu);
      if (was) was.value += value;
      else m.set(vcpu, { value });
    };
    const total = this.plainDesc("vmtool", "vmtool_exits");
    blocks.forEach((b: VcpuCounters, vcpu) => {
      if (b.tid > 0) st.info.threads.set(vcpu, b.tid);
      let sum = 0;
      b.reasons.forEach((count, reason) => {
        if (count === 0) return;
        sum += count;
        add(this.reasonDesc(reason), vcpu, count);
      });
      add(total, vcpu, sum);
      for (const [key, count] of b.entries) add(this.addressDesc(key), vcpu, count);
      if (b.otherPio > 0)
        add(this.plainDesc("vmtool", "vmtool_io(other)", { parent: "vmtool_exits(IO)" }), vcpu, b.otherPio);
      if (b.otherMmio > 0)
        add(
          this.plainDesc("vmtool", "vmtool_mmio(other)", { parent: "vmtool_exits(MMIO)" }),
          vcpu,
          b.otherMmio,
        );
    });
    for (const [desc, byVcpu] of byDesc)
      out.push({ desc, ...combine(desc.type, [...byVcpu.values()]), vcpus: byVcpu });
    return { used: true };
  }

  /** `vmtool_exits(IO)` for KVM_EXIT_IO... (made once per reason). */
  private reasonDesc(reason: number): StatDesc {
    let d = this.reasonDescs[reason];
    if (!d) {
      const name = EXIT_NAME(reason);
      d = this.reasonDescs[reason] = this.plainDesc("vmtool", `vmtool_exits(${name})`, {
        parent: "vmtool_exits",
        exit: { table: "kvm", name },
      });
    }
    return d;
  }

  /** `vmtool_io(0xe9,out)`, `vmtool_mmio(0xd0000000,read)` for a counters-file key (made once per key). */
  private addressDesc(key: number): StatDesc {
    let d = this.addressDescs.get(key);
    if (!d) {
      const access = (key - 1) % 4;
      const address = (key - 1 - access) / 4;
      const pio = access === LIVE_ACCESS.PIO_IN || access === LIVE_ACCESS.PIO_OUT;
      const dir = ["in", "out", "read", "write"][access];
      const parent = `vmtool_exits(${EXIT_NAME(pio ? KVM_EXIT.IO : KVM_EXIT.MMIO)})`;
      d = this.plainDesc("vmtool", `vmtool_${pio ? "io" : "mmio"}(${hex(address)},${dir})`, { parent });
      // Bounded: a guest may touch many addresses over time; past the bound descriptors are made again.
      if (this.addressDescs.size < 65_536) this.addressDescs.set(key, d);
    }
    return d;
  }

  private sampleDebugfs(st: VmState, out: StatSample[]): SourceUse {
    if (this.debugfsKvm === undefined) return { used: false, note: "debugfs is not mounted" };
    if (!isRoot()) return { used: false, note: "debugfs is readable by root only" };
    const r: DebugfsRead = readDebugfsVm(
      this.debugfsKvm,
      st.info.pid,
      (st.debugfsRefused ??= new Map<string, Map<string, string>>()),
    );
    for (const [vcpu, tid] of r.threads) if (!st.info.threads.has(vcpu)) st.info.threads.set(vcpu, tid);
    if (r.folders.length === 0)
      return { used: false, note: `no folder ${st.info.pid}-<fd> in ${this.debugfsKvm}` };
    for (const [name, value] of r.values) {
      const known = this.binaryKinds.get(name);
      const desc = this.desc("debugfs", name, () => {
        // The binary stats' descriptor of the same name says what the number is; else the file's mode does.
        const type: StatType =
          known?.type ?? ((r.modes.get(name) ?? 0o644) & 0o222 ? "cumulative" : "instant");
        const unit: StatUnit = known?.unit ?? (name.endsWith("_ns") ? "seconds" : "none");
        const exponent = known?.exponent ?? (name.endsWith("_ns") ? -9 : 0);
        // debugfs shows a histogram's first bucket only: it is not a histogram here.
        return {
          scope: "vm",
          type: type === "linear-hist" || type === "log-hist" ? "instant" : type,
          unit,
          base: known?.base ?? 10,
          exponent,
          scale: (known?.base ?? 10) ** exponent,
          buckets: 0,
          bucketSize: 0,
        };
      });
      out.push({ desc, value });
    }
    if (r.refused.size === 0) return { used: true };
    const byCode = new Map<string, string[]>();
    for (const [file, code] of r.refused) byCode.set(code, [...(byCode.get(code) ?? []), file]);
    const groups = [...byCode].map(
      ([code, files]) =>
        `${code === "EPERM" ? "EPERM (the kernel's lockdown restricts debugfs)" : code}: ${files.sort().join(" ")}`,
    );
    return {
      used: r.values.size > 0,
      note: `${r.refused.size} of ${r.refused.size + r.values.size} files not readable: ${groups.join("; ")}`,
    };
  }

  private sampleTracepoints(st: VmState, out: StatSample[], final: boolean): SourceUse {
    const specs = this.loadSpecs();
    if (!specs) return { used: false, note: this.traceError };
    if (!final) {
      // Thread names are read again every 10 s (QEMU names a vCPU thread just after starting it).
      if (!st.threadNames || Date.now() - (st.threadNamesAt ?? 0) > 10_000) {
        st.threadNames = new Map();
        st.threadNamesAt = Date.now();
      }
      const threads = threadsOf(st.info.pid, this.proc, st.threadNames);
      const live = new Set(threads.map((t) => t.tid));
      for (const [tid, g] of st.perf)
        if (!live.has(tid)) {
          // A thread that ended keeps its final counts in its counters: fold them in, then close them.
          g.read().forEach((v, i) =>
            st.perfRetired.set(g.specs[i].name, (st.perfRetired.get(g.specs[i].name) ?? 0) + v),
          );
          this.perfFds -= g.size;
          g.close();
          st.perf.delete(tid);
        }
      for (const t of threads) {
        if (st.perf.has(t.tid)) continue;
        if (this.perfFds + specs.length > this.perfFdBudget) {
          st.perfError = `not every thread is counted: ${this.perfFds} perf descriptors held, the limit is ${this.perfFdBudget}`;
          break;
        }
        const g = PerfGroup.open(specs, t.tid, -1);
        if (typeof g === "number") {
          if (g !== -3 /* ESRCH: ended meanwhile */) st.perfError = perfErrorText(g);
          continue;
        }
        this.perfFds += g.size;
        st.perf.set(t.tid, g);
        const v = qemuVcpuOfThread(t.comm);
        if (v !== undefined) st.info.threads.set(v, t.tid);
      }
    }
    if (st.perf.size === 0 && st.perfRetired.size === 0)
      return { used: false, note: st.perfError ?? "no thread could be counted" };
    const vcpuOfTid = new Map([...st.info.threads].map(([v, t]) => [t, v]));
    const totals = new Map<string, number>(st.perfRetired);
    const byVcpu = new Map<string, Map<number, StatValue>>();
    for (const [tid, g] of st.perf) {
      const values = g.read();
      const vcpu = vcpuOfTid.get(tid);
      g.specs.forEach((s, i) => {
        totals.set(s.name, (totals.get(s.name) ?? 0) + values[i]);
        if (vcpu !== undefined) {
          let m = byVcpu.get(s.name);
          if (!m) byVcpu.set(s.name, (m = new Map<number, StatValue>()));
          m.set(vcpu, { value: values[i] });
        }
      });
    }
    for (const s of specs) {
      const value = totals.get(s.name);
      if (value === undefined) continue;
      out.push({
        desc: this.traceDesc(s),
        value,
        vcpus: byVcpu.get(s.name) ?? new Map<number, StatValue>(),
      });
    }
    return st.perfError ? { used: true, note: st.perfError } : { used: true };
  }

  private traceDesc(s: CounterSpec): StatDesc {
    return this.plainDesc("tracepoints", s.name, { parent: s.parent, exit: s.exit });
  }

  private sampleHost(problems: Problem[]): Snapshot["host"] {
    const specs = this.loadSpecs();
    if (!specs) return undefined;
    if (!this.hostGroups) {
      this.hostCpus = onlineCpus(this.proc);
      this.hostGroups = [];
      for (const cpu of this.hostCpus) {
        if (this.perfFds + specs.length > this.perfFdBudget) {
          problems.push({ what: "tracepoints", reason: `CPU ${cpu} and up not counted: out of descriptors` });
          break;
        }
        const g = PerfGroup.open(specs, -1, cpu);
        if (typeof g === "number") {
          problems.push({ what: `tracepoints on CPU ${cpu}`, reason: perfErrorText(g) });
          continue;
        }
        this.perfFds += g.size;
        this.hostGroups.push(g);
      }
    }
    const totals = new Map<string, number>();
    for (const g of this.hostGroups) {
      const v = g.read();
      g.specs.forEach((s, i) => totals.set(s.name, (totals.get(s.name) ?? 0) + v[i]));
    }
    const stats = specs.flatMap((s) => {
      const value = totals.get(s.name);
      return value === undefined ? [] : [{ desc: { ...this.traceDesc(s), scope: "vm" as const }, value }];
    });
    return { stats, cpus: this.hostCpus };
  }

  /** Close everything: copies, counters files, perf counters, the timer. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    for (const key of [...this.vms.keys()]) this.drop(key);
    this.closePerf();
    if (this.keeper) handOff(this.keeper);
    this.keeper = undefined;
  }
}

/**
 * Close the last counters of every tracepoint without waiting for the kernel to unregister them (seconds: see
 * loadSpecs): a short-lived child process gets copies first, so the last close, and the wait, are its own.
 */
function handOff(group: PerfGroup): void {
  try {
    const child = spawn("sleep", ["1"], {
      stdio: ["ignore", "ignore", "ignore", ...group.descriptors()],
      detached: true,
    });
    child.on("error", () => {});
    child.unref();
  } catch {
    // no child: the close below waits instead
  }
  group.close();
}

function isStatsLink(pid: number, fd: number, proc: string): boolean {
  try {
    return /^anon_inode:kvm-(vm|vcpu)-stats/.test(readlinkSync(join(proc, String(pid), "fd", String(fd))));
  } catch {
    return false;
  }
}

function readOr(path: string): string | undefined {
  try {
    return readFileSync(path, "latin1");
  } catch {
    return undefined;
  }
}

/** The process's soft limit on open files (/proc/self/limits), 1024 if unknown. */
function fdLimit(proc: string): number {
  const m = /^Max open files\s+(\d+)/m.exec(readOr(join(proc, "self", "limits")) ?? "");
  return m ? Number(m[1]) : 1024;
}

/** Online CPUs (/sys/devices/system/cpu/online: "0-3,6"). */
function onlineCpus(proc: string): number[] {
  const text = readOr(proc === "/proc" ? "/sys/devices/system/cpu/online" : join(proc, "cpu-online")) ?? "0";
  const out: number[] = [];
  for (const part of text.trim().split(",")) {
    const [a, b] = part.split("-").map(Number);
    if (!Number.isInteger(a)) continue;
    for (let c = a; c <= (Number.isInteger(b) ? b : a); c++) out.push(c);
  }
  return out;
}
