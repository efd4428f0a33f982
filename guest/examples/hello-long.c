/* 64-bit long mode, ELF64 at 1 MiB: greets and prints the machine description it got in RSI. */
#include <vmtool/boot_info.h>
#include <vmtool/console.h>
#include <vmtool/printf.h>

int main(const struct vmtool_boot_info *bi) {
  uintptr_t cr0 = read_cr0();
  printf("hello from long mode (64-bit)\n");
  printf("cr0.pe=%u cr0.pg=%u pointer size %u\n", (unsigned)(cr0 & 1), (unsigned)((cr0 >> 31) & 1),
         (unsigned)sizeof(void *));
  printf("boot info at %p\n", (const void *)bi);
  vmtool_print_boot_info(bi);
  return 0;
}
