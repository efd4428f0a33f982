// Builds the guest SDK's examples (guest/Makefile) once per test run and returns their paths. Every test
// process calls it; a file lock serializes the builds and make's own up-to-date checks make the later calls
// cheap. The images go into the compiled output folder (dist/guests, .dist-foo/guests), ignored by git.
import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { DIST, ROOT } from "./paths.js";

/** Every image guest/Makefile builds, by name. */
export const GUEST_IMAGES = {
  /** Real mode, flat binary at 0x7C00: prints "hello from real mode (16-bit)" and "cr0.pe=0", halts. */
  helloReal: "hello-real.bin",
  /** cli; hlt (bytes FA F4: valid in every mode), flat: ends at once with status 0. */
  halt: "halt.bin",
  /** ELF32, protected mode: greets, prints CR0 bits and a summary of the machine description from ESI. */
  helloProtected: "hello-protected.elf",
  /** ELF64, long mode: greets and prints the whole machine description from RSI. */
  helloLong: "hello-long.elf",
  /** ELF32: interrupt-driven UART echo (IRQ 4, 8259); EOT (0x04) ends it through the exit port (status 1). */
  serialEcho: "serial-echo.elf",
  /** Multiboot v1 ELF32: prints magic, loader name, command line, mem_lower/upper and the memory map. */
  multiboot: "multiboot.elf",
  /** Multiboot v1 a.out kludge (flag bit 16), flat: checks EAX and a zeroed .bss, prints one line. */
  multibootAout: "multiboot-aout.bin",
  /** ELF32: finds the PIT (`--pit`) in the machine description, checks its counter, takes 10 IRQ 0 ticks. */
  pitTicks: "pit-ticks.elf",
  /** ELF64: prints "!" on the debug console, then triple-faults (empty IDT, ud2). */
  tripleFault: "triple-fault.elf",
  /** ELF64: 200,000 OUTs to port 0xE9 (199,999 dots and a newline), then halts. The benchmark guest. */
  exits200k: "exits-200k.elf",
  /** The same code as a flat binary, for `--mode long` (load 1 MiB) and for a reference VMM in C. */
  exits200kFlat: "exits-200k.bin",
  /** The README's demo guest, built from source (the shipped copy is PREBUILT_DEMO). */
  demo: "demo.elf",
} as const;
export type GuestName = keyof typeof GUEST_IMAGES;

/** The demo guest shipped in the repository (long mode ELF64). */
export const PREBUILT_DEMO = join(ROOT, "guest", "prebuilt", "demo.elf");

/** Where the tests' guest images are built. */
export const GUEST_OUT = join(DIST, "guests");

let built: Readonly<Record<GuestName, string>> | undefined;

/** Build (if needed) and return the absolute path of every guest image. Throws if gcc/make are missing. */
export function guests(): Readonly<Record<GuestName, string>> {
  if (!built) {
    mkdirSync(GUEST_OUT, { recursive: true });
    // VMTOOL_GUESTS_PREBUILT=1: the images were built on another machine and carried here (the kvm_amd VM
    // of test/svm has no compiler); use them as they are.
    if (process.env.VMTOOL_GUESTS_PREBUILT !== "1")
      try {
        execFileSync(
          "flock",
          [join(DIST, "guests.lock"), "make", "-s", "-C", join(ROOT, "guest"), `OUT=${GUEST_OUT}`],
          { stdio: ["ignore", "pipe", "pipe"] },
        );
      } catch (err) {
        const e = err as { stderr?: Buffer; message: string };
        throw new Error(`building the guest examples failed: ${e.stderr?.toString() || e.message}`);
      }
    built = Object.fromEntries(
      Object.entries(GUEST_IMAGES).map(([k, file]) => [k, join(GUEST_OUT, file)]),
    ) as Record<GuestName, string>;
  }
  return built;
}
