/* The machine description vmtool writes into guest memory before the first instruction (in the spirit of
 * "KVM without QEMU"'s start_info): what RAM there is and what it is used for, which devices exist where,
 * how many CPUs, and the command line. Non-Multiboot guests get its physical address in ESI (RSI in long
 * mode; real-mode guests: ESI too, reach it as segment ESI >> 4). It lives at 0x90000 in vmtool's boot-data
 * area (memory map use INIT: the guest may reclaim it once it has read what it needs).
 *
 * Layout rules: little-endian, naturally aligned, no implicit padding; the header is followed by the memory
 * map entries, then the device entries, then the NUL-terminated command line, each found through its
 * offset from the start of the header. Readers must use the *_entry_size fields to step through entries, so
 * later versions can grow them. The TypeScript writer is src/loader/boot-info.ts; a test checks every
 * offset and size below against it. */
#ifndef VMTOOL_BOOT_INFO_H
#define VMTOOL_BOOT_INFO_H

#include <stdint.h>

#define VMTOOL_BOOT_INFO_MAGIC 0x42544D56u /* "VMTB" in memory */
#define VMTOOL_BOOT_INFO_VERSION 1

struct vmtool_boot_info {
  uint32_t magic;            /* VMTOOL_BOOT_INFO_MAGIC */
  uint16_t version;          /* VMTOOL_BOOT_INFO_VERSION */
  uint16_t header_size;      /* sizeof(struct vmtool_boot_info) */
  uint32_t total_size;       /* header + entries + command line, in bytes */
  uint32_t flags;            /* none defined yet: 0 */
  uint32_t cpu_count;        /* number of vCPUs */
  uint32_t mem_entry_count;  /* struct vmtool_mem_entry, sorted by base, not overlapping */
  uint32_t mem_entry_offset; /* from the start of this header */
  uint32_t mem_entry_size;   /* sizeof(struct vmtool_mem_entry) */
  uint32_t dev_entry_count;  /* struct vmtool_dev_entry */
  uint32_t dev_entry_offset;
  uint32_t dev_entry_size;   /* sizeof(struct vmtool_dev_entry) */
  uint32_t cmdline_offset;   /* NUL-terminated command line (empty string when none) */
  uint32_t cmdline_size;     /* including the NUL */
  uint32_t reserved;
  uint64_t mem_size;         /* guest RAM in bytes (RAM is one range starting at 0) */
  uint64_t ioapic_base;      /* in-kernel IOAPIC (MMIO), 0 when none */
  uint64_t lapic_base;       /* local APIC (MMIO) */
};

/* Memory map entry flags. */
#define VMTOOL_MEM_READ_ONLY 0x1u /* writes are ignored or fault */

/* Memory map entry use. */
#define VMTOOL_MEM_FREE 0     /* RAM nobody uses */
#define VMTOOL_MEM_KERNEL 1   /* RAM holding the loaded image (its segments, .bss included) */
#define VMTOOL_MEM_INIT 2     /* RAM holding vmtool's boot data and the boot stack: reclaimable once read */
#define VMTOOL_MEM_RESERVED 3 /* not RAM, or not usable: MMIO windows, APICs, KVM's private pages */

struct vmtool_mem_entry {
  uint64_t base;
  uint64_t size;
  uint32_t flags; /* VMTOOL_MEM_READ_ONLY ... */
  uint32_t use;   /* VMTOOL_MEM_FREE ... */
};

/* Device kinds. */
#define VMTOOL_DEV_DEBUG_CONSOLE 1 /* port 0xE9: bytes written go to vmtool's standard output */
#define VMTOOL_DEV_EXIT_PORT 2     /* port 0xF4: writing V ends the run with status (V << 1) | 1 */
#define VMTOOL_DEV_UART_16550 3    /* 16550A UART: 8 registers */
#define VMTOOL_DEV_VIRTIO_MMIO 4   /* virtio-mmio transport (device_id: the virtio device ID) */
#define VMTOOL_DEV_CPU 5           /* a CPU, with --cpus N > 1: its local APIC (base, size); device_id: APIC id */
#define VMTOOL_DEV_PIT_8254 6      /* i8254 PIT, with --pit: ports 0x40-0x43, channel 0 on IRQ 0 */

/* Device address spaces. */
#define VMTOOL_SPACE_PIO 0  /* port I/O: base is a port number */
#define VMTOOL_SPACE_MMIO 1 /* memory-mapped: base is a physical address */

#define VMTOOL_IRQ_NONE 0xFFFFFFFFu

struct vmtool_dev_entry {
  uint64_t base;      /* first port or physical address */
  uint64_t size;      /* ports or bytes */
  uint32_t kind;      /* VMTOOL_DEV_... */
  uint32_t space;     /* VMTOOL_SPACE_... */
  uint32_t irq;       /* ISA IRQ line (PIC/IOAPIC pin), or VMTOOL_IRQ_NONE */
  uint32_t device_id; /* kind-specific identifier (virtio device ID), 0 otherwise */
  char name[16];      /* NUL-terminated, e.g. "com1" */
};

/* Typed access to the entries (use the size fields, not sizeof, to step). */
static inline const struct vmtool_mem_entry *vmtool_mem_entry(const struct vmtool_boot_info *bi, uint32_t i) {
  return (const struct vmtool_mem_entry *)((const char *)bi + bi->mem_entry_offset + i * bi->mem_entry_size);
}
static inline const struct vmtool_dev_entry *vmtool_dev_entry(const struct vmtool_boot_info *bi, uint32_t i) {
  return (const struct vmtool_dev_entry *)((const char *)bi + bi->dev_entry_offset + i * bi->dev_entry_size);
}
static inline const char *vmtool_cmdline(const struct vmtool_boot_info *bi) {
  return (const char *)bi + bi->cmdline_offset;
}
static inline int vmtool_boot_info_valid(const struct vmtool_boot_info *bi) {
  return bi && bi->magic == VMTOOL_BOOT_INFO_MAGIC && bi->version >= 1;
}

/* Prints the whole description on the current printf output (guest/lib/boot_info_print.c). */
void vmtool_print_boot_info(const struct vmtool_boot_info *bi);

#endif
