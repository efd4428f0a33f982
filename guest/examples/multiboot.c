/* A Multiboot v1 kernel (ELF32): prints what the boot loader handed over: magic, loader name, command line,
 * memory sizes and the memory map. */
#include <vmtool/console.h>
#include <vmtool/multiboot.h>
#include <vmtool/printf.h>

int main(uint32_t magic, const struct multiboot_info *mbi) {
  if (magic != MULTIBOOT_BOOTLOADER_MAGIC) {
    printf("multiboot: bad magic 0x%x\n", (unsigned)magic);
    return 1;
  }
  printf("multiboot: magic ok, info at %p, flags 0x%x\n", (const void *)mbi, (unsigned)mbi->flags);
  if (mbi->flags & MULTIBOOT_INFO_BOOT_LOADER_NAME)
    printf("boot loader: %s\n", (const char *)(uintptr_t)mbi->boot_loader_name);
  if (mbi->flags & MULTIBOOT_INFO_CMDLINE)
    printf("cmdline: '%s'\n", (const char *)(uintptr_t)mbi->cmdline);
  if (mbi->flags & MULTIBOOT_INFO_MEMORY)
    printf("mem_lower %u KiB, mem_upper %u KiB\n", (unsigned)mbi->mem_lower, (unsigned)mbi->mem_upper);
  if (mbi->flags & MULTIBOOT_INFO_MEM_MAP) {
    uintptr_t p = mbi->mmap_addr, end = mbi->mmap_addr + mbi->mmap_length;
    while (p < end) {
      const struct multiboot_mmap_entry *e = (const struct multiboot_mmap_entry *)p;
      printf("mmap %016llx-%016llx type %u\n", (unsigned long long)e->addr,
             (unsigned long long)(e->addr + e->len - 1), (unsigned)e->type);
      p += e->size + 4;
    }
  }
  return 0;
}
