// `vmtool run --kernel`: a Linux kernel and its initrd, read from disk (bounded by guest RAM) and planned with
// every check done before any VM exists. The format comes from the file: a bzImage (64-bit boot protocol).
import { InputFile } from "../../files/input-file.js";
import { ImageError } from "../errors.js";
import { guestRamText, readImageFile } from "../image-file.js";
import { isElf } from "../elf.js";
import { looksLikeBzImage } from "./setup-header.js";
import { planBzImage, type LinuxPlan } from "./bzimage.js";

export {
  applyLinuxPlan,
  linuxCmdline,
  planBzImage,
  ZERO_PAGE,
  CMDLINE_ADDR,
  type LinuxPlan,
  type LinuxBootOptions,
} from "./bzimage.js";
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

/** Plan a Linux boot from the kernel file (and initrd file) at these paths. */
export function planLinux(kernelPath: string, o: LinuxFiles): LinuxPlan {
  const bytes = readImageFile(kernelPath, o.memSize);
  if (looksLikeBzImage(bytes) || !isElf(bytes)) {
    const initrd =
      o.initrdPath === undefined
        ? undefined
        : { bytes: readInitrd(o.initrdPath, o.memSize), name: o.initrdPath };
    return planBzImage(bytes, kernelPath, {
      memSize: o.memSize,
      cmdline: o.cmdline,
      initrd,
      acpiRsdp: o.acpiRsdp,
    });
  }
  throw new ImageError(
    `${kernelPath}: an ELF file; --kernel boots bzImages (an uncompressed vmlinux through PVH is not supported yet)`,
  );
}
