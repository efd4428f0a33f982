// `vmtool run --kernel`: a Linux kernel and its initrd, read from disk (bounded by guest RAM) and planned with
// every check done before any VM exists. The format comes from the file: a bzImage (64-bit boot protocol) or
// an ELF vmlinux (PVH).
import { InputFile } from "../../files/input-file.js";
import type { GuestMemory } from "../../memory/guest-memory.js";
import type { BootSetup } from "../../vm/boot-modes.js";
import { ImageError } from "../errors.js";
import { guestRamText, readImageFile } from "../image-file.js";
import { isElf } from "../elf.js";
import { looksLikeBzImage } from "./setup-header.js";
import { applyLinuxPlan as applyBzImagePlan, planBzImage, type LinuxPlan as BzImagePlan } from "./bzimage.js";
import { applyPvhPlan, planPvh, planPvhFile, type PvhPlan } from "./pvh.js";

export { linuxCmdline, planBzImage, ZERO_PAGE, CMDLINE_ADDR, type LinuxBootOptions } from "./bzimage.js";
export {
  planPvh,
  planPvhFile,
  pvhEntry,
  buildStartInfo,
  HVM_START_MAGIC,
  START_INFO,
  START_INFO_ADDR,
  MODLIST_ADDR,
  MEMMAP_ADDR,
  PVH_CMDLINE_ADDR,
  PVH_CMDLINE_MAX,
  type PvhPlan,
} from "./pvh.js";
export type { BzImagePlan };
/** A planned Linux boot, by format. */
export type LinuxPlan = BzImagePlan | PvhPlan;

/** Write a planned boot into fresh guest RAM; returns how the boot vCPU starts. */
export function applyLinuxPlan(mem: GuestMemory, plan: LinuxPlan): BootSetup {
  if (plan.format === "pvh")
    return { mode: "protected", entry: plan.entry, pvhStartInfo: applyPvhPlan(mem, plan) };
  return { mode: "long", entry: plan.entry, bootInfo: applyBzImagePlan(mem, plan) };
}
export { E820, linuxE820, BIOS_TABLES_BASE, BIOS_TABLES_END, type E820Entry } from "./e820.js";
export { parseSetupHeader, looksLikeBzImage, type SetupHeader } from "./setup-header.js";
export {
  buildPlatformTables,
  applyPlatformTables,
  writePlatformTables,
  RSDP_ADDR,
  type PlatformMachine,
  type PlatformTables,
} from "./tables/index.js";

export interface LinuxFiles {
  memSize: number;
  cmdline: string;
  initrdPath?: string;
  acpiRsdp?: number;
}

/** Read the initrd whole, refusing one larger than guest RAM by its size before reading it. */
export function readInitrd(path: string, memSize: number): Uint8Array {
  const f = InputFile.open(path, { what: "an initrd" });
  try {
    const bytes = f.readAll(memSize, `guest RAM (${guestRamText(memSize)})`);
    if (bytes.length === 0) throw new ImageError(`${path}: empty initrd`);
    return bytes;
  } finally {
    f.close();
  }
}

/**
 * Plan a Linux boot from the kernel file (and initrd file) at these paths. A vmlinux that is a regular file
 * is planned from its headers, and its segments are read straight into guest RAM at apply (planPvhFile): no
 * copy of its tens of MB in between. Anything else is read whole first.
 */
export function planLinux(kernelPath: string, o: LinuxFiles): LinuxPlan {
  const readInitrdFile = () =>
    o.initrdPath === undefined
      ? undefined
      : { bytes: readInitrd(o.initrdPath, o.memSize), name: o.initrdPath };
  const file = InputFile.open(kernelPath, { what: "a guest image" });
  let kept = false;
  try {
    const magic = new Uint8Array(4);
    if (file.sizeKnown && file.kind === "regular file" && file.readAt(magic, 0) === 4 && isElf(magic)) {
      const plan = planPvhFile(file, kernelPath, {
        memSize: o.memSize,
        cmdline: o.cmdline,
        initrd: readInitrdFile(),
        acpiRsdp: o.acpiRsdp,
      });
      kept = true;
      return plan;
    }
  } finally {
    if (!kept) file.close();
  }
  const bytes = readImageFile(kernelPath, o.memSize);
  const plan = !looksLikeBzImage(bytes) && isElf(bytes) ? planPvh : planBzImage;
  const initrd = readInitrdFile();
  return plan(bytes, kernelPath, { memSize: o.memSize, cmdline: o.cmdline, initrd, acpiRsdp: o.acpiRsdp });
}
