// Where things live in the guest's physical address space. One table, used by the loaders (to refuse images
// that overlap vmtool's own areas), the boot-mode setup (GDT, page tables, stack) and the machine description.
//
//   0x0000_0000 .. 0x0008_0000  free low memory (real-mode IVT area; real-mode images load at 0x7C00 by default)
//   0x0008_0000 .. 0x0009_0000  boot stack (grows down from 0x9_0000; real mode uses SS:SP = 0x8000:0xFFF0)
//   0x0009_0000 .. 0x000A_0000  vmtool's boot data (machine description, GDT, Multiboot info, page tables)
//   0x000A_0000 .. 0x0010_0000  free (no BIOS or VGA hole: there is no firmware)
//   0x0010_0000 .. RAM end      free: protected- and long-mode images load at 1 MiB by default
//   0xD000_0000 ..              MMIO window for devices (virtio-mmio), above all RAM
//   0xFEC0_0000                 IOAPIC (in-kernel)     0xFEE0_0000  local APIC (in-kernel)
//   0xFFFB_C000                 KVM identity-map page  0xFFFB_D000  KVM TSS (3 pages), both outside RAM
export const LAYOUT = {
  STACK_BASE: 0x8_0000,
  STACK_TOP: 0x9_0000,
  BOOT_DATA_BASE: 0x9_0000,
  BOOT_INFO: 0x9_0000, // machine description (struct vmtool_boot_info), up to 16 KiB with entries + cmdline
  BOOT_INFO_MAX: 0x4000,
  GDT: 0x9_4000,
  MULTIBOOT_INFO: 0x9_5000, // struct multiboot_info, its memory map and strings: 8 KiB
  PAGE_TABLES: 0x9_8000, // PML4, PDPT, then 4 PDs: identity map of the low 4 GiB with 2 MiB pages
  BOOT_DATA_END: 0xa_0000,
  HIGH_MEM: 0x10_0000,
  MMIO_BASE: 0xd000_0000,
  MMIO_SIZE: 0x1000_0000 - 0x0100_0000, // up to 0xDF00_0000
  IOAPIC: 0xfec0_0000,
  LAPIC: 0xfee0_0000,
  IDENTITY_MAP: 0xfffb_c000,
  TSS: 0xfffb_d000,
  /** Guest RAM must stay below the MMIO window. */
  MAX_RAM: 0xd000_0000,
  MIN_RAM: 0x20_0000, // 2 MiB: boot data + a little room above 1 MiB
  DEFAULT_RAM: 64 * 1024 * 1024,
  /** Default load/entry addresses of flat binaries. */
  REAL_MODE_LOAD: 0x7c00,
  REAL_MODE_SS: 0x8000,
  REAL_MODE_SP: 0xfff0,
  /** 1 MiB: real mode reaches no further. */
  REAL_MODE_LIMIT: 0x10_0000,
} as const;

/** Areas no image may overlap: the loaders refuse a segment that touches one. */
export const RESERVED_AREAS: readonly { base: number; size: number; what: string }[] = [
  { base: LAYOUT.STACK_BASE, size: LAYOUT.STACK_TOP - LAYOUT.STACK_BASE, what: "the boot stack" },
  {
    base: LAYOUT.BOOT_DATA_BASE,
    size: LAYOUT.BOOT_DATA_END - LAYOUT.BOOT_DATA_BASE,
    what: "vmtool's boot data",
  },
];

// Standard PC port and IRQ assignments of vmtool's devices.
export const PORTS = {
  DEBUG_CONSOLE: 0xe9, // Bochs/QEMU debug console
  EXIT: 0xf4, // QEMU isa-debug-exit
  COM1: 0x3f8,
  PIT: 0x40, // i8254, only with --pit (in the kernel: its ports never reach vmtool)
  ACPI_SLEEP: 0x600, // --kernel: the FADT's sleep control (0x600) and status (0x601) registers
} as const;
export const IRQS = { PIT: 0, COM1: 4 } as const;
