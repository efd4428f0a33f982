// KVM tracepoints counted through perf counters, kvm_stat's method: one group of counters per host CPU (every
// VM of the host) or per thread of one VM's process, every `kvm` event plus "child" counters that carry a
// filter on the exit reason (`kvm_userspace_exit(IO)` counts `reason == 2`). The kernel counts; nothing is read
// from the ftrace ring buffer, which other VMs' events overwrite on a shared host. No event is assumed to fire:
// on some backends `kvm_exit` never does (docs/stat.md).
import { closeSync, readSync } from "node:fs";
import { symbolTable, type TraceEvent } from "./tracefs.js";
import { PERF_IOC, errnoName, perfGroupIoctl, perfSetFilter, perfTracepointOpen } from "./sys.js";

/** One counter of a group: an event, optionally filtered. */
export interface CounterSpec {
  /** `kvm_pio`, or `kvm_userspace_exit(IO)` for a child. */
  name: string;
  event: TraceEvent;
  filter?: string;
  parent?: string;
  /** The exit reason a child counts, for `vmtool explain`. */
  exit?: { table: "kvm" | "vmx" | "svm"; name: string };
}

/** KVM_EXIT_* reasons that cannot occur on x86 (other architectures' exits): no child counter for them. */
const NOT_X86 = /^(S390_|PAPR_|ARM_|RISCV_|LOONGARCH_|DCR$|OSI$|EPR$)/;

/** Which hardware exit table `kvm_exit` uses here: from /proc/cpuinfo's flags, as kvm_stat decides. */
export function hardwareExitTable(cpuinfo: string): "vmx" | "svm" | undefined {
  const flags = /^flags\s*:(.*)$/m.exec(cpuinfo)?.[1].split(/\s+/) ?? [];
  return flags.includes("vmx") ? "vmx" : flags.includes("svm") ? "svm" : undefined;
}

/**
 * The counters for `events` (all of `kvm`, or those `wanted` keeps): each event, and children for
 * `kvm_userspace_exit` (by KVM_EXIT_* reason) and `kvm_exit` (by VMX or SVM exit reason, when `table` says
 * which), with the reason names from the kernel's own format files.
 */
export function counterSpecs(
  events: readonly TraceEvent[],
  table: "vmx" | "svm" | undefined,
  wanted: (name: string) => boolean = () => true,
): CounterSpec[] {
  const all = allCounterSpecs(events, table);
  // A child that is wanted brings its parent (its share is of the parent's count).
  const keep = new Set(
    all.filter((s) => wanted(s.name)).flatMap((s) => (s.parent ? [s.name, s.parent] : [s.name])),
  );
  return all.filter((s) => keep.has(s.name));
}

function allCounterSpecs(events: readonly TraceEvent[], table: "vmx" | "svm" | undefined): CounterSpec[] {
  const out: CounterSpec[] = [];
  for (const event of events) {
    out.push({ name: event.name, event });
    const kids: { field: string; names: Map<number, string>; table: "kvm" | "vmx" | "svm" } | undefined =
      event.name === "kvm_userspace_exit" && event.fields.has("reason")
        ? {
            field: "reason",
            names: symbolTable(event.format, "reason"),
            table: "kvm",
          }
        : event.name === "kvm_exit" && event.fields.has("exit_reason") && table
          ? {
              field: "exit_reason",
              names: symbolTable(event.format, "exit_reason", table === "vmx" ? 0 : 1),
              table,
            }
          : undefined;
    if (!kids) continue;
    for (const [value, symbol] of [...kids.names].sort((a, b) => a[0] - b[0])) {
      const reason = symbol.replace(/^KVM_EXIT_/, "");
      if (kids.table === "kvm" && NOT_X86.test(reason)) continue;
      const name = `${event.name}(${reason})`;
      // kvm_userspace_exit also fires when KVM_RUN fails (errno < 0: -EINTR after a signal or immediate_exit),
      // with `reason` left at the previous exit's: those count as INTR, not as a second exit of that reason.
      const errno = kids.table === "kvm" && event.fields.has("errno");
      const filter = !errno
        ? `${kids.field} == ${value >>> 0}`
        : reason === "INTR"
          ? `${kids.field} == ${value} || errno == -4`
          : `${kids.field} == ${value} && errno >= 0`;
      out.push({
        name,
        event,
        filter,
        parent: event.name,
        exit: { table: kids.table, name: kids.table === "svm" ? reason.toUpperCase() : reason },
      });
    }
  }
  return out;
}

/** One perf group: the counters of `specs` that could be opened, for one thread or one CPU. */
export class PerfGroup {
  private closed = false;
  private readonly buf: Buffer;

  private constructor(
    private readonly fds: number[],
    /** The specs counted, in the group's order (members that could not be opened are left out). */
    readonly specs: CounterSpec[],
  ) {
    this.buf = Buffer.alloc(8 * (1 + fds.length));
  }

  /**
   * Open a group for thread `tid` (cpu -1) or for `cpu` (tid -1), enabled at once. Returns the group or the
   * leader's -errno (EACCES/EPERM: not allowed; ESRCH: the thread is gone; EMFILE: no descriptors left).
   * Members that fail to open (an event this kernel refuses) or whose filter does not parse are skipped.
   */
  static open(specs: readonly CounterSpec[], tid: number, cpu: number): PerfGroup | number {
    const fds: number[] = [];
    const kept: CounterSpec[] = [];
    for (const spec of specs) {
      const fd = perfTracepointOpen(spec.event.id, tid, cpu, fds.length > 0 ? fds[0] : -1);
      if (fd < 0) {
        if (fds.length === 0) return fd;
        if (fd === -24 /* EMFILE */ || fd === -23 /* ENFILE */) break;
        continue;
      }
      if (spec.filter && perfSetFilter(fd, spec.filter) < 0) {
        closeSync(fd); // a leader that cannot take its filter: the next spec leads
        continue;
      }
      fds.push(fd);
      kept.push(spec);
    }
    if (fds.length === 0) return -22; // EINVAL: nothing could be counted
    perfGroupIoctl(fds[0], PERF_IOC.ENABLE);
    return new PerfGroup(fds, kept);
  }

  /** Counts since the group was opened (or reset), in the order of `specs`. */
  read(): number[] {
    if (this.closed) return this.specs.map(() => 0);
    let n: number;
    try {
      n = readSync(this.fds[0], this.buf, 0, this.buf.length, null);
    } catch {
      return this.specs.map(() => 0);
    }
    const nr = n >= 8 ? Number(this.buf.readBigUInt64LE(0)) : 0;
    const out = new Array<number>(this.specs.length).fill(0);
    for (let i = 0; i < Math.min(nr, this.specs.length) && 8 * (i + 2) <= n; i++)
      out[i] = this.buf.readUInt32LE(8 * (i + 1)) + this.buf.readUInt32LE(8 * (i + 1) + 4) * 0x1_0000_0000;
    return out;
  }

  reset(): void {
    if (!this.closed) perfGroupIoctl(this.fds[0], PERF_IOC.RESET);
  }

  /** The group's descriptors (to hand them to another process). */
  descriptors(): number[] {
    return this.closed ? [] : [...this.fds];
  }

  get size(): number {
    return this.fds.length;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const fd of this.fds.reverse()) closeSync(fd);
  }
}

/** "EACCES" and the like, for perf_event_open's -errno. */
export function perfErrorText(rc: number): string {
  const e = -rc;
  if (e === 13 || e === 1)
    return `${errnoName(e)}: perf_event_open of a tracepoint needs root (or CAP_PERFMON) at kernel.perf_event_paranoid > 0`;
  return errnoName(e);
}
