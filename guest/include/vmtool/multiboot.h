/* Multiboot v1 (the GNU Multiboot Specification 0.6.96): the header a kernel carries and the information
 * structure the boot loader (here vmtool) hands it in EBX, with EAX = MULTIBOOT_BOOTLOADER_MAGIC. */
#ifndef VMTOOL_MULTIBOOT_H
#define VMTOOL_MULTIBOOT_H

#define MULTIBOOT_HEADER_MAGIC 0x1BADB002
#define MULTIBOOT_BOOTLOADER_MAGIC 0x2BADB002

/* Header flags: bits 0-15 are required (a loader that cannot honour one must refuse the kernel). */
#define MULTIBOOT_PAGE_ALIGN 0x00000001   /* modules page-aligned */
#define MULTIBOOT_MEMORY_INFO 0x00000002  /* mem_* and mmap_* wanted */
#define MULTIBOOT_VIDEO_MODE 0x00000004   /* a video mode wanted: vmtool refuses it */
#define MULTIBOOT_AOUT_KLUDGE 0x00010000  /* load addresses in the header, not from ELF */

/* Info flags. */
#define MULTIBOOT_INFO_MEMORY 0x00000001
#define MULTIBOOT_INFO_BOOTDEV 0x00000002
#define MULTIBOOT_INFO_CMDLINE 0x00000004
#define MULTIBOOT_INFO_MODS 0x00000008
#define MULTIBOOT_INFO_MEM_MAP 0x00000040
#define MULTIBOOT_INFO_BOOT_LOADER_NAME 0x00000200

#define MULTIBOOT_MEMORY_AVAILABLE 1
#define MULTIBOOT_MEMORY_RESERVED 2

#ifndef __ASSEMBLER__
#include <stdint.h>

struct multiboot_info {
  uint32_t flags;
  uint32_t mem_lower; /* KiB from 0 */
  uint32_t mem_upper; /* KiB from 1 MiB */
  uint32_t boot_device;
  uint32_t cmdline; /* physical address of a NUL-terminated string */
  uint32_t mods_count;
  uint32_t mods_addr;
  uint32_t syms[4];
  uint32_t mmap_length; /* bytes */
  uint32_t mmap_addr;
  uint32_t drives_length;
  uint32_t drives_addr;
  uint32_t config_table;
  uint32_t boot_loader_name;
  uint32_t apm_table;
  uint32_t vbe_control_info;
  uint32_t vbe_mode_info;
  uint16_t vbe_mode;
  uint16_t vbe_interface_seg;
  uint16_t vbe_interface_off;
  uint16_t vbe_interface_len;
};

/* One memory map entry; `size` does not count itself: the next entry is at (char *)e + e->size + 4. */
struct multiboot_mmap_entry {
  uint32_t size;
  uint64_t addr;
  uint64_t len;
  uint32_t type;
} __attribute__((packed));
#endif

#endif
