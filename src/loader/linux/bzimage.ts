// Planning a Linux boot from a bzImage through the 64-bit boot protocol: the protected-mode kernel at its
// preferred address (or the lowest aligned one that fits, if relocatable), the initrd page-aligned as high as
// the kernel allows, the zero page and command line in vmtool's boot data area, entry at load + 0x200 in long
// mode with RSI = the zero page. Everything is checked here, before any VM exists: a kernel or initrd that
// does not fit guest RAM, or a command line longer than the kernel takes, is one line (exit 2).
import { ImageError, LoadOptionError } from "../errors.js";
import { hex } from "../../format.js";
import type { GuestMemory } from "../../memory/guest-memory.js";
import { LAYOUT } from "../../vm/machine-layout.js";
import type { Segment } from "../types.js";
import { guestRamText } from "../image-file.js";
import { HDR, VERSION_ACPI_RSDP, parseSetupHeader, versionText, type SetupHeader } from "./setup-header.js";
import { linuxE820, type E820Entry } from "./e820.js";

/** The zero page (struct boot_params) and the command line, in vmtool's boot data area (reserved in e820). */
export const ZERO_PAGE = LAYOUT.BOOT_INFO;
export const ZERO_PAGE_SIZE = 0x1000;
export const CMDLINE_ADDR = ZERO_PAGE + ZERO_PAGE_SIZE;
/** Room for the command line before the GDT (machine-layout.ts); the kernel's cmdline_size is smaller. */
export const CMDLINE_ROOM = LAYOUT.GDT - CMDLINE_ADDR;
/** The 64-bit entry point is this far into the protected-mode kernel. */
export const ENTRY_64_OFFSET = 0x200;
/** struct boot_params offsets vmtool writes (arch/x86/include/uapi/asm/bootparam.h). */
export const BP = {
  ACPI_RSDP_ADDR: 0x070,
  EXT_RAMDISK_IMAGE: 0x0c0,
  EXT_RAMDISK_SIZE: 0x0c4,
  EXT_CMD_LINE_PTR: 0x0c8,
  E820_ENTRIES: 0x1e8,
  E820_TABLE: 0x2d0,
  E820_MAX: 128,
} as const;
const PAGE = 0x1000;
const MiB = 1 << 20;
/** The kernel's type_of_loader for "undefined" boot loaders. */
const LOADER_UNDEFINED = 0xff;
/** vid_mode "normal" (the setup code is never run, so this only keeps the kernel from asking). */
const VID_MODE_NORMAL = 0xffff;

export interface LinuxBootOptions {
  memSize: number;
  /** The whole command line the kernel gets (defaults already added: linuxCmdline). */
  cmdline: string;
  initrd?: { bytes: Uint8Array; name: string };
  /** The ACPI RSDP's address, when the machine has ACPI tables (zero page acpi_rsdp_addr, protocol 2.14+). */
  acpiRsdp?: number;
}

export interface LinuxPlan {
  format: "bzimage";
  header: SetupHeader;
  /** The kernel's own version string (from the setup code), e.g. "6.1.0-57-amd64 (debian-kernel@...) #1 ...". */
  kernelVersion?: string;
  loadAddr: number;
  entry: number;
  /** The kernel (memSize = init_size) and the initrd. */
  segments: Segment[];
  initrd?: { gpa: number; size: number };
  e820: E820Entry[];
  zeroPage: Uint8Array;
  cmdline: Uint8Array;
  describe: string;
}

/** The kernel's version string, at kernel_version + 0x200 in the setup code (protocol 2.00+), if sane. */
function kernelVersionString(b: Uint8Array): string | undefined {
  const ptr = b[0x20e] | (b[0x20f] << 8);
  if (ptr === 0) return undefined;
  const at = ptr + 0x200;
  const end = b.indexOf(0, at);
  if (at >= b.length || end < 0 || end - at > 256) return undefined;
  const s = new TextDecoder("latin1").decode(b.subarray(at, end));
  return /^[\x20-\x7e]+$/.test(s) ? s : undefined;
}

/** Where the kernel goes: its preferred address if it fits, else (relocatable) the lowest aligned one that does. */
function placeKernel(h: SetupHeader, name: string, memSize: number): number {
  const pref = h.prefAddress >= LAYOUT.HIGH_MEM ? h.prefAddress : LAYOUT.HIGH_MEM;
  if (pref + h.initSize <= memSize) return pref;
  if (h.relocatable) {
    const low = Math.ceil(LAYOUT.HIGH_MEM / h.kernelAlignment) * h.kernelAlignment;
    if (low + h.initSize <= memSize) return low;
  }
  const need = Math.ceil((pref + h.initSize) / MiB);
  throw new ImageError(
    `${name}: the kernel needs ${hex(h.initSize)} bytes (init_size) from ${hex(pref)}, more than guest RAM ` +
      `(${guestRamText(memSize)}); give --mem ${need}M or more`,
  );
}

/** Check and lay out a Linux boot from bzImage bytes; touches no VM. */
export function planBzImage(b: Uint8Array, name: string, opts: LinuxBootOptions): LinuxPlan {
  const h = parseSetupHeader(b, name);
  const cmdline = new TextEncoder().encode(opts.cmdline);
  if (cmdline.includes(0)) throw new LoadOptionError("--cmdline: contains a NUL character");
  const cmdMax = Math.min(h.cmdlineSize, CMDLINE_ROOM - 1);
  if (cmdline.length > cmdMax)
    throw new LoadOptionError(
      `--cmdline: the kernel's command line would be ${cmdline.length} bytes; ${name} takes at most ` +
        `${cmdMax} (cmdline_size)`,
    );
  const loadAddr = placeKernel(h, name, opts.memSize);
  const kernelEnd = loadAddr + h.initSize;
  const segments: Segment[] = [
    {
      gpa: loadAddr,
      data: b.subarray(h.setupBytes, h.setupBytes + h.kernelBytes),
      memSize: h.initSize,
    },
  ];
  let initrd: LinuxPlan["initrd"];
  if (opts.initrd) {
    const size = opts.initrd.bytes.length;
    if (size === 0) throw new ImageError(`${opts.initrd.name}: empty initrd`);
    const top = Math.min(opts.memSize, h.initrdAddrMax + 1);
    const gpa = Math.floor((top - size) / PAGE) * PAGE;
    if (gpa < kernelEnd) {
      const need = Math.ceil((Math.ceil(kernelEnd / PAGE) * PAGE + size) / MiB);
      throw new ImageError(
        `${opts.initrd.name}: the initrd (${size} bytes) does not fit between the kernel's end ` +
          `(${hex(kernelEnd)}) and ${hex(top)} (guest RAM ${guestRamText(opts.memSize)}, initrd_addr_max ` +
          `${hex(h.initrdAddrMax)}); give --mem ${need}M or more`,
      );
    }
    segments.push({ gpa, data: opts.initrd.bytes, memSize: size });
    initrd = { gpa, size };
  }
  const e820 = linuxE820(opts.memSize);
  const zeroPage = buildZeroPage(h, { e820, initrd, acpiRsdp: opts.acpiRsdp });
  const kernelVersion = kernelVersionString(b);
  return {
    format: "bzimage",
    header: h,
    kernelVersion,
    loadAddr,
    entry: loadAddr + ENTRY_64_OFFSET,
    segments,
    initrd,
    e820,
    zeroPage,
    cmdline,
    describe:
      `Linux bzImage${kernelVersion ? ` ${kernelVersion.split(" ")[0]}` : ""}, boot protocol ` +
      `${versionText(h.version)}, kernel at ${hex(loadAddr)} (init_size ${hex(h.initSize)}), 64-bit entry ` +
      hex(loadAddr + ENTRY_64_OFFSET) +
      (initrd ? `, initrd ${initrd.size} bytes at ${hex(initrd.gpa)}` : ""),
  };
}

/** struct boot_params: zeroed, the setup header copied at 0x1F1, then what the boot loader fills in. */
export function buildZeroPage(
  h: SetupHeader,
  o: { e820: readonly E820Entry[]; initrd?: { gpa: number; size: number }; acpiRsdp?: number },
): Uint8Array {
  const zp = new Uint8Array(ZERO_PAGE_SIZE);
  const v = new DataView(zp.buffer);
  zp.set(h.raw, HDR.SETUP_SECTS);
  v.setUint16(HDR.VID_MODE, VID_MODE_NORMAL, true);
  zp[HDR.TYPE_OF_LOADER] = LOADER_UNDEFINED;
  v.setUint32(HDR.CMD_LINE_PTR, CMDLINE_ADDR, true);
  v.setUint32(BP.EXT_CMD_LINE_PTR, 0, true);
  if (o.initrd) {
    v.setUint32(HDR.RAMDISK_IMAGE, o.initrd.gpa, true);
    v.setUint32(HDR.RAMDISK_SIZE, o.initrd.size, true);
  } else {
    v.setUint32(HDR.RAMDISK_IMAGE, 0, true);
    v.setUint32(HDR.RAMDISK_SIZE, 0, true);
  }
  if (o.acpiRsdp !== undefined && h.version >= VERSION_ACPI_RSDP)
    v.setBigUint64(BP.ACPI_RSDP_ADDR, BigInt(o.acpiRsdp), true);
  if (o.e820.length > BP.E820_MAX) throw new RangeError(`${o.e820.length} e820 entries`);
  zp[BP.E820_ENTRIES] = o.e820.length;
  o.e820.forEach((e, i) => {
    const at = BP.E820_TABLE + 20 * i;
    v.setBigUint64(at, BigInt(e.addr), true);
    v.setBigUint64(at + 8, BigInt(e.size), true);
    v.setUint32(at + 16, e.type, true);
  });
  return zp;
}

/** Write the plan into fresh guest RAM; returns the zero page's address (RSI at entry). */
export function applyLinuxPlan(mem: GuestMemory, plan: LinuxPlan): number {
  for (const s of plan.segments) mem.write(s.gpa, s.data);
  mem.write(ZERO_PAGE, plan.zeroPage);
  mem.fill(CMDLINE_ADDR, CMDLINE_ROOM, 0);
  mem.write(CMDLINE_ADDR, plan.cmdline);
  return ZERO_PAGE;
}

/** The command line a Linux guest gets: the user's, with console=ttyS0 when it names no console. */
export function linuxCmdline(user: string): string {
  if (/(^|\s)console=/.test(user)) return user;
  return [user, "console=ttyS0"].filter((p) => p !== "").join(" ");
}
