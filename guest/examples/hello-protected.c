/* 32-bit protected mode, ELF32 at 1 MiB: greets, shows it runs with CR0.PE set and paging off, and reads the
 * machine description whose address vmtool put in ESI. */
#include <vmtool/boot_info.h>
#include <vmtool/console.h>
#include <vmtool/printf.h>

int main(const struct vmtool_boot_info *bi) {
  uintptr_t cr0 = read_cr0();
  printf("hello from protected mode (32-bit)\n");
  printf("cr0.pe=%u cr0.pg=%u cs=0x%x\n", (unsigned)(cr0 & 1), (unsigned)((cr0 >> 31) & 1), read_cs());
  if (vmtool_boot_info_valid(bi))
    printf("boot info at %p: %u memory entries, %u devices, cmdline '%s'\n", (const void *)bi,
           (unsigned)bi->mem_entry_count, (unsigned)bi->dev_entry_count, vmtool_cmdline(bi));
  else
    printf("boot info: none at %p\n", (const void *)bi);
  return 0;
}
