// Builds one C file with the guest SDK (guest/include, guest/lib, guest/ld) the way guest/Makefile builds the
// examples: a 32-bit protected-mode ELF (start32) or a 64-bit long-mode ELF (start64). For tests whose guest is
// not one of the SDK's examples (guest/tests/*.c). Output next to the other test guests (DIST/guests/sdk/).
import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { basename, join } from "node:path";
import { ROOT } from "./paths.js";
import { GUEST_OUT, guests } from "./guests.js";

const CFLAGS = (
  "-std=gnu11 -O2 -Wall -Wextra -Werror -ffreestanding -nostdlib -fno-pic -fno-pie -fno-stack-protector " +
  "-fno-asynchronous-unwind-tables -fno-unwind-tables -fno-builtin -mgeneral-regs-only -fno-ident"
).split(" ");

/** Build `source` (a path from the repository root) as an ELF guest; returns its path. */
export function buildSdkGuest(source: string, bits: 32 | 64 = 32): string {
  guests(); // the SDK's library objects (obj32/, obj64/)
  const dir = join(GUEST_OUT, "sdk");
  mkdirSync(dir, { recursive: true });
  const name = basename(source).replace(/\.c$/, "");
  const obj = join(dir, `${name}-${bits}.o`);
  const elf = join(dir, `${name}-${bits}.elf`);
  const arch = bits === 32 ? ["-m32", "-march=i686"] : ["-m64", "-mno-red-zone", "-mcmodel=small"];
  const lib = ["printf", "string", "boot_info_print", bits === 32 ? "start32" : "start64"].map((n) =>
    join(GUEST_OUT, `obj${bits}`, `${n}.o`),
  );
  execFileSync("gcc", [
    ...CFLAGS,
    ...arch,
    "-I",
    join(ROOT, "guest", "include"),
    "-c",
    join(ROOT, source),
    "-o",
    obj,
  ]);
  execFileSync("ld", [
    ...["-m", bits === 32 ? "elf_i386" : "elf_x86_64", "--build-id=none", "-z", "max-page-size=0x1000"],
    ...["-z", "noexecstack", "-nostdlib", "-static"],
    ...["-T", join(ROOT, "guest", "ld", bits === 32 ? "protected.ld" : "long.ld")],
    ...lib,
    obj,
    "-o",
    elf,
  ]);
  return elf;
}
