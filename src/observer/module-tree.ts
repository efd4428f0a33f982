// Reads the vmtool module's debugfs tree (docs/debugfs-interface.md): global `0x%016llx` files, `cpu-%03d/`
// directories with one 32-byte NUL-padded decimal time per VMCS, optional `<vmcs>.info`, `sysregs`.
// Synchronous on purpose: a poll is a burst of tiny reads, and sync calls with one reused buffer cost a
// fraction of the promise machinery (see bench/observer-poll.ts). Files may vanish mid-poll: ENOENT is "gone".
// Every file is opened through src/files (non-blocking, regular files only): a copied tree may hold a FIFO or
// a symlink to /dev/zero under any name, and neither blocks nor fills memory; each is a skipped file.
import { readFileSync, readSync, readdirSync, statSync, statfsSync, type Dirent } from "node:fs";
import { join } from "node:path";
import { FileInputError } from "../files/errors.js";
import { InputFile } from "../files/input-file.js";
import type { Poll, Problem, Sighting, Source, SysRegs } from "./types.js";
import { decodeGlobals } from "./globals.js";
import { INT_MAX, parseDecimal } from "./numbers.js";

/** The module writes exactly this many bytes per VMCS file. */
export const TIME_FILE_SIZE = 32;

const CPU_DIR = /^cpu-(\d{3,})$/;
const VMCS_NAME = /^[0-9a-f]{1,16}$/;
const GLOBAL_VALUE = /^0x([0-9a-fA-F]{1,16})\n?$/;

// One buffer for every small read: a time file is 32 bytes, .info/sysregs/global files a few hundred.
const buf = Buffer.alloc(4096);

/**
 * Open a file of the tree: null when it vanished (ENOENT); throws FileInputError when it is not a regular file.
 * `kernelTree`: the live debugfs, where every file is the module's (opened without checking its kind).
 */
function openTreeFile(path: string, kernelTree = false): InputFile | null {
  try {
    return InputFile.open(path, { kernelFile: kernelTree });
  } catch (err) {
    if (err instanceof FileInputError && err.code === "ENOENT") return null;
    throw err;
  }
}

/** Read a small file into the shared buffer; returns its length, or null when it vanished (ENOENT). */
function readSmall(path: string, kernelTree = false): number | null {
  const file = openTreeFile(path, kernelTree);
  if (file === null) return null;
  try {
    return readAll(file.fd);
  } finally {
    file.close();
  }
}

/** Read from offset 0 into the shared buffer: one read() for any file shorter than the buffer. */
function readAll(fd: number): number {
  let len = 0;
  for (;;) {
    const n = readSync(fd, buf, len, buf.length - len, len);
    // A short read is the end of a regular file, and all of a debugfs one (simple_read_from_buffer).
    if (n === 0 || len + n >= buf.length || n < buf.length - len) return len + n;
    len += n;
  }
}

/** How many descriptors the cache may keep: the soft limit (Node raises it to the hard one) less a margin. */
function descriptorBudget(): number {
  try {
    const line = readFileSync("/proc/self/limits", "latin1")
      .split("\n")
      .find((l) => l.startsWith("Max open files"));
    const soft = Number(line?.split(/\s+/)[3]);
    if (Number.isFinite(soft)) return Math.max(0, Math.min(soft - 1024, 1 << 16));
  } catch {
    // no /proc: be modest
  }
  return 512;
}

/**
 * Open VMCS files kept between polls, read again with pread at offset 0: one syscall per file instead of
 * open+read+close, which makes a steady poll about a third of a plain read of the tree (bench/observer-poll.mjs).
 * Used for copied trees only (see ModuleSource). A file removed
 * and created again under the same name must not be read through its old descriptor: a change of the CPU
 * directory's mtime (a file created, removed or renamed there) drops that directory's descriptors (one stat
 * per directory, not per file), and a read that fails (debugfs answers EIO for a removed file) reopens by name.
 */
export class HandleCache {
  /** CPU directory -> file name -> kept descriptor and the poll that last saw it. */
  private dirs = new Map<string, { time: number; files: Map<string, { file: InputFile; gen: number }> }>();
  private gen = 0;
  private count = 0;
  private disabled = false;

  constructor(private readonly max = descriptorBudget()) {}

  /** Before reading a CPU directory's files (after its readdir): returns a reader for its files. */
  enterDir(dir: string): (name: string) => number | null {
    let d = this.dirs.get(dir);
    if (!d) this.dirs.set(dir, (d = { time: NaN, files: new Map() }));
    let t = NaN;
    try {
      const st = statSync(dir);
      t = st.mtimeMs + st.ctimeMs * 1e-3;
    } catch {
      // gone: its files will be ENOENT
    }
    if (t !== d.time) for (const [name, h] of d.files) this.drop(d.files, name, h.file);
    d.time = t;
    const files = d.files;
    const gen = this.gen;
    return (name) => {
      const h = files.get(name);
      if (h !== undefined) {
        h.gen = gen;
        try {
          return readAll(h.file.fd);
        } catch {
          // EIO from a removed debugfs file, or any other trouble: reopen by name below
          this.drop(files, name, h.file);
        }
      }
      const path = dir + "/" + name;
      if (this.disabled || this.count >= this.max) return readSmall(path);
      let file: InputFile | null;
      try {
        file = openTreeFile(path);
      } catch (err) {
        const code = err instanceof FileInputError ? err.code : undefined;
        if (code === "EMFILE" || code === "ENFILE") {
          // Out of descriptors: give them all back and read the plain way from now on.
          this.close();
          this.disabled = true;
          return readSmall(path);
        }
        throw err;
      }
      if (file === null) return null;
      files.set(name, { file, gen });
      this.count++;
      return readAll(file.fd);
    };
  }

  /** After a poll: close the descriptors of files (and directories) that were not in the tree any more. */
  endPoll(): void {
    for (const [dir, d] of this.dirs) {
      for (const [name, h] of d.files) if (h.gen !== this.gen) this.drop(d.files, name, h.file);
      if (d.files.size === 0) this.dirs.delete(dir);
    }
    this.gen++;
  }

  close(): void {
    for (const d of this.dirs.values()) for (const [name, h] of d.files) this.drop(d.files, name, h.file);
    this.dirs.clear();
  }

  private drop(files: Map<string, unknown>, name: string, file: InputFile): void {
    files.delete(name);
    this.count--;
    try {
      file.close();
    } catch {
      // already closed
    }
  }
}

function errText(err: unknown): string {
  if (err instanceof FileInputError) return err.rule;
  const e = err as NodeJS.ErrnoException;
  return e.code ? `${e.code}: ${e.message.replace(/^\w+: /, "")}` : String(err);
}

/**
 * Parse a 32-byte time file: decimal seconds, then NUL padding (a newline before the padding is tolerated).
 * Returns the seconds or a reason why the content is not a time.
 */
export function parseTimeFile(b: Buffer, len: number): number | string {
  if (len !== TIME_FILE_SIZE)
    return `${len} bytes, expected ${TIME_FILE_SIZE} (truncated or not a time file)`;
  let i = 0;
  let value = 0;
  while (i < len && b[i] >= 0x30 && b[i] <= 0x39) value = value * 10 + (b[i++] - 0x30);
  if (i === 0) return "no decimal time at the start";
  if (i > 19) return "time too long";
  if (value > Number.MAX_SAFE_INTEGER) return "time too large to be exact";
  if (i < len && b[i] === 0x0a) i++;
  for (; i < len; i++) if (b[i] !== 0) return `byte ${i} is 0x${b[i].toString(16)}, expected NUL padding`;
  return value;
}

/** Parse `<vmcs>.info`: `key value` lines. Unknown keys are ignored (the format may grow). */
function parseInfo(text: string): { lastSeenNs?: bigint; firstSeenNs?: bigint; sightings?: number } {
  const out: { lastSeenNs?: bigint; firstSeenNs?: bigint; sightings?: number } = {};
  for (const line of text.split("\n")) {
    const m = /^(\w+)\s+(\d+)$/.exec(line.trim());
    if (!m) continue;
    // Times are u64 nanoseconds: a longer number is not one the module wrote.
    const ns = m[2].length <= 20 && BigInt(m[2]) < 1n << 64n ? BigInt(m[2]) : undefined;
    if (m[1] === "last_seen_ns") out.lastSeenNs = ns;
    else if (m[1] === "first_seen_ns") out.firstSeenNs = ns;
    else if (m[1] === "sightings") out.sightings = parseDecimal(m[2]) ?? undefined;
  }
  return out;
}

/** Parse `sysregs`: `cr0 0x…` lines. */
export function parseSysRegs(text: string): SysRegs | null {
  const regs: SysRegs = {};
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    const m = /^(\w+)\s+0x([0-9a-fA-F]{1,16})$/.exec(line.trim());
    if (!m) return null;
    regs[m[1]] = BigInt("0x" + m[2]);
  }
  return regs;
}

export interface ModuleReadOptions {
  /** Also read `cpu-NNN/sysregs` (the module reads the registers on that CPU: costs an IPI per CPU). */
  sysregs?: boolean;
  /** Also read the optional `<vmcs>.info` files. */
  info?: boolean;
  /** Read and decode the global files (done once by `watch`, every time by `vcpus`). */
  globals?: boolean;
  /** The tree is the live debugfs, where every file is the module's: opened without checking each one's kind. */
  kernelTree?: boolean;
}

function listDir(path: string): Dirent[] | null {
  try {
    return readdirSync(path, { withFileTypes: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return null;
    throw err;
  }
}

/** One poll of the module's tree at `root` (`<debugfs>/vmtool` or a copy of it). */
export function readModuleTree(root: string, opts: ModuleReadOptions = {}, cache?: HandleCache): Poll {
  const takenAt = Date.now();
  const top = listDir(root);
  if (top === null) throw Object.assign(new Error(`${root}: no such directory`), { code: "ENOENT" });
  const problems: Problem[] = [];
  const sightings: Sighting[] = [];
  const cpus: number[] = [];
  const globals: Array<{ name: string; value: bigint }> = [];
  const sysregs = new Map<number, SysRegs>();

  for (const ent of top) {
    const m = CPU_DIR.exec(ent.name);
    if (m && ent.isDirectory()) {
      const dir = join(root, ent.name);
      const cpu = parseDecimal(m[1], INT_MAX);
      if (cpu === null) {
        problems.push({ path: dir, reason: `not a CPU folder: CPU ${m[1]} is out of range` });
        continue;
      }
      let names: string[];
      try {
        names = readdirSync(dir);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") continue; // CPU went offline mid-poll
        problems.push({ path: dir, reason: errText(err) });
        continue;
      }
      cpus.push(cpu);
      const readVmcs = cache
        ? cache.enterDir(dir)
        : (name: string) => readSmall(dir + "/" + name, opts.kernelTree);
      for (const name of names) {
        if (VMCS_NAME.test(name)) {
          let len: number | null;
          try {
            len = readVmcs(name);
          } catch (err) {
            problems.push({ path: dir + "/" + name, reason: errText(err) });
            continue;
          }
          if (len === null) continue;
          const t = parseTimeFile(buf, len);
          if (typeof t === "string") {
            problems.push({ path: dir + "/" + name, reason: t });
            continue;
          }
          const s: Sighting = { cpu, vcpu: name, lastSeen: t };
          if (opts.info) addInfo(s, dir + "/" + name + ".info", opts.kernelTree);
          sightings.push(s);
        } else if (name === "sysregs") {
          if (!opts.sysregs) continue;
          const path = dir + "/" + name;
          const text = readText(path, problems, opts.kernelTree);
          if (text === null) continue;
          const regs = parseSysRegs(text);
          if (regs) sysregs.set(cpu, regs);
          else problems.push({ path, reason: "not `name 0x…` lines" });
        } else if (name.includes(".")) {
          // `<vmcs>.info` and future extensions: read on demand above, otherwise ignored by contract.
        } else {
          problems.push({
            path: dir + "/" + name,
            reason: "unexpected entry (not a VMCS address, not sysregs)",
          });
        }
      }
    } else if (opts.globals && ent.isFile()) {
      const path = join(root, ent.name);
      const text = readText(path, problems, opts.kernelTree);
      if (text === null) continue;
      const v = GLOBAL_VALUE.exec(text);
      if (!v) {
        problems.push({ path, reason: `not a 0x%016llx value: ${JSON.stringify(text.slice(0, 40))}` });
        continue;
      }
      globals.push({ name: ent.name, value: BigInt("0x" + v[1]) });
    }
  }
  cpus.sort((a, b) => a - b);
  globals.sort((a, b) => a.name.localeCompare(b.name));
  const poll: Poll = { source: "vmtool", root, takenAt, cpus, sightings, problems };
  if (opts.globals) poll.globals = decodeGlobals(globals);
  if (opts.sysregs) poll.sysregs = sysregs;
  return poll;
}

function readText(path: string, problems: Problem[], kernelTree?: boolean): string | null {
  try {
    const len = readSmall(path, kernelTree);
    if (len === null) return null;
    if (len >= buf.length) {
      problems.push({ path, reason: `larger than ${buf.length} bytes` });
      return null;
    }
    return buf.toString("latin1", 0, len);
  } catch (err) {
    problems.push({ path, reason: errText(err) });
    return null;
  }
}

function addInfo(s: Sighting, path: string, kernelTree?: boolean): void {
  let len: number | null;
  try {
    len = readSmall(path, kernelTree);
  } catch {
    return; // optional file: its absence or unreadability is not a problem
  }
  if (len === null || len >= buf.length) return;
  const info = parseInfo(buf.toString("latin1", 0, len));
  if (info.lastSeenNs !== undefined) s.lastSeen = Number(info.lastSeenNs) / 1e9;
  if (info.firstSeenNs !== undefined) s.firstSeen = Number(info.firstSeenNs) / 1e9;
  if (info.sightings !== undefined) s.sightings = info.sightings;
}

const DEBUGFS_MAGIC = 0x64626720;

/** Is `path` on a debugfs mount (rather than a copied tree)? */
export function onDebugfs(path: string): boolean {
  try {
    return statfsSync(path).type === DEBUGFS_MAGIC;
  } catch {
    return false;
  }
}

/**
 * The module's tree as a pollable source. On a copied tree the VMCS files are kept open between polls; on the
 * live debugfs they are not, because an open debugfs file holds a reference on its module: a `watch` left
 * running would make `rmmod vmtool` fail.
 */
export class ModuleSource implements Source {
  readonly kind = "vmtool" as const;
  private first = true;
  private readonly cache: HandleCache | undefined;
  private readonly opts: ModuleReadOptions & { keepOpen?: boolean };
  constructor(
    readonly root: string,
    opts: ModuleReadOptions & { keepOpen?: boolean } = {},
  ) {
    const live = onDebugfs(root);
    this.opts = { kernelTree: live, ...opts };
    if (opts.keepOpen ?? !live) this.cache = new HandleCache();
  }
  poll(): Poll {
    // Global values are static: `watch` reads them on its first poll only.
    const globals = this.opts.globals !== false && this.first;
    this.first = false;
    try {
      return readModuleTree(this.root, { ...this.opts, globals }, this.cache);
    } finally {
      this.cache?.endPoll();
    }
  }
  close(): void {
    this.cache?.close();
  }
}
