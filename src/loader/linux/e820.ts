// The physical memory map a Linux guest gets, in the BIOS's e820 types (the zero page's e820_table and PVH's
// hvm_memmap_table use the same ones). vmtool's own boot data (stack, zero page, command line, GDT, page
// tables) is reserved, as is the BIOS area where the ACPI and MP tables sit; the kernel and initrd are RAM
// (the kernel reserves them itself, as it does behind any boot loader).
import { LAYOUT } from "../../vm/machine-layout.js";

export const E820 = { RAM: 1, RESERVED: 2, ACPI: 3, NVS: 4 } as const;
export type E820Type = (typeof E820)[keyof typeof E820];

export interface E820Entry {
  addr: number;
  size: number;
  type: E820Type;
}

/** Where the platform tables (ACPI, MP) live: the top of the BIOS area, which Linux scans for both. */
export const BIOS_TABLES_BASE = 0xe_0000;
export const BIOS_TABLES_END = 0x10_0000;

/** The map for `memSize` bytes of RAM: low RAM, vmtool's boot data, the tables' area, RAM from 1 MiB. */
export function linuxE820(memSize: number): E820Entry[] {
  return [
    { addr: 0, size: LAYOUT.STACK_BASE, type: E820.RAM },
    { addr: LAYOUT.STACK_BASE, size: LAYOUT.BOOT_DATA_END - LAYOUT.STACK_BASE, type: E820.RESERVED },
    { addr: BIOS_TABLES_BASE, size: BIOS_TABLES_END - BIOS_TABLES_BASE, type: E820.RESERVED },
    { addr: LAYOUT.HIGH_MEM, size: memSize - LAYOUT.HIGH_MEM, type: E820.RAM },
  ];
}
