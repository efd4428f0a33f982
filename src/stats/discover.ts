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
  /** When /proc/<pid>/fd was listed for this (ms since the epoch). */
  listedAt: number;
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
  return new FdScanner(proc).scan(pid);
}

/** How often a process's descriptors are listed again once it has been known for SETTLE_MS. */
const RESCAN_MS = 10_000;
/** For this long after a process is first seen its descriptors are listed at every poll (a VMM opens its vCPUs). */
const SETTLE_MS = 5_000;

type ScanResult = KvmProcess | null | "denied" | "gone";

/**
 * Lists processes' descriptors for KVM's anonymous files. Listing /proc/<pid>/fd is the largest part of a poll
 * (~4 µs a descriptor here: a VMM with 64 vCPUs holds hundreds), and a VMM's KVM descriptors change only as it
 * starts its VMs and vCPUs: a process is listed at every poll for SETTLE_MS after it is first seen, then every
 * RESCAN_MS; the links of numbers already seen are kept between listings and read again every RESCAN_MS too. A
 * VM that ends is noticed through its pidfd, not here. forget() drops a process (it ended, or its pid was reused).
 */
export class FdScanner {
  private readonly known = new Map<
    number,
    { links: Map<string, string>; firstAt: number; listedAt: number; fullAt: number; result: ScanResult }
  >();

  constructor(private readonly proc = "/proc") {}

  scan(pid: number, now = Date.now()): ScanResult {
    let k = this.known.get(pid);
    if (k && now - k.firstAt > SETTLE_MS && now - k.listedAt < RESCAN_MS) return k.result;
    const dir = join(this.proc, String(pid), "fd");
    let fds: string[];
    try {
      fds = readdirSync(dir);
    } catch (e) {
      this.known.delete(pid);
      const code = (e as NodeJS.ErrnoException).code;
      return code === "EACCES" || code === "EPERM" ? "denied" : "gone";
    }
    if (!k)
      this.known.set(pid, (k = { links: new Map(), firstAt: now, listedAt: now, fullAt: now, result: null }));
    k.listedAt = now;
    if (now - k.fullAt > RESCAN_MS) {
      k.links.clear();
      k.fullAt = now;
    }
    const names = new Set(fds);
    for (const name of k.links.keys()) if (!names.has(name)) k.links.delete(name);
    let found: KvmProcess | null = null;
    for (const name of fds) {
      let link = k.links.get(name);
      if (link === undefined) {
        try {
          link = readlinkSync(join(dir, name));
        } catch {
          continue; // closed meanwhile
        }
        k.links.set(name, link);
      }
      if (!link.startsWith("anon_inode:kvm-")) continue;
      found ??= {
        pid,
        vmFds: [],
        vmStatsFds: [],
        vcpuFds: new Map(),
        vcpuStatsFds: new Map(),
        listedAt: now,
      };
      const fd = Number(name);
      let m: RegExpExecArray | null;
      if (link === "anon_inode:kvm-vm") found.vmFds.push(fd);
      else if (link === "anon_inode:kvm-vm-stats") found.vmStatsFds.push(fd);
      else if ((m = VCPU_STATS_LINK.exec(link))) found.vcpuStatsFds.set(Number(m[1]), fd);
      else if ((m = VCPU_LINK.exec(link))) found.vcpuFds.set(Number(m[1]), fd);
    }
    // A process holding only copied stats fds (another `vmtool stat`) is not a VM.
    k.result = found && found.vmFds.length > 0 ? found : null;
    // The links of a process that is no VM are not kept (most processes): its listing is what is kept.
    if (k.result === null) k.links.clear();
    return k.result;
  }

  /** Forget a process (it ended, or its pid now names another process). */
  forget(pid: number): void {
    this.known.delete(pid);
  }

  /** Forget every process but those in `alive`. */
  keepOnly(alive: ReadonlySet<number>): void {
    for (const pid of this.known.keys()) if (!alive.has(pid)) this.known.delete(pid);
  }
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
export function vmPidsFromDebugfs(
  kvmDir: string | undefined,
  proc = "/proc",
  /** folder name -> process, kept between calls (a folder's name is its VM's for the VM's lifetime). */
  cache = new Map<string, number>(),
): Set<number> | undefined {
  if (kvmDir === undefined) return undefined;
  let names: string[];
  try {
    names = readdirSync(kvmDir);
  } catch {
    return undefined;
  }
  const pids = new Set<number>();
  const present = new Set<string>();
  for (const n of names) {
    const m = /^(\d+)-\d+$/.exec(n);
    if (!m) continue;
    present.add(n);
    const pid = cache.get(n) ?? tgidOf(Number(m[1]), proc);
    if (pid === undefined) continue;
    cache.set(n, pid);
    pids.add(pid);
  }
  for (const n of cache.keys()) if (!present.has(n)) cache.delete(n);
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
  scanner = new FdScanner(proc),
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
    const r = scanner.scan(pid);
    if (r === "denied") denied++;
    else if (r !== null && r !== "gone") processes.push(r);
  }
  processes.sort((a, b) => a.pid - b.pid);
  scanner.keepOnly(new Set(candidates));
  return { processes, denied };
}

export interface ProcessIdentity {
  startTime: number;
  comm: string | null;
  cmdline: string[];
  name: string;
  /** The name is the guest's own (QEMU's -name), not the command's. */
  named: boolean;
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
  const own = qemuName(cmdline);
  return { startTime, comm, cmdline, name: own ?? comm ?? `pid ${pid}`, named: own !== null, vmm };
}

/** Thread ids of `pid` with their names (/proc/<pid>/task/<tid>/comm; `names` keeps them between calls). */
export function threadsOf(
  pid: number,
  proc = "/proc",
  names = new Map<number, string>(),
): { tid: number; comm: string }[] {
  let tids: string[];
  try {
    tids = readdirSync(join(proc, String(pid), "task"));
  } catch {
    return [];
  }
  const out: { tid: number; comm: string }[] = [];
  const alive = new Set<number>();
  for (const t of tids) {
    const tid = Number(t);
    alive.add(tid);
    let comm = names.get(tid);
    if (comm === undefined) {
      const text = readOr(join(proc, String(pid), "task", t, "comm"));
      if (text === null) continue; // ended meanwhile
      names.set(tid, (comm = text.trim()));
    }
    out.push({ tid, comm });
  }
  for (const tid of names.keys()) if (!alive.has(tid)) names.delete(tid);
  return out.sort((a, b) => a.tid - b.tid);
}

/** QEMU names its vCPU threads `CPU <n>/KVM`. */
export function qemuVcpuOfThread(comm: string): number | undefined {
  const m = /^CPU (\d+)\/KVM$/.exec(comm);
  return m ? Number(m[1]) : undefined;
}
