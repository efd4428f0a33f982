// Loaders: the format is chosen from the file itself (a Multiboot v1 header, else an ELF header, else a flat
// binary), and planLoad validates everything against the machine before any VM exists, so bad input ends
// with one line (an ImageError or LoadOptionError). applyPlan then copies the segments into guest RAM.
import { ImageError, LoadOptionError } from "./errors.js";
import { hex } from "../format.js";
import type { GuestMemory } from "../memory/guest-memory.js";
import { LAYOUT, RESERVED_AREAS } from "../vm/machine-layout.js";
import { elfSegments, isElf, parseElf } from "./elf.js";
import { guestRamText, readImageFile } from "./image-file.js";
import { findMultibootHeader, planMultibootImage } from "./multiboot.js";
import type { BootMode, LoadOptions, LoadPlan, Segment } from "./types.js";

export type { BootMode, ImageFormat, LoadOptions, LoadPlan, Segment } from "./types.js";
export { readImageFile } from "./image-file.js";
export {
  BOOT_INFO_LAYOUT,
  BOOT_INFO_MAGIC,
  BOOT_INFO_VERSION,
  CMDLINE_MAX,
  DeviceKind,
  STANDARD_DEVICES,
  checkCmdline,
  encodeBootInfo,
  writeBootInfo,
  type BootInfoInput,
  type DeviceDescription,
  type DeviceKindName,
} from "./boot-info.js";
export { MULTIBOOT_BOOTLOADER_MAGIC, writeMultibootInfo, type MultibootInfoInput } from "./multiboot.js";
export { MemUse, buildMemoryMap, type MemoryMapEntry } from "./memory-map.js";

const BOOT_MODES: readonly BootMode[] = ["real", "protected", "long"];

/** Default load address of a flat binary in each mode (machine-layout.ts). */
export function defaultFlatLoad(mode: BootMode): number {
  return mode === "real" ? LAYOUT.REAL_MODE_LOAD : LAYOUT.HIGH_MEM;
}

/** Read, recognise and validate a guest image; touches no VM. Throws ImageError or LoadOptionError (one line) on bad input. */
export function planLoad(path: string, opts: LoadOptions): LoadPlan {
  checkMemSize(opts.memSize);
  const bytes = readImageFile(path, opts.memSize);
  return planImage(bytes, path, opts);
}

/** planLoad for bytes already in memory (`name` prefixes the error messages). */
export function planImage(bytes: Uint8Array, name: string, opts: LoadOptions): LoadPlan {
  checkMemSize(opts.memSize);
  if (bytes.length === 0) throw new ImageError(`${name}: empty file`);
  const flatOpts = (["load", "entry", "mode"] as const).filter((k) => opts[k] !== undefined);
  const refuseFlatOpts = (what: string) => {
    if (flatOpts.length > 0)
      throw new ImageError(
        `${name}: ${flatOpts.map((k) => `--${k}`).join(", ")} ${flatOpts.length > 1 ? "apply" : "applies"} to flat binaries only; this is ${what}, which says where it goes`,
      );
  };

  let plan: LoadPlan;
  const mb = findMultibootHeader(bytes, name);
  if (mb) {
    refuseFlatOpts("a Multiboot kernel");
    const p = planMultibootImage(bytes, mb, name);
    plan = { format: "multiboot", mode: "protected", multiboot: true, ...p };
  } else if (isElf(bytes)) {
    const elf = parseElf(bytes, name);
    refuseFlatOpts(`an ELF${elf.cls} file`);
    const { segments, tooHigh } = elfSegments(elf);
    if (tooHigh !== undefined)
      throw new ImageError(
        `${name}: segment at ${hex(tooHigh)} is outside guest RAM (${guestRamText(opts.memSize)})`,
      );
    if (elf.entry > BigInt(Number.MAX_SAFE_INTEGER))
      throw new ImageError(`${name}: entry point ${hex(elf.entry)} is outside the loaded segments`);
    plan = {
      format: elf.cls === 64 ? "elf64" : "elf32",
      mode: elf.cls === 64 ? "long" : "protected",
      entry: Number(elf.entry),
      segments,
      describe: `ELF${elf.cls}, ${segments.length} segment(s), entry ${hex(elf.entry)}`,
    };
  } else {
    plan = planFlat(bytes, name, opts);
  }
  checkPlacement(plan, name, opts.memSize);
  return plan;
}

function planFlat(bytes: Uint8Array, name: string, opts: LoadOptions): LoadPlan {
  const mode = opts.mode ?? "real";
  if (!BOOT_MODES.includes(mode))
    throw new LoadOptionError(`--mode: '${mode}' is not one of ${BOOT_MODES.join(", ")}`);
  const load = opts.load ?? defaultFlatLoad(mode);
  const entry = opts.entry ?? load;
  for (const [k, v] of [
    ["--load", load],
    ["--entry", entry],
  ] as const) {
    if (!Number.isSafeInteger(v) || v < 0)
      throw new LoadOptionError(`${k}: ${String(v)} is not a valid address`);
  }
  return {
    format: "flat",
    mode,
    entry,
    segments: [{ gpa: load, data: bytes, memSize: bytes.length }],
    describe: `flat binary, ${bytes.length} bytes at ${hex(load)}, ${mode} mode, entry ${hex(entry)}`,
  };
}

function checkMemSize(memSize: number): void {
  if (!Number.isSafeInteger(memSize) || memSize < LAYOUT.MIN_RAM || memSize > LAYOUT.MAX_RAM)
    throw new LoadOptionError(
      `guest RAM size ${String(memSize)} is outside ${hex(LAYOUT.MIN_RAM)}..${hex(LAYOUT.MAX_RAM)} bytes`,
    );
}

/** Every segment inside RAM, clear of vmtool's areas and of each other; the entry inside a segment. */
function checkPlacement(plan: LoadPlan, name: string, memSize: number): void {
  const segs = plan.segments.filter((s) => s.memSize > 0);
  const range = (s: Segment) => `${hex(s.gpa)}-${hex(s.gpa + s.memSize - 1)}`;
  for (const s of segs) {
    if (!Number.isSafeInteger(s.gpa) || s.gpa < 0 || s.gpa + s.memSize > memSize)
      throw new ImageError(`${name}: segment ${range(s)} is outside guest RAM (${guestRamText(memSize)})`);
    for (const r of RESERVED_AREAS) {
      if (s.gpa < r.base + r.size && r.base < s.gpa + s.memSize)
        throw new ImageError(
          `${name}: segment ${range(s)} overlaps ${r.what} at ${hex(r.base)}-${hex(r.base + r.size - 1)}, reserved by vmtool`,
        );
    }
    if (plan.mode === "real" && s.gpa + s.memSize > LAYOUT.REAL_MODE_LIMIT)
      throw new ImageError(
        `${name}: real-mode image ${range(s)} reaches above 1 MiB (give --mode protected or long, or a lower --load)`,
      );
  }
  const sorted = [...segs].sort((a, b) => a.gpa - b.gpa);
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i - 1].gpa + sorted[i - 1].memSize > sorted[i].gpa)
      throw new ImageError(`${name}: segments ${range(sorted[i - 1])} and ${range(sorted[i])} overlap`);
  }
  if (!segs.some((s) => plan.entry >= s.gpa && plan.entry < s.gpa + s.memSize))
    throw new ImageError(`${name}: entry point ${hex(plan.entry)} is outside the loaded image`);
}

export interface ApplyOptions {
  /**
   * Guest RAM is fresh: mapped for this VM (anonymous memory, which reads as zero) and not written since, as
   * in a VM created for this image before any guest code ran. The .bss is then left as it is instead of being
   * zero-filled: writing zeros would only make the kernel allocate every page of it (a 2.75 GiB .bss cost
   * 2.9 GB of memory and 4 s). The caller knows this, the loader cannot: say it only of RAM nothing wrote.
   */
  freshRam?: boolean;
}

/** Copy the plan's segments into guest RAM and zero their tails (.bss) unless RAM is fresh. */
export function applyPlan(mem: GuestMemory, plan: LoadPlan, opts: ApplyOptions = {}): void {
  for (const s of plan.segments) {
    if (s.memSize === 0) continue;
    mem.write(s.gpa, s.data);
    // Segments never overlap (checkPlacement), so one segment's data cannot lie in another's .bss.
    if (s.memSize > s.data.length && opts.freshRam !== true)
      mem.fill(s.gpa + s.data.length, s.memSize - s.data.length, 0);
  }
}
