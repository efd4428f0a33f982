// Assembles tiny test guests with binutils (as + ld) into flat binaries, in a temporary folder.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const dir = mkdtempSync(join(tmpdir(), "vmtool-asm-"));
let n = 0;

/** Assemble `source` (AT&T syntax, `.code16/.code32/.code64` inside) linked at `base`; returns the file path. */
export function assemble(source: string, base: number, bits: 16 | 32 | 64): string {
  const name = `g${n++}`;
  const s = join(dir, `${name}.S`);
  const o = join(dir, `${name}.o`);
  const bin = join(dir, `${name}.bin`);
  writeFileSync(s, `.globl _start\n_start:\n${source}\n`);
  execFileSync("as", [bits === 64 ? "--64" : "--32", s, "-o", o]);
  execFileSync("ld", [
    ...(bits === 64 ? [] : ["-m", "elf_i386"]),
    `-Ttext=0x${base.toString(16)}`,
    "--oformat",
    "binary",
    o,
    "-o",
    bin,
  ]);
  return bin;
}

export function assembleBytes(source: string, base: number, bits: 16 | 32 | 64): Uint8Array {
  return readFileSync(assemble(source, base, bits));
}

/** Set up a long-mode IDT at 0x200000 with `vector` → the label `handler` (for guests that take interrupts). */
export function idt64(vector: number, handler: string): string {
  return `
  lea ${handler}(%rip), %rax
  mov $0x200000 + ${vector}*16, %rdi
  mov %ax, (%rdi)
  movw $0x18, 2(%rdi)
  movw $0x8e00, 4(%rdi)
  shr $16, %rax
  mov %ax, 6(%rdi)
  shr $16, %rax
  mov %eax, 8(%rdi)
  movl $0, 12(%rdi)
  lidt idtr_(%rip)
  jmp 9f
idtr_: .word 0xfff
  .quad 0x200000
9:`;
}
