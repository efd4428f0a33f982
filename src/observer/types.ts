// The observer's data model, shared by both sources (the vmtool module's tree and KVM's own debugfs), so that
// `vcpus`, `watch` and their renderers never care where a sighting came from.

/** Which debugfs tree the observations come from. */
export type SourceKind = "vmtool" | "kvm";

/** "vCPU `vcpu` was last seen on host CPU `cpu` at `lastSeen`" (one file `cpu-NNN/<vmcs>` in the module's tree). */
export interface Sighting {
  cpu: number;
  /** The vCPU's identity: a VMCS address in hex (module) or `<pid>-<fd>/vcpuN` (KVM). */
  vcpu: string;
  /** POSIX time in seconds (fractional when the source has better), or null: never seen running yet. */
  lastSeen: number | null;
  /** From the optional `<vmcs>.info` file. */
  firstSeen?: number;
  sightings?: number;
}

/** A file that was skipped because it could not be read or did not parse: reported, never fatal. */
export interface Problem {
  path: string;
  reason: string;
}

/** A global file beside `cpu-NNN/` (`vmx-basic`, ...): one `0x%016llx` value each. */
export interface GlobalFile {
  name: string;
  value: bigint;
  /** The MSR (or CPUID word) it holds, where the name is known. */
  what?: string;
  /** Field-by-field decoding, where a decoder exists for it. */
  decoded?: Array<{ field: string; value: string }>;
}

/** Control registers read on one CPU (`cpu-NNN/sysregs`). */
export type SysRegs = Record<string, bigint>;

/** One VM as KVM's debugfs shows it (`<debugfs>/kvm/<pid>-<fd>/`). */
export interface KvmVm {
  id: string;
  pid: number;
  fd: number;
  /** `/proc/<pid>/comm`, or null when the process is gone. */
  comm: string | null;
  cmdline: string[];
  /** A QEMU `-name` where present, else the command name. */
  name: string;
  /** exits, io_exits, mmio_exits, halt_exits where readable. */
  stats: Record<string, number>;
  /** Why the statistics are missing, if they are. */
  statsError?: string;
  vcpus: KvmVcpu[];
}

export interface KvmVcpu {
  /** `<pid>-<fd>/vcpuN`. */
  id: string;
  index: number;
  /** The vCPU thread's id, 0 before its first KVM_RUN. */
  tid: number;
  /** The host CPU the thread last ran on (/proc stat field 39), or null when unknown. */
  cpu: number | null;
  /** CPU time in nanoseconds (schedstat, else utime+stime). */
  cpuTimeNs: number | null;
  /** Thread state letter (R running, S sleeping, ...). */
  state: string | null;
}

/** Everything one poll of one source saw. */
export interface Poll {
  source: SourceKind;
  /** The tree that was read (`<debugfs>/vmtool` or `<debugfs>/kvm`). */
  root: string;
  /** When the poll was taken (ms since the epoch). */
  takenAt: number;
  /** Host CPUs that have a directory (module) or run a vCPU (KVM), ascending. */
  cpus: number[];
  sightings: Sighting[];
  problems: Problem[];
  /** Module only. */
  globals?: GlobalFile[];
  sysregs?: Map<number, SysRegs>;
  /** KVM only. */
  vms?: KvmVm[];
}

/** A source that can be polled again and again (KVM's keeps history between polls). */
export interface Source {
  readonly kind: SourceKind;
  readonly root: string;
  poll(): Poll;
}
