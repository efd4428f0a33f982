// The x86 Linux boot protocol's setup header (Documentation/arch/x86/boot.rst), read from a bzImage with every
// field the loader relies on checked against the file, so a truncated, foreign or too old image is refused with
// one line before any VM exists. Only the 64-bit entry is used (XLF_KERNEL_64): vmtool has no real-mode BIOS
// for the kernel's 16-bit setup code.
import { ImageError } from "../errors.js";
import { hex } from "../../format.js";

/** Offsets in the file (and in the zero page, which starts with a copy of the same bytes at 0x1F1). */
export const HDR = {
  SETUP_SECTS: 0x1f1,
  SYSSIZE: 0x1f4,
  VID_MODE: 0x1fa,
  BOOT_FLAG: 0x1fe,
  JUMP: 0x200,
  HEADER: 0x202,
  VERSION: 0x206,
  TYPE_OF_LOADER: 0x210,
  LOADFLAGS: 0x211,
  CODE32_START: 0x214,
  RAMDISK_IMAGE: 0x218,
  RAMDISK_SIZE: 0x21c,
  HEAP_END_PTR: 0x224,
  CMD_LINE_PTR: 0x228,
  INITRD_ADDR_MAX: 0x22c,
  KERNEL_ALIGNMENT: 0x230,
  RELOCATABLE_KERNEL: 0x234,
  XLOADFLAGS: 0x236,
  CMDLINE_SIZE: 0x238,
  PREF_ADDRESS: 0x258,
  INIT_SIZE: 0x260,
} as const;

/** "HdrS", little-endian. */
export const HDRS_MAGIC = 0x53726448;
/** The oldest protocol with xloadflags (2.12): the only way to know the 64-bit entry exists. */
export const MIN_VERSION = 0x020c;
export const LOADED_HIGH = 0x01;
export const XLF_KERNEL_64 = 0x01;
/** Protocol 2.14 added acpi_rsdp_addr to the zero page. */
export const VERSION_ACPI_RSDP = 0x020e;
/** The header's fields up to and including init_size (protocol 2.10+) must be in the file. */
const HEADER_MIN_END = HDR.INIT_SIZE + 4;

export interface SetupHeader {
  version: number;
  /** Bytes of real-mode setup code before the protected-mode kernel ((setup_sects + 1) * 512). */
  setupBytes: number;
  /** The protected-mode kernel (what is loaded at the load address). */
  kernelBytes: number;
  loadflags: number;
  xloadflags: number;
  relocatable: boolean;
  kernelAlignment: number;
  prefAddress: number;
  /** Bytes the kernel needs from its load address to decompress and start (its in-place footprint). */
  initSize: number;
  /** Longest command line, without the NUL. */
  cmdlineSize: number;
  /** Highest address the initrd may reach (inclusive). */
  initrdAddrMax: number;
  /** The header bytes as the zero page takes them: file offsets 0x1F1 up to the header's end. */
  raw: Uint8Array;
}

/** Whether the bytes start like a bzImage (boot sector signature and "HdrS"), whatever else is wrong. */
export function looksLikeBzImage(b: Uint8Array): boolean {
  return (
    b.length >= HDR.HEADER + 4 &&
    b[HDR.BOOT_FLAG] === 0x55 &&
    b[HDR.BOOT_FLAG + 1] === 0xaa &&
    new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(HDR.HEADER, true) === HDRS_MAGIC
  );
}

/** Read and check a bzImage's setup header; throws ImageError (one line) for anything vmtool cannot boot. */
export function parseSetupHeader(b: Uint8Array, name: string): SetupHeader {
  const bad = (what: string) => new ImageError(`${name}: ${what}`);
  if (!looksLikeBzImage(b))
    throw bad(
      b.length < HDR.HEADER + 4
        ? `${b.length} bytes: too short for a Linux bzImage (its setup header ends past ${hex(HDR.HEADER + 4)})`
        : 'not a Linux bzImage (no boot sector signature 0xAA55 at 0x1FE and "HdrS" at 0x202)',
    );
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const version = v.getUint16(HDR.VERSION, true);
  if (version < MIN_VERSION)
    throw bad(
      `boot protocol ${versionText(version)} is older than 2.12: vmtool needs the 64-bit entry point (xloadflags)`,
    );
  const headerEnd = HDR.JUMP + 2 + b[HDR.JUMP + 1];
  if (headerEnd < HEADER_MIN_END)
    throw bad(`setup header ends at ${hex(headerEnd)}, before init_size (${hex(HEADER_MIN_END)})`);
  if (b.length < headerEnd)
    throw bad(`truncated bzImage: ${b.length} bytes, its setup header ends at ${hex(headerEnd)}`);
  const setupSects = b[HDR.SETUP_SECTS] === 0 ? 4 : b[HDR.SETUP_SECTS];
  const setupBytes = (setupSects + 1) * 512;
  const kernelBytes = v.getUint32(HDR.SYSSIZE, true) * 16;
  if (kernelBytes === 0) throw bad("bzImage with syssize 0: no protected-mode kernel");
  if (b.length < setupBytes + kernelBytes)
    throw bad(
      `truncated bzImage: ${b.length} bytes, its header says ${setupBytes} of setup code and ${kernelBytes} of kernel`,
    );
  const loadflags = b[HDR.LOADFLAGS];
  if ((loadflags & LOADED_HIGH) === 0)
    throw bad("a zImage (loaded below 1 MiB, LOADED_HIGH clear): only bzImages are supported");
  const xloadflags = v.getUint16(HDR.XLOADFLAGS, true);
  if ((xloadflags & XLF_KERNEL_64) === 0)
    throw bad("no 64-bit entry point (XLF_KERNEL_64 clear in xloadflags): a 32-bit kernel?");
  const kernelAlignment = v.getUint32(HDR.KERNEL_ALIGNMENT, true);
  const relocatable = b[HDR.RELOCATABLE_KERNEL] !== 0;
  if (relocatable && (kernelAlignment === 0 || (kernelAlignment & (kernelAlignment - 1)) !== 0))
    throw bad(`kernel_alignment ${hex(kernelAlignment)} is not a power of two`);
  const initSize = v.getUint32(HDR.INIT_SIZE, true);
  if (initSize < kernelBytes)
    throw bad(`init_size ${hex(initSize)} is smaller than the kernel (${hex(kernelBytes)} bytes)`);
  return {
    version,
    setupBytes,
    kernelBytes,
    loadflags,
    xloadflags,
    relocatable,
    kernelAlignment,
    prefAddress: Number(v.getBigUint64(HDR.PREF_ADDRESS, true) & 0xffff_ffff_ffffn),
    initSize,
    cmdlineSize: v.getUint32(HDR.CMDLINE_SIZE, true),
    initrdAddrMax: v.getUint32(HDR.INITRD_ADDR_MAX, true),
    raw: b.slice(HDR.SETUP_SECTS, headerEnd),
  };
}

/** "2.15" */
export function versionText(version: number): string {
  return `${version >> 8}.${(version & 0xff).toString().padStart(2, "0")}`;
}
