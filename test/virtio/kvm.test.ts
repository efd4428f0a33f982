// The virtio devices on a real KVM VM: a guest driver written from the spec (guest/examples/virtio-*.c)
// probes the device over MMIO, sets up a split queue and gets its request served.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { ROOT, DIST } from "../helpers/paths.js";
import { GUEST_OUT, guests } from "../helpers/guests.js";

const CFLAGS = (
  "-std=gnu11 -O2 -Wall -Wextra -Werror -ffreestanding -nostdlib -fno-pic -fno-pie -fno-stack-protector " +
  "-fno-asynchronous-unwind-tables -fno-unwind-tables -fno-builtin -mgeneral-regs-only -fno-ident -m32 -march=i686"
).split(" ");
const LIB32 = ["printf", "string", "boot_info_print", "start32"].map((n) =>
  join(GUEST_OUT, "obj32", `${n}.o`),
);

/** Build guest/examples/NAME.c as a 32-bit protected-mode ELF with the SDK's library (built by guests()). */
function buildVirtioGuest(name: string): string {
  guests();
  const dir = join(GUEST_OUT, "virtio");
  mkdirSync(dir, { recursive: true });
  const obj = join(dir, `${name}.o`);
  const elf = join(dir, `${name}.elf`);
  execFileSync("gcc", [
    ...CFLAGS,
    "-I",
    join(ROOT, "guest", "include"),
    "-c",
    join(ROOT, "guest", "examples", `${name}.c`),
    "-o",
    obj,
  ]);
  execFileSync("ld", [
    "-m",
    "elf_i386",
    "--build-id=none",
    "-z",
    "max-page-size=0x1000",
    "-z",
    "noexecstack",
    "-nostdlib",
    "-static",
    "-T",
    join(ROOT, "guest", "ld", "protected.ld"),
    ...LIB32,
    obj,
    "-o",
    elf,
  ]);
  return elf;
}

function run(image: string, ...flags: string[]) {
  const r = spawnSync(process.execPath, [join(DIST, "test", "virtio", "run-virtio.js"), image, ...flags], {
    encoding: "utf8",
    timeout: 60_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test("virtio-rng on KVM: a spec-written guest driver gets 4 KiB of entropy and the used-buffer interrupt", () => {
  const elf = buildVirtioGuest("virtio-rng");
  const a = run(elf, "rng");
  assert.equal(a.status, 0, a.stdout + a.stderr);
  const m = /virtio-rng: 4096 bytes, fnv1a ([0-9a-f]+), interrupt status 1/.exec(a.stdout);
  assert.ok(m, a.stdout + a.stderr);
  const b = run(elf, "rng");
  const m2 = /fnv1a ([0-9a-f]+)/.exec(b.stdout);
  assert.ok(m2 && m2[1] !== m[1], "two runs get different random bytes");
});

test("virtio on KVM: with no device at the address the guest's probe fails cleanly", () => {
  const elf = buildVirtioGuest("virtio-rng");
  const r = run(elf);
  assert.equal(r.status, (2 << 1) | 1, r.stdout + r.stderr);
  assert.match(r.stdout, /no device at 0xd0000000/);
});
