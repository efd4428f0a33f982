// Small flat long-mode guests for the `vmtool stat` tests, assembled here (as + ld), run with
// `vmtool run --mode long --load 0x100000`. Each makes a known mix of exits: port writes to 0x80 and reads of
// 0x81 (no device: writes ignored, reads all ones), MMIO reads and writes at 0xE0000000 (no device either).
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { DIST } from "../helpers/paths.js";

const OUT = join(DIST, "guests", "stats");

/** Assemble `source` (64-bit code at 1 MiB) into OUT/<name>.bin once per process. */
export function flatGuest(name: string, source: string): string {
  mkdirSync(OUT, { recursive: true });
  const s = join(OUT, `${name}.S`);
  const o = join(OUT, `${name}.o`);
  const bin = join(OUT, `${name}.bin`);
  writeFileSync(s, `.code64\n.globl _start\n_start:\n${source}\n`);
  execFileSync("as", ["--64", s, "-o", o]);
  execFileSync("ld", ["-Ttext=0x100000", "--oformat", "binary", o, "-o", bin]);
  return bin;
}

/** `vmtool run` arguments for a flat guest. */
export const runArgs = (bin: string, ...more: string[]) => [
  "run",
  "--mode",
  "long",
  "--load",
  "0x100000",
  ...more,
  bin,
];

/**
 * `loops` rounds of: out 0x80, in 0x81, MMIO read and MMIO write at 0xE0000000 (4 user-space exits per round:
 * 2 IO, 2 MMIO), then spin forever without exits (`pause; jmp`), so that a test reads settled counts.
 */
export function countedGuest(loops: number): string {
  return flatGuest(
    `counted-${loops}`,
    `  mov $${loops}, %ecx
       mov $0xe0000000, %ebx
    1: out %al, $0x80
       in $0x81, %al
       mov (%rbx), %eax
       mov %eax, (%rbx)
       dec %ecx
       jnz 1b
    2: pause
       jmp 2b`,
  );
}

/** The same round forever: a busy guest for live views and for VMs that end while watched. */
export function busyGuest(): string {
  return flatGuest(
    "busy",
    `  mov $0xe0000000, %ebx
    1: out %al, $0x80
       in $0x81, %al
       mov (%rbx), %eax
       mov %eax, (%rbx)
       jmp 1b`,
  );
}

/**
 * `ios` port writes to 0x80, then `sti; hlt` forever: the vCPU sleeps in KVM (halt_wait_ns, halt_wait_hist,
 * blocking), woken only by vmtool's own halt checks (INTR exits, a few a second). No interrupt ever comes.
 */
export function ioThenSleepGuest(ios: number): string {
  return flatGuest(
    `io-then-sleep-${ios}`,
    `  mov $${ios}, %ecx
    1: out %al, $0x80
       dec %ecx
       jnz 1b
       sti
    2: hlt
       jmp 2b`,
  );
}
