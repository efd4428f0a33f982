// vmtool's published runs (src/vmm/run-dir.ts writes them): where to look, run.json checked field by field
// (any process of the run's user can write it, and root reads other users' runs), and the live exit counters
// read with one pread per poll. Stale runs (their process gone) are skipped, and removed where this user owns
// the folder they are in.
import { closeSync, constants, fstatSync, lstatSync, openSync, readSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  COUNTERS_FILE,
  RUN_FILE,
  RUN_FORMAT,
  ownRunBase,
  processStartTime,
  removeStaleRuns,
} from "../vmm/run-dir.js";
import type { RunDescription } from "../vmm/run-dir.js";
import {
  ADDRESS_ENTRIES,
  HEADER,
  HEADER_BYTES,
  LAYOUT_VERSION,
  LIVE_MAGIC,
  REASON_SLOTS,
  SUMMARY,
  SUMMARY_BYTES,
  TABLE_BYTES,
  blockOffsets,
  countersFileBytes,
} from "../vmm/live-counters.js";
import { StatsFormatError } from "./errors.js";

const MAX_RUN_JSON = 256 * 1024;
const MAX_VCPUS = 4096;

export interface PublishedRun {
  dir: string;
  run: RunDescription;
}

/** The folders runs are published in: this user's, and for root every user's. */
export function runBases(): string[] {
  const bases = [ownRunBase()];
  if (process.getuid?.() === 0) {
    bases.push("/run/vmtool");
    for (const dir of listOr("/run/user")) bases.push(join("/run/user", dir, "vmtool"));
    for (const dir of listOr(tmpdir())) if (/^vmtool-\d+$/.test(dir)) bases.push(join(tmpdir(), dir));
  }
  return [...new Set(bases)];
}

function listOr(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** A regular file read whole (at most `max` bytes), never through a symbolic link. */
function readSmallFile(path: string, max: number): Buffer {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new StatsFormatError(`${path}: not a regular file`);
    if (st.size > max) throw new StatsFormatError(`${path}: ${st.size} bytes, more than ${max}`);
    const buf = Buffer.alloc(st.size);
    const n = readSync(fd, buf, 0, buf.length, 0);
    return buf.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}

const isInt = (v: unknown, min = 0): v is number => Number.isSafeInteger(v) && (v as number) >= min;

/** run.json, checked: every field the reader uses has the right type and range. */
export function parseRunDescription(text: string, where: string): RunDescription {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new StatsFormatError(`${where}: not JSON`);
  }
  const r = v as Partial<RunDescription> | null;
  const vcpus = r?.vcpus;
  const ok =
    r !== null &&
    typeof r === "object" &&
    r.format === RUN_FORMAT &&
    isInt(r.pid, 1) &&
    isInt(r.startTime) &&
    isInt(r.vmFd) &&
    isInt(r.vmStatsFd, -1) &&
    isInt(r.memSize) &&
    r.counters === LAYOUT_VERSION &&
    Array.isArray(r.argv) &&
    r.argv.every((a) => typeof a === "string") &&
    Array.isArray(vcpus) &&
    vcpus.length <= MAX_VCPUS &&
    vcpus.every(
      (c) => c !== null && typeof c === "object" && isInt(c.id) && isInt(c.fd) && isInt(c.statsFd, -1),
    );
  if (!ok) throw new StatsFormatError(`${where}: not a vmtool run description (format ${RUN_FORMAT})`);
  return r as RunDescription;
}

/**
 * The live runs, by pid. A run counts when its process is alive and started when run.json says (a reused
 * pid is another process). Stale runs in folders this user owns are removed; unreadable ones are reported.
 */
export function findRuns(
  proc = "/proc",
  problems?: { what: string; reason: string }[],
): Map<number, PublishedRun> {
  return new RunFinder(proc).find(problems);
}

/** How often the list of base folders, and the runs already known, are looked at again in full. */
const REFRESH_MS = 10_000;

/**
 * findRuns() for a watch: each poll lists the base folders (one readdir each) and reads only the run.json of
 * runs not seen before; everything is checked again in full every REFRESH_MS.
 */
export class RunFinder {
  private bases: string[] = [];
  private basesAt = -Infinity;
  private known = new Map<string, PublishedRun>();
  private knownAt = -Infinity;

  constructor(private readonly proc = "/proc") {}

  find(problems?: { what: string; reason: string }[], now = Date.now()): Map<number, PublishedRun> {
    if (now - this.basesAt > REFRESH_MS) {
      this.bases = runBases();
      this.basesAt = now;
    }
    const full = now - this.knownAt > REFRESH_MS;
    if (full) this.knownAt = now;
    const runs = new Map<number, PublishedRun>();
    const known = new Map<string, PublishedRun>();
    const uid = process.getuid?.();
    for (const base of this.bases) {
      let owned = false;
      try {
        const st = lstatSync(base);
        if (!st.isDirectory()) continue;
        owned = st.uid === uid;
      } catch {
        continue;
      }
      // Only in a folder of its own does a reader remove what it finds stale (never as root in a user's).
      if (owned && full) removeStaleRuns(base, this.proc);
      for (const name of listOr(base)) {
        if (!/^\d+$/.test(name)) continue;
        const dir = join(base, name);
        const was = full ? undefined : this.known.get(dir);
        if (was) {
          runs.set(was.run.pid, was);
          known.set(dir, was);
          continue;
        }
        try {
          const run = parseRunDescription(
            readSmallFile(join(dir, RUN_FILE), MAX_RUN_JSON).toString("utf8"),
            dir,
          );
          if (run.pid !== Number(name)) throw new StatsFormatError(`${dir}: run.json names pid ${run.pid}`);
          if (processStartTime(run.pid, this.proc) !== run.startTime) continue; // stale (gone, or a reused pid)
          const found = { dir, run };
          runs.set(run.pid, found);
          known.set(dir, found);
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code;
          if (code === "ENOENT") continue; // being created, or removed meanwhile
          problems?.push({ what: dir, reason: code ?? (e as Error).message });
        }
      }
    }
    this.known = known;
    return runs;
  }
}

/** One vCPU's counters as the file holds them. */
export interface VcpuCounters {
  tid: number;
  /** By KVM exit reason (index = KVM_EXIT_*). */
  reasons: number[];
  /** [key, count] with key = address * 4 + access + 1 (live-counters.ts). */
  entries: [number, number][];
  otherPio: number;
  otherMmio: number;
}

/** The counters file of one run, open for as long as the run is watched (its final values stay readable). */
export class CountersReader {
  private readonly summaries: Buffer;
  private readonly table = Buffer.alloc(TABLE_BYTES);

  private constructor(
    private readonly fd: number,
    readonly vcpus: number,
  ) {
    this.summaries = Buffer.alloc(vcpus * SUMMARY_BYTES);
  }

  /** Open and check the header: magic, layout and size must be exactly what this version writes. */
  static open(dir: string): CountersReader {
    const path = join(dir, COUNTERS_FILE);
    const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    try {
      const st = fstatSync(fd);
      const h = Buffer.alloc(HEADER_BYTES);
      if (!st.isFile() || readSync(fd, h, 0, HEADER_BYTES, 0) !== HEADER_BYTES)
        throw new StatsFormatError(`${path}: not a counters file`);
      const w = (i: number) => h.readUInt32LE(4 * i);
      const vcpus = w(HEADER.VCPUS);
      const ok =
        w(HEADER.MAGIC) === LIVE_MAGIC &&
        w(HEADER.VERSION) === LAYOUT_VERSION &&
        w(HEADER.HEADER_BYTES) === HEADER_BYTES &&
        w(HEADER.SUMMARY_BYTES) === SUMMARY_BYTES &&
        w(HEADER.TABLE_BYTES) === TABLE_BYTES &&
        w(HEADER.REASON_SLOTS) === REASON_SLOTS &&
        w(HEADER.ADDRESS_ENTRIES) === ADDRESS_ENTRIES &&
        vcpus <= MAX_VCPUS &&
        st.size === countersFileBytes(vcpus);
      if (!ok) throw new StatsFormatError(`${path}: not a counters file of layout ${LAYOUT_VERSION}`);
      return new CountersReader(fd, vcpus);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  /** Every vCPU's counters now: one read for all the summaries, one per vCPU whose table is in use. */
  read(): VcpuCounters[] {
    const out: VcpuCounters[] = [];
    const n = readSync(this.fd, this.summaries, 0, this.summaries.length, HEADER_BYTES);
    const s = this.summaries;
    // A count is a non-negative whole number; anything else (a file written by someone else) reads as 0.
    const num = (b: Buffer, at: number) => {
      const x = b.readDoubleLE(at);
      return Number.isFinite(x) && x >= 0 ? x : 0;
    };
    for (let v = 0; v < this.vcpus && (v + 1) * SUMMARY_BYTES <= n; v++) {
      const at = v * SUMMARY_BYTES;
      const used = Math.min(Math.max(s.readInt32LE(at + 4 * SUMMARY.USED_WORD), 0), ADDRESS_ENTRIES);
      const reasons: number[] = [];
      for (let r = 0; r < REASON_SLOTS; r++) reasons.push(num(s, at + SUMMARY.REASONS + 8 * r));
      const entries: [number, number][] = [];
      if (used > 0) {
        const got = readSync(this.fd, this.table, 0, used * 16, blockOffsets(this.vcpus, v).table);
        for (let e = 0; e < used && 16 * (e + 1) <= got; e++) {
          const key = num(this.table, 16 * e);
          if (key > 0) entries.push([key, num(this.table, 16 * e + 8)]);
        }
      }
      out.push({
        tid: s.readInt32LE(at + 4 * SUMMARY.TID_WORD),
        reasons,
        entries,
        otherPio: num(s, at + SUMMARY.OTHER_PIO),
        otherMmio: num(s, at + SUMMARY.OTHER_MMIO),
      });
    }
    return out;
  }

  close(): void {
    closeSync(this.fd);
  }
}
