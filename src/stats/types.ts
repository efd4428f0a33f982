// The stats layer's data model, shared by `vmtool stat` and the exporter: what a statistic is (StatDesc), its
// values for one VM and each of its vCPUs (StatSample), and everything one poll saw (Snapshot). Raw values are
// kept as the source gives them (KVM's `halt_wait_ns` in nanoseconds); `scale` converts them to `unit`.

/** Where numbers come from. docs/stat.md says what each needs. */
export type SourceName = "stats" | "vmtool" | "tracepoints" | "debugfs";
export const SOURCE_NAMES: readonly SourceName[] = ["stats", "vmtool", "tracepoints", "debugfs"];

/** KVM's stat types (KVM_STATS_TYPE_*): every source uses the same words. */
export type StatType = "cumulative" | "instant" | "peak" | "linear-hist" | "log-hist";
/** KVM's units (KVM_STATS_UNIT_*). */
export type StatUnit = "none" | "bytes" | "seconds" | "cycles" | "boolean";

/** One statistic, as its source describes it. */
export interface StatDesc {
  /** Unique within its source: `exits`, `halt_wait_ns`, `kvm_userspace_exit(IO)`, `vmtool_io(0xe9,out)`. */
  readonly name: string;
  readonly source: SourceName;
  /** Kept per vCPU (and summed for the VM), or one value for the whole VM. */
  readonly scope: "vm" | "vcpu";
  readonly type: StatType;
  readonly unit: StatUnit;
  readonly base: 10 | 2;
  readonly exponent: number;
  /** The value in `unit` is raw × scale (base ** exponent): 1e-9 for a stat in nanoseconds. */
  readonly scale: number;
  /** Buckets of a histogram (0 for a single value), and a linear histogram's bucket width. */
  readonly buckets: number;
  readonly bucketSize: number;
  /** For child events: the event whose part it is (`kvm_userspace_exit` for `kvm_userspace_exit(IO)`). */
  readonly parent?: string;
  /** The exit reason the row is about, for `vmtool explain exit NAME --table TABLE`. */
  readonly exit?: { table: "kvm" | "vmx" | "svm"; name: string };
}

export interface StatValue {
  /** The value; for a histogram, its number of samples (the sum of the buckets). */
  value: number;
  buckets?: number[];
}

/** One statistic of one VM: the VM's value (vCPU values combined) and, for vCPU stats, each vCPU's. */
export interface StatSample extends StatValue {
  desc: StatDesc;
  vcpus?: Map<number, StatValue>;
}

export type VmmKind = "vmtool" | "qemu" | "other";

/** One VM process. A process that ends and another that takes its pid are two VMs (`key` differs). */
export interface VmInfo {
  /** `<pid>@<start time>`: stable for the process's lifetime, new for a restarted VM. */
  key: string;
  pid: number;
  /** Start time in clock ticks after boot (/proc/<pid>/stat field 22). */
  startTime: number;
  /** As the observer names VMs: a QEMU `-name`, else the command name (/proc/<pid>/comm). */
  name: string;
  /** The name is the guest's own (QEMU's -name), not its command's: a guest that restarts keeps it. */
  named: boolean;
  comm: string | null;
  cmdline: string[];
  vmm: VmmKind;
  /** vCPU ids the process holds (its kvm-vcpu:N descriptors), ascending. */
  vcpus: number[];
  /** vCPU id -> its thread id, where some source tells (vmtool's counters, QEMU's thread names). */
  threads: Map<number, number>;
}

/** Whether a source gave numbers for a VM, and why not. */
export interface SourceUse {
  used: boolean;
  note?: string;
}

export interface VmSample {
  vm: VmInfo;
  stats: StatSample[];
  sources: Partial<Record<SourceName, SourceUse>>;
  /** The VM ended since the last poll: these are its last values, and it will not be reported again. */
  ended: boolean;
}

/** What a source can do on this host, for this user. */
export interface SourceReport {
  source: SourceName;
  available: boolean;
  /** It would work as root (and does not now). */
  needsRoot: boolean;
  /** One line: what it reads, or why it cannot. */
  note: string;
}

/** Something that could not be read: reported, never fatal. */
export interface Problem {
  what: string;
  reason: string;
}

export interface Snapshot {
  /** ms since the epoch, and a monotonic ms clock for rates. */
  takenAt: number;
  monoMs: number;
  vms: VmSample[];
  /** Tracepoint counts of the whole host (per-CPU counters), when asked for. */
  host?: { stats: StatSample[]; cpus: number[] };
  sources: SourceReport[];
  /** Problems first seen at this poll. */
  problems: Problem[];
  /** Facts worth a line that hold at this poll, found from the data (`kvm_exit` never fired, ...). */
  notes: string[];
}
