// KVM's statistics in debugfs (`<debugfs>/kvm/<pid>-<fd>/<stat>`), kvm_stat's other source: one decimal number
// per file, the same names as the binary stats (a VM folder holds its VM stats and its vCPUs' stats summed).
// Root only, and under kernel lockdown most files refuse reads (EPERM: debugfs forbids reading writable
// files, and the cumulative stats are writable, to be cleared): such files are listed, never fatal.
import { closeSync, constants, fstatSync, openSync, readFileSync, readSync, readdirSync } from "node:fs";
import { join } from "node:path";

/** Where debugfs is mounted (/proc/mounts), or undefined. */
export function findDebugfs(mounts = "/proc/mounts"): string | undefined {
  let text = "";
  try {
    text = readFileSync(mounts, "utf8");
  } catch {
    return undefined;
  }
  for (const line of text.split("\n")) {
    const [, where, type] = line.split(" ");
    if (type === "debugfs" && where) return where.replace(/\\040/g, " ");
  }
  return undefined;
}

export interface DebugfsRead {
  /** name -> value, summed over the process's VM folders. */
  values: Map<string, number>;
  /** name -> file mode: 0444 files are instant values, the writable ones cumulative (clearable). */
  modes: Map<string, number>;
  /** Files that could not be read, with the error code (EPERM under lockdown). */
  refused: Map<string, string>;
  /** The folders read (`<pid>-<fd>`). */
  folders: string[];
  /** vCPU id -> thread id, from each folder's `vcpuN/pid` (read-only files: readable under lockdown). */
  threads: Map<number, number>;
}

const MAX_FILE = 64;

function readNumber(path: string): { value: number; mode: number } | string {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? "error";
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return "not a file";
    const buf = Buffer.alloc(MAX_FILE);
    // Read at the file's own offset (a fresh descriptor's 0): KVM's files refuse positioned reads (ESPIPE).
    let n = 0;
    for (let got = 1; got > 0 && n < MAX_FILE; n += got) got = readSync(fd, buf, n, MAX_FILE - n, null);
    const text = buf.toString("latin1", 0, n).trim();
    // A histogram's file shows one number too (its first bucket); anything else is not a stat.
    if (!/^\d+$/.test(text)) return "not a number";
    return { value: Number(text), mode: st.mode & 0o777 };
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? "error";
  } finally {
    closeSync(fd);
  }
}

/**
 * The VM folders of `pid` under `<debugfs>/kvm`, read. `refused`: files known to refuse reads (by folder), not
 * tried again (lockdown is never lifted while the system runs); filled in here.
 */
export function readDebugfsVm(
  kvmDir: string,
  pid: number,
  refused = new Map<string, Map<string, string>>(),
): DebugfsRead {
  const out: DebugfsRead = {
    values: new Map(),
    modes: new Map(),
    refused: new Map(),
    folders: [],
    threads: new Map(),
  };
  let names: string[];
  try {
    names = readdirSync(kvmDir);
  } catch {
    return out;
  }
  for (const folder of names) {
    if (!folder.startsWith(`${pid}-`) || !/^\d+-\d+$/.test(folder)) continue;
    const dir = join(kvmDir, folder);
    let files: string[];
    try {
      files = readdirSync(dir);
    } catch {
      continue; // the VM went away
    }
    out.folders.push(folder);
    let known = refused.get(folder);
    if (!known) refused.set(folder, (known = new Map<string, string>()));
    for (const [f, code] of known) out.refused.set(f, code);
    for (const f of files) {
      if (known.has(f)) continue;
      const vcpu = /^vcpu(\d+)$/.exec(f);
      if (vcpu) {
        const tid = readNumber(join(dir, f, "pid"));
        if (typeof tid !== "string" && tid.value > 0) out.threads.set(Number(vcpu[1]), tid.value);
        continue;
      }
      if (f === "mmu_rmaps_stat") continue; // a table, not a number
      const r = readNumber(join(dir, f));
      if (typeof r === "string") {
        if (r !== "EISDIR" && r !== "not a file") out.refused.set(f, r);
        if (r === "EPERM" || r === "EACCES") known.set(f, r);
        continue;
      }
      out.values.set(f, (out.values.get(f) ?? 0) + r.value);
      out.modes.set(f, r.mode);
    }
  }
  // Folders gone (their VMs ended) are forgotten.
  for (const folder of refused.keys())
    if (folder.startsWith(`${pid}-`) && !out.folders.includes(folder)) refused.delete(folder);
  return out;
}
