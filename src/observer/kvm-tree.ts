// Reads KVM's own debugfs (`<debugfs>/kvm/<pid>-<fd>/vcpuN/pid`) and /proc, so the observer works on any KVM
// host, with or without the vmtool module. KVM does not say where a vCPU ran; its thread does: /proc stat
// field 39 is the CPU it last ran on, and a vCPU counts as "seen" on that CPU at a poll where its CPU time
// advanced (or, the first time it is polled, when it is running right now).
import { readSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { FileInputError } from "../files/errors.js";
import { InputFile } from "../files/input-file.js";
import { INT_MAX, PID_MAX, parseDecimal } from "./numbers.js";
import type { KvmVcpu, KvmVm, Poll, Problem, Sighting, Source } from "./types.js";

const VM_DIR = /^(\d+)-(\d+)$/;
const VCPU_DIR = /^vcpu(\d+)$/;
/** The per-VM statistics worth showing (KVM has ~60; these say what the guest is doing). */
export const MAIN_STATS = ["exits", "io_exits", "mmio_exits", "halt_exits"] as const;

/**
 * The most read of one file: KVM's statistics and pid files hold one number, /proc stat and schedstat one
 * line. A file in a copied tree may be anything (a FIFO, a symlink to /dev/zero): only regular files are read.
 */
const SMALL_FILE_MAX = 4096;
/** /proc/<pid>/cmdline is shown cut anyway and searched for `-name`: the rest of a longer one is not read. */
const CMDLINE_MAX = 64 * 1024;

/** The start of a file, at most `max` bytes; throws FileInputError (missing, not a regular file, unreadable). */
function readText(path: string, max = SMALL_FILE_MAX): string {
  const file = InputFile.open(path);
  try {
    return Buffer.from(file.readHead(max).bytes).toString("latin1");
  } finally {
    file.close();
  }
}

function readOr(path: string, max?: number): string | null {
  try {
    return readText(path, max);
  } catch {
    return null;
  }
}

/** Parse /proc/<pid>/task/<tid>/stat: the fields after the `(comm)` (which may hold spaces and parens). */
export function parseStat(text: string): { state: string; cpu: number; cpuTicks: number } | null {
  const close = text.lastIndexOf(")");
  if (close < 0) return null;
  const f = text.slice(close + 2).split(" ");
  // f[0] is field 3 (state); field n is f[n - 3].
  const utime = parseDecimal(f[14 - 3] ?? "");
  const stime = parseDecimal(f[15 - 3] ?? "");
  const cpu = parseDecimal(f[39 - 3] ?? "", INT_MAX);
  if (!f[0] || utime === null || stime === null || cpu === null) return null;
  return { state: f[0], cpu, cpuTicks: utime + stime };
}

/** QEMU's `-name guest=NAME,...` or `-name NAME`, else null. */
export function qemuName(cmdline: string[]): string | null {
  const i = cmdline.indexOf("-name");
  if (i < 0 || i + 1 >= cmdline.length) return null;
  const arg = cmdline[i + 1];
  const m = /(?:^|,)guest=([^,]*)/.exec(arg);
  if (m) return m[1];
  return arg.split(",")[0] || null;
}

// USER_HZ: the unit of utime/stime in /proc stat; 100 on every Linux architecture vmtool runs on.
const NS_PER_TICK = 1e7;
/**
 * A vCPU's debugfs `pid` file names the thread that last ran it; it cannot be read again through a kept
 * descriptor (debugfs gives it no seek), and it changes only when another thread takes the vCPU over. So the
 * thread id is read again after this long, or at once when that thread's files stop answering.
 */
const TID_TTL_MS = 30_000;
/** A VM's statistics files refused (lockdown): asked again after this long, not at every poll. */
const STATS_RETRY_MS = 10_000;
/** A VM folder is listed at every poll for this long after it is first seen, then every LISTING_TTL_MS. */
const LISTING_SETTLE_MS = 10_000;
const LISTING_TTL_MS = 5000;

interface VcpuHistory {
  cpuTimeNs: number | null;
  /** host CPU -> last time (s) the vCPU was seen there (null: placed there, never seen advancing). */
  seen: Map<number, number | null>;
}

/** KVM's debugfs (`<debugfs>/kvm`) as a pollable source; remembers CPU times between polls. */
export class KvmSource implements Source {
  readonly kind = "kvm" as const;
  private history = new Map<string, VcpuHistory>();
  private names = new Map<string, { comm: string | null; cmdline: string[]; name: string }>();
  /**
   * The /proc stat and schedstat files of vCPU threads, kept open between polls and read again from their
   * start (procfs writes them anew at each read at offset 0): one pread per file and poll instead of an open,
   * a read and a close. A thread that ends makes its reads fail (ESRCH); files not read at a poll are closed
   * after it.
   */
  private held = new Map<string, InputFile>();
  private heldSeen = new Set<string>();
  private readonly heldBuf = Buffer.alloc(SMALL_FILE_MAX);
  /** vCPU id -> its thread id and when its pid file was read. */
  private tids = new Map<string, { tid: number; at: number }>();
  /**
   * A thread's last /proc stat reading, keyed by its task folder, with the on-CPU time it was read at: a thread
   * whose time has not moved since has not run, so the CPU it last ran on is the same (its stat is not read).
   */
  private lastStat = new Map<string, { ns: number; cpu: number; state: string; cpuTicks: number }>();
  /** VM folder -> why its statistics files were refused, and when. */
  private statsRefused = new Map<string, { reason: string; at: number }>();
  /**
   * VM folder -> what it holds (its vCPU folders and statistics files), listed at every poll while the VM is
   * young (its VMM creates vCPUs) and every LISTING_TTL_MS after, and at once when its inode or change time
   * moves (a new VM of the same pid and fd, a vCPU added).
   */
  private listings = new Map<string, { ino: string; firstAt: number; at: number; inside: string[] }>();

  constructor(
    readonly root: string,
    private readonly proc = "/proc",
  ) {}

  poll(): Poll {
    const takenAt = Date.now();
    const now = takenAt / 1000;
    const problems: Problem[] = [];
    const vms: KvmVm[] = [];
    const live = new Set<string>();
    const entries = readdirSync(this.root); // the caller checked the root; an error here is the caller's to report
    for (const name of entries.sort()) {
      const m = VM_DIR.exec(name);
      if (!m) continue; // KVM's global statistics files sit beside the VM directories
      const dir = join(this.root, name);
      let inside: string[];
      try {
        inside = this.list(name, dir, takenAt);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT")
          problems.push({ path: dir, reason: String(err) });
        continue; // the VM went away mid-poll
      }
      const pid = parseDecimal(m[1], PID_MAX);
      const fd = parseDecimal(m[2], INT_MAX);
      if (pid === null || fd === null) {
        problems.push({
          path: dir,
          reason: `not a VM folder of KVM's: ${pid === null ? `pid ${m[1]}` : `fd ${m[2]}`} is out of range`,
        });
        continue;
      }
      const vm: KvmVm = {
        id: name,
        pid,
        fd,
        ...this.describe(name, pid),
        stats: {},
        vcpus: [],
      };
      const refused = this.statsRefused.get(name);
      if (refused && takenAt - refused.at < STATS_RETRY_MS) vm.statsError = refused.reason;
      else this.statsRefused.delete(name);
      for (const stat of MAIN_STATS) {
        if (vm.statsError !== undefined || !inside.includes(stat)) continue;
        let text: string;
        try {
          text = readText(join(dir, stat));
        } catch (err) {
          // Kernel lockdown forbids reading debugfs files that are writable (the stats are clearable).
          vm.statsError =
            err instanceof FileInputError && err.code === "EPERM"
              ? "not readable (EPERM: the kernel's lockdown restricts debugfs)"
              : `not readable (${err instanceof FileInputError ? err.rule : String(err)})`;
          this.statsRefused.set(name, { reason: vm.statsError, at: takenAt });
          break;
        }
        const count = parseDecimal(text.trim());
        if (count === null)
          problems.push({
            path: join(dir, stat),
            reason: `not a count: ${JSON.stringify(text.slice(0, 24))}`,
          });
        else vm.stats[stat] = count;
      }
      for (const sub of inside) {
        const v = VCPU_DIR.exec(sub);
        if (!v) continue;
        const index = parseDecimal(v[1], INT_MAX);
        if (index === null) {
          problems.push({ path: join(dir, sub), reason: `not a vCPU folder: vCPU ${v[1]} is out of range` });
          continue;
        }
        const vcpu = this.readVcpu(`${name}/${sub}`, index, join(dir, sub), pid, problems, takenAt);
        if (vcpu) {
          vm.vcpus.push(vcpu);
          live.add(vcpu.id);
        }
      }
      vm.vcpus.sort((a, b) => a.index - b.index);
      vms.push(vm);
    }

    // Seen: CPU time advanced since the last poll (first poll of a vCPU: its thread is running now).
    const sightings: Sighting[] = [];
    const cpus = new Set<number>();
    for (const vm of vms) {
      for (const v of vm.vcpus) {
        let h = this.history.get(v.id);
        if (!h) this.history.set(v.id, (h = { cpuTimeNs: null, seen: new Map() }));
        const advanced =
          v.cpuTimeNs !== null && (h.cpuTimeNs === null ? v.state === "R" : v.cpuTimeNs > h.cpuTimeNs);
        if (v.cpu !== null) {
          if (advanced) h.seen.set(v.cpu, now);
          else if (!h.seen.has(v.cpu)) h.seen.set(v.cpu, null);
        }
        if (v.cpuTimeNs !== null) h.cpuTimeNs = v.cpuTimeNs;
        for (const [cpu, lastSeen] of h.seen) {
          sightings.push({ cpu, vcpu: v.id, lastSeen });
          cpus.add(cpu);
        }
      }
    }
    for (const id of this.history.keys()) if (!live.has(id)) this.history.delete(id);
    for (const id of this.tids.keys()) if (!live.has(id)) this.tids.delete(id);
    for (const task of this.lastStat.keys())
      if (!this.heldSeen.has(join(task, "schedstat"))) this.lastStat.delete(task);
    for (const vm of this.statsRefused.keys())
      if (!vms.some((v) => v.id === vm)) this.statsRefused.delete(vm);
    for (const vm of this.listings.keys()) if (!vms.some((v) => v.id === vm)) this.listings.delete(vm);
    for (const [path, f] of this.held)
      if (!this.heldSeen.has(path)) {
        f.close();
        this.held.delete(path);
      }
    this.heldSeen.clear();
    for (const id of this.names.keys()) if (!vms.some((vm) => vm.id === id)) this.names.delete(id);
    return {
      source: "kvm",
      root: this.root,
      takenAt,
      cpus: [...cpus].sort((a, b) => a - b),
      sightings,
      problems,
      vms,
    };
  }

  /** What a VM folder holds: listed again while the VM is young, after LISTING_TTL_MS, or for a new VM. */
  private list(name: string, dir: string, now: number): string[] {
    // Its inode and change time: a folder made anew (another VM) or given another vCPU differs in one of them.
    const st = statSync(dir);
    const ino = `${st.ino}:${st.ctimeMs}`;
    let l = this.listings.get(name);
    if (l && l.ino !== ino) {
      // Another VM in the folder of one that ended, or a vCPU added: what was known of its vCPUs is read again.
      for (const id of this.tids.keys()) if (id.startsWith(`${name}/`)) this.tids.delete(id);
      this.statsRefused.delete(name);
      l = undefined;
    }
    if (l && now - l.firstAt > LISTING_SETTLE_MS && now - l.at < LISTING_TTL_MS) return l.inside;
    const inside = readdirSync(dir);
    this.listings.set(name, { ino, firstAt: l?.firstAt ?? now, at: now, inside });
    return inside;
  }

  /** A small /proc file of a thread, through a descriptor kept open between polls; null if unreadable. */
  private readHeld(path: string): string | null {
    let f = this.held.get(path);
    if (!f) {
      try {
        f = InputFile.open(path);
      } catch {
        return null;
      }
      this.held.set(path, f);
    }
    let n: number;
    try {
      n = readSync(f.fd, this.heldBuf, 0, SMALL_FILE_MAX, 0);
    } catch {
      // The thread ended (ESRCH): its number may come back as another thread, opened anew.
      f.close();
      this.held.delete(path);
      return null;
    }
    this.heldSeen.add(path);
    return this.heldBuf.toString("latin1", 0, n);
  }

  /** Close the descriptors kept between polls. */
  close(): void {
    for (const f of this.held.values()) f.close();
    this.held.clear();
  }

  private describe(id: string, pid: number): { comm: string | null; cmdline: string[]; name: string } {
    let d = this.names.get(id);
    if (!d) {
      const comm = readOr(join(this.proc, String(pid), "comm"))?.trim() ?? null;
      const raw = readOr(join(this.proc, String(pid), "cmdline"), CMDLINE_MAX) ?? "";
      const cmdline = raw.split("\0").filter((s, i, a) => s !== "" || i < a.length - 1);
      d = { comm, cmdline, name: qemuName(cmdline) ?? comm ?? `pid ${pid}` };
      // A process that is gone may come back as another with the same pid: only cache what was found.
      if (comm !== null) this.names.set(id, d);
    }
    return d;
  }

  private readVcpu(
    id: string,
    index: number,
    dir: string,
    pid: number,
    problems: Problem[],
    now: number,
  ): KvmVcpu | null {
    let tid: number;
    const known = this.tids.get(id);
    if (known && now - known.at < TID_TTL_MS) tid = known.tid;
    else {
      let pidText: string;
      try {
        pidText = readText(join(dir, "pid"));
      } catch (err) {
        if (!(err instanceof FileInputError) || err.code !== "ENOENT")
          problems.push({
            path: join(dir, "pid"),
            reason: err instanceof FileInputError ? err.rule : String(err),
          });
        return null; // vanished mid-poll, or not a pid file
      }
      const read = parseDecimal(pidText.trim(), PID_MAX);
      if (read === null) {
        problems.push({
          path: join(dir, "pid"),
          reason: `not a thread id: ${JSON.stringify(pidText.slice(0, 20))}`,
        });
        return null;
      }
      tid = read;
      // A vCPU that never ran (0) is asked again at the next poll.
      if (tid !== 0) this.tids.set(id, { tid, at: now });
    }
    const v: KvmVcpu = { id, index, tid, cpu: null, cpuTimeNs: null, state: null };
    if (tid === 0) return v; // created, never run
    const task = join(this.proc, String(pid), "task", String(tid));
    // schedstat's first field is on-CPU time in ns: far finer than stat's 10 ms ticks.
    const sched = this.readHeld(join(task, "schedstat"));
    const ns = sched === null ? null : parseDecimal(sched.split(" ")[0]);
    const last = this.lastStat.get(task);
    let parsed: { state: string; cpu: number; cpuTicks: number } | null;
    // Not run since the last poll, and not running then: the same CPU and state (stat is not read).
    if (ns !== null && last !== undefined && last.ns === ns && last.state !== "R") {
      parsed = last;
      const statPath = join(task, "stat");
      if (this.held.has(statPath)) this.heldSeen.add(statPath); // kept open for when the thread runs again
    } else {
      const stat = this.readHeld(join(task, "stat"));
      parsed = stat === null ? null : parseStat(stat);
    }
    if (!parsed) {
      this.tids.delete(id); // thread gone (the VM is shutting down, or another thread runs the vCPU now)
      this.lastStat.delete(task);
      return v;
    }
    if (ns !== null) this.lastStat.set(task, { ns, ...parsed });
    v.cpu = parsed.cpu;
    v.state = parsed.state;
    v.cpuTimeNs = ns ?? parsed.cpuTicks * NS_PER_TICK;
    return v;
  }
}
