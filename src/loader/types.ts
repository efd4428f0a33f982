// What a loader produces: a plan, computed from the file alone and fully validated before any VM exists, so
// that bad input ends with one error line and exit 2 before a guest starts. The VMM then applies it.

export type BootMode = "real" | "protected" | "long";
export type ImageFormat = "flat" | "elf32" | "elf64" | "multiboot";

export interface Segment {
  /** Guest physical address where `data` goes. */
  gpa: number;
  data: Uint8Array;
  /** Bytes reserved in memory (>= data.length; the rest is zeroed, e.g. .bss). */
  memSize: number;
}

export interface LoadPlan {
  format: ImageFormat;
  mode: BootMode;
  /** Entry point: a linear address (real mode: below 1 MiB, split into CS:IP by the boot-mode setup). */
  entry: number;
  segments: Segment[];
  /** Multiboot only: the guest gets EAX=0x2BADB002 and EBX=the Multiboot information structure. */
  multiboot?: boolean;
  /** Human-readable lines for --trace/--verbose ("ELF64, 2 segments, entry 0x100000"). */
  describe: string;
}

export interface LoadOptions {
  /** Guest RAM size in bytes (segments must fit below it). */
  memSize: number;
  /** Flat binaries: load address, entry, mode (defaults in machine-layout.ts). Refused for other formats. */
  load?: number;
  entry?: number;
  mode?: BootMode;
}
