// What the start-up and exit benchmarks share: a scratch folder, flat long-mode guests assembled there, the C
// reference VMM compiled there, one timed run, and the median.
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

/** A scratch folder, removed when the process exits. */
export function workDir(prefix) {
  const work = mkdtempSync(join(tmpdir(), prefix));
  process.on("exit", () => rmSync(work, { recursive: true, force: true }));
  return work;
}

/** Assemble `source` (64-bit code) into a flat binary at 1 MiB, for `vmtool run --mode long --load 0x100000`. */
export function flatLongGuest(work, name, source) {
  const s = join(work, `${name}.S`);
  const o = join(work, `${name}.o`);
  const bin = join(work, `${name}.bin`);
  writeFileSync(s, `.code64\n.globl _start\n_start:\n${source}\n`);
  execFileSync("as", ["--64", s, "-o", o]);
  execFileSync("ld", ["-Ttext=0x100000", "--oformat", "binary", o, "-o", bin]);
  return bin;
}

/** The C reference VMM (bench/c/ref-vmm.c), compiled into `work`. */
export function buildRefVmm(work) {
  const refVmm = join(work, "ref-vmm");
  execFileSync("gcc", ["-O2", "-o", refVmm, join(ROOT, "bench", "c", "ref-vmm.c")]);
  return refVmm;
}

/** One run: its wall time in ms and its stderr; a status other than `wantStatus` is an error. */
export function timed(cmd, args, wantStatus, env) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { stdio: ["ignore", "ignore", "pipe"], env: env ?? process.env });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== wantStatus)
    throw new Error(`${cmd} ${args.join(" ")}: status ${r.status}, wanted ${wantStatus}: ${r.stderr}`);
  return { ms, stderr: r.stderr.toString() };
}

export const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
