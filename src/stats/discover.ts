// Finds the VMs of this host: every process holding a KVM VM descriptor (`anon_inode:kvm-vm` in /proc/<pid>/fd),
// with its vCPU descriptors and the binary stats descriptors it keeps open. Run on every poll: VMs come and go.
// Processes whose descriptors this user may not list (another user's, without root) are counted, not shown.
import { readFileSync, readdirSync, readlinkSync } from "node:fs";
import { basename, join } from "node:path";
import { qemuName } from "../observer/kvm-tree.js";
import { processStartTime } from "../vmm/run-dir.js";
import type { VmmKind } from "./types.js";

/** One process with KVM descriptors: fd numbers in that process. */
export interface KvmProcess {
  pid: number;
  vmFds: number[];
  vmStatsFds: number[];
  /** vCPU id -> fd */
  vcpuFds: Map<number, number>;
  vcpuStatsFds: Map<number, number>;
}

export interface Discovery {
  processes: KvmProcess[];
  /** Processes whose descriptors could not be listed (EACCES: another user's). */
  denied: number;
}

const VCPU_LINK = /^anon_inode:kvm-vcpu:(\d+)$/;
const VCPU_STATS_LINK = /^anon_inode:kvm-vcpu-stats:(\d+)$/;

/** The KVM descriptors of `pid`, null if it has none, "denied" if they cannot be listed, "gone" if it ended. */
export function scanProcess(pid: number, proc = "/proc"): KvmProcess | null | "denied" | "gone" {
  const dir = join(proc, String(pid), "fd");
  let fds: string[];
  try {
    fds = readdirSync(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return code === "EACCES" || code === "EPERM" ? "denied" : "gone";
  }
  let found: KvmProcess | null = null;
  for (const name of fds) {
    let link: string;
    try {
      link = readlinkSync(join(dir, name));
    } catch {
      continue; // closed meanwhile
    }
    if (!link.startsWith("anon_inode:kvm-")) continue;
    found ??= { pid, vmFds: [], vmStatsFds: [], vcpuFds: new Map(), vcpuStatsFds: new Map() };
    const fd = Number(name);
    let m: RegExpExecArray | null;
    if (link === "anon_inode:kvm-vm") found.vmFds.push(fd);
    else if (link === "anon_inode:kvm-vm-stats") found.vmStatsFds.push(fd);
    else if ((m = VCPU_STATS_LINK.exec(link))) found.vcpuStatsFds.set(Number(m[1]), fd);
    else if ((m = VCPU_LINK.exec(link))) found.vcpuFds.set(Number(m[1]), fd);
  }
  // A process holding only copied stats fds (another `vmtool stat`) is not a VM.
  return found && found.vmFds.length > 0 ? found : null;
}

/** The process (thread group) a thread id belongs to, or undefined if it is gone. */
function tgidOf(tid: number, proc: string): number | undefined {
  const m = /^Tgid:\s*(\d+)$/m.exec(readOr(join(proc, String(tid), "status")) ?? "");
  return m ? Number(m[1]) : undefined;
}

/**
 * The processes that may hold a VM, from KVM's debugfs folder: one `<pid>-<fd>` entry per VM, named after the
 * thread that created it (mapped to its process here). Listing a folder works even where the kernel's
 * lockdown refuses reading the files in it. Undefined when that folder cannot be listed (not root, not
 * mounted): then every process is looked at.
 */
export function vmPidsFromDebugfs(kvmDir: string | undefined, proc = "/proc"): Set<number> | undefined {
  if (kvmDir === undefined) return undefined;
  let names: string[];
  try {
    names = readdirSync(kvmDir);
  } catch {
    return undefined;
  }
  const pids = new Set<number>();
  for (const n of names) {
    const m = /^(\d+)-\d+$/.exec(n);
    if (!m) continue;
    const pid = tgidOf(Number(m[1]), proc);
    if (pid !== undefined) pids.add(pid);
  }
  return pids;
}

/**
 * Every VM process of the host visible to this user (or only those in `pids`). `index`: the processes known to
 * be the only candidates (vmPidsFromDebugfs, plus published vmtool runs); without it every process is looked at.
 */
export function discoverVms(
  proc = "/proc",
  pids?: ReadonlySet<number>,
  index?: ReadonlySet<number>,
): Discovery {
  const processes: KvmProcess[] = [];
  let denied = 0;
  const candidates = pids
    ? [...pids]
    : index
      ? [...index]
      : readdirSync(proc)
          .filter((n) => /^\d+$/.test(n))
          .map(Number);
  for (const pid of candidates) {
    if (pid === process.pid) continue;
    const r = scanProcess(pid, proc);
    if (r === "denied") denied++;
    else if (r !== null && r !== "gone") processes.push(r);
  }
  processes.sort((a, b) => a.pid - b.pid);
  return { processes, denied };
}

export interface ProcessIdentity {
  startTime: number;
  comm: string | null;
  cmdline: string[];
  name: string;
  vmm: VmmKind;
}

function readOr(path: string): string | null {
  try {
    return readFileSync(path, "latin1");
  } catch {
    return null;
  }
}

/** Who `pid` is, named the way the observer names VMs (QEMU's -name, else the command name). */
export function identify(pid: number, proc = "/proc"): ProcessIdentity | undefined {
  const startTime = processStartTime(pid, proc);
  if (startTime === undefined) return undefined;
  const comm = readOr(join(proc, String(pid), "comm"))?.trim() ?? null;
  const raw = readOr(join(proc, String(pid), "cmdline")) ?? "";
  const cmdline = raw.split("\0").filter((s, i, a) => s !== "" || i < a.length - 1);
  const exe = basename(cmdline[0] ?? "");
  const vmm: VmmKind =
    exe.startsWith("qemu") || (comm ?? "").startsWith("qemu")
      ? "qemu"
      : cmdline.some((a, i) => a === "run" && i > 0 && /vmtool|main\.js|cli\.cjs/.test(cmdline[i - 1] ?? ""))
        ? "vmtool"
        : "other";
  return { startTime, comm, cmdline, name: qemuName(cmdline) ?? comm ?? `pid ${pid}`, vmm };
}

/** Thread ids of `pid` with their names (/proc/<pid>/task/<tid>/comm). */
export function threadsOf(pid: number, proc = "/proc"): { tid: number; comm: string }[] {
  let tids: string[];
  try {
    tids = readdirSync(join(proc, String(pid), "task"));
  } catch {
    return [];
  }
  const out: { tid: number; comm: string }[] = [];
  for (const t of tids) {
    const comm = readOr(join(proc, String(pid), "task", t, "comm"));
    if (comm !== null) out.push({ tid: Number(t), comm: comm.trim() });
  }
  return out.sort((a, b) => a.tid - b.tid);
}

/** QEMU names its vCPU threads `CPU <n>/KVM`. */
export function qemuVcpuOfThread(comm: string): number | undefined {
  const m = /^CPU (\d+)\/KVM$/.exec(comm);
  return m ? Number(m[1]) : undefined;
}
