// The run directory: while a run lasts, vmtool publishes it for `vmtool stat` (and `vmtool serve`) in
// <base>/<pid>/, mode 0700, where <base> is $XDG_RUNTIME_DIR/vmtool, else /run/vmtool for root, else
// <tmpdir>/vmtool-<uid>. It holds:
//   run.json   what the run is (RunDescription), written once, atomically (a reader never sees half of it);
//   counters   the vCPU threads' live exit counters, memory-mapped (live-counters.ts has the layout).
// The directory is removed when the run ends. One left by a process that died (SIGKILL) is stale: the next run
// or `vmtool stat` that finds it removes it (its pid is gone, or belongs to a process started at another time).
// Publishing never stops a run: when the base cannot be used safely (not a directory, another owner, open to
// others) the run simply goes unpublished. docs/stat.md describes the directory for other tools.
import {
  closeSync,
  fstatSync,
  ftruncateSync,
  lstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as libc from "../kvm/libc.js";
import {
  HEADER,
  HEADER_BYTES,
  LAYOUT_VERSION,
  LIVE_MAGIC,
  ADDRESS_ENTRIES,
  REASON_SLOTS,
  SUMMARY_BYTES,
  TABLE_BYTES,
  blockOffsets,
  countersFileBytes,
  type LiveCountersDescriptor,
} from "./live-counters.js";

/** run.json's format version. */
export const RUN_FORMAT = 1;
export const RUN_FILE = "run.json";
export const COUNTERS_FILE = "counters";

/** What run.json says. Readers must check every field: any process of the same user can write the file. */
export interface RunDescription {
  format: typeof RUN_FORMAT;
  pid: number;
  /** The process's start time, in clock ticks after boot (/proc/<pid>/stat field 22): tells a reused pid. */
  startTime: number;
  /** ISO time the run started. */
  startedAt: string;
  /** The process's command line (process.argv). */
  argv: string[];
  memSize: number;
  /** The VM's fd and its binary stats fd (-1: none) in the run's process, for pidfd_getfd. */
  vmFd: number;
  vmStatsFd: number;
  vcpus: { id: number; fd: number; statsFd: number }[];
  /** The counters file's layout version (live-counters.ts). */
  counters: number;
}

/** The base folder this process publishes its runs in. */
export function ownRunBase(env: NodeJS.ProcessEnv = process.env): string {
  const xdg = env.XDG_RUNTIME_DIR;
  if (xdg && xdg.startsWith("/")) return join(xdg, "vmtool");
  if (process.getuid?.() === 0) return "/run/vmtool";
  return join(tmpdir(), `vmtool-${process.getuid?.() ?? 0}`);
}

/** Field 22 of /proc/<pid>/stat (start time in clock ticks after boot), or undefined if the process is gone. */
export function processStartTime(pid: number | "self", proc = "/proc"): number | undefined {
  let text: string;
  try {
    text = readFileSync(join(proc, String(pid), "stat"), "latin1");
  } catch {
    return undefined;
  }
  const close = text.lastIndexOf(")");
  if (close < 0) return undefined;
  // Fields after the "(comm)": the first is field 3, so field 22 is the 20th.
  const v = Number(text.slice(close + 2).split(" ")[19]);
  return Number.isSafeInteger(v) ? v : undefined;
}

/** Make `dir` (mode 0700) or accept it if it is already a directory of ours that nobody else may enter. */
function ownPrivateDir(dir: string): boolean {
  try {
    mkdirSync(dir, { mode: 0o700 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") return false;
  }
  try {
    const st = lstatSync(dir);
    return st.isDirectory() && st.uid === process.getuid?.() && (st.mode & 0o077) === 0;
  } catch {
    return false;
  }
}

/** Remove the run directories under `base` whose process is gone (or is another process with the same pid). */
export function removeStaleRuns(base: string, proc = "/proc"): string[] {
  const removed: string[] = [];
  let names: string[];
  try {
    names = readdirSync(base);
  } catch {
    return removed;
  }
  for (const name of names) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    const dir = join(base, name);
    let startTime: unknown;
    try {
      startTime = (JSON.parse(readFileSync(join(dir, RUN_FILE), "utf8")) as { startTime?: unknown })
        .startTime;
    } catch {
      startTime = undefined; // half-made or unreadable: stale if its process is gone
    }
    const now = processStartTime(Number(name), proc);
    if (now !== undefined && (startTime === undefined || startTime === now)) continue;
    try {
      rmSync(dir, { recursive: true, force: true });
      removed.push(dir);
    } catch {
      // not ours to remove, or removed meanwhile
    }
  }
  return removed;
}

/** The published run: its directory, and the counters file mapped for the vCPU threads. */
export class RunDirectory {
  private closed = false;

  private constructor(
    readonly dir: string,
    private readonly addr: bigint,
    private readonly size: number,
    private readonly vcpus: number,
  ) {}

  /**
   * Publish a run of `vcpus` vCPUs (run.json and the counters file), or return undefined when it cannot be
   * done safely here. `describe` gives run.json's fields other than those this module fills in.
   */
  static create(
    vcpus: number,
    describe: Omit<RunDescription, "format" | "pid" | "startTime" | "startedAt" | "argv" | "counters">,
    base = ownRunBase(),
  ): RunDirectory | undefined {
    if (!base.startsWith("/")) return undefined;
    const parent = join(base, "..");
    // $XDG_RUNTIME_DIR exists already; /run and the temporary folder do too. Only the vmtool folder is made.
    try {
      if (!lstatSync(parent).isDirectory()) return undefined;
    } catch {
      return undefined;
    }
    if (!ownPrivateDir(base)) return undefined;
    removeStaleRuns(base);
    const dir = join(base, String(process.pid));
    rmSync(dir, { recursive: true, force: true }); // a stale one of an earlier process with this pid
    if (!ownPrivateDir(dir)) return undefined;
    const size = countersFileBytes(vcpus);
    let addr = libc.MAP_FAILED;
    try {
      const fd = openSync(join(dir, COUNTERS_FILE), "wx+", 0o600);
      try {
        ftruncateSync(fd, size);
        if (fstatSync(fd).size !== size) throw new Error("counters file has the wrong size");
        addr = libc.mmap(null, size, libc.PROT_READ | libc.PROT_WRITE, libc.MAP_SHARED, fd, 0);
      } finally {
        closeSync(fd);
      }
      if (addr === libc.MAP_FAILED) throw new Error("cannot map the counters file");
      const header = new Uint32Array(libc.viewOf(addr, HEADER_BYTES));
      header[HEADER.VERSION] = LAYOUT_VERSION;
      header[HEADER.HEADER_BYTES] = HEADER_BYTES;
      header[HEADER.VCPUS] = vcpus;
      header[HEADER.SUMMARY_BYTES] = SUMMARY_BYTES;
      header[HEADER.TABLE_BYTES] = TABLE_BYTES;
      header[HEADER.REASON_SLOTS] = REASON_SLOTS;
      header[HEADER.ADDRESS_ENTRIES] = ADDRESS_ENTRIES;
      header[HEADER.PID] = process.pid;
      // The magic last: a reader that sees it sees the rest of the header.
      Atomics.store(new Int32Array(header.buffer, 0, 1), HEADER.MAGIC, LIVE_MAGIC);
      const run: RunDescription = {
        format: RUN_FORMAT,
        pid: process.pid,
        startTime: processStartTime("self") ?? 0,
        startedAt: new Date().toISOString(),
        argv: process.argv,
        counters: LAYOUT_VERSION,
        ...describe,
      };
      const tmp = join(dir, `${RUN_FILE}.tmp`);
      const fd2 = openSync(tmp, "wx", 0o600);
      try {
        writeSync(fd2, JSON.stringify(run) + "\n");
      } finally {
        closeSync(fd2);
      }
      renameSync(tmp, join(dir, RUN_FILE));
      return new RunDirectory(dir, addr, size, vcpus);
    } catch {
      if (addr !== libc.MAP_FAILED) libc.munmap(addr, size);
      rmSync(dir, { recursive: true, force: true });
      return undefined;
    }
  }

  /** What vCPU `index`'s thread needs to count into its block. */
  vcpuCounters(index: number): LiveCountersDescriptor {
    return { addr: this.addr, size: this.size, ...blockOffsets(this.vcpus, index) };
  }

  /** Unpublish the run. Only once no vCPU thread counts any more (the mapping goes away). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    rmSync(this.dir, { recursive: true, force: true });
    libc.munmap(this.addr, this.size);
  }
}
