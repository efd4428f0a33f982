/* A guest of your own (long mode, ELF64): greets whoever `name=` on the command line names, says what machine
 * it got, and with the word `devices` lists the machine description's devices. Returning 0 halts the vCPU
 * (vmtool exits with 0); returning r != 0 ends through the exit port (status (r << 1) | 1). */
#include <vmtool/boot_info.h>
#include <vmtool/cmdline.h>
#include <vmtool/printf.h>

int main(const struct vmtool_boot_info *bi) {
  if (!vmtool_boot_info_valid(bi)) return 1;
  const char *cmdline = vmtool_cmdline(bi);
  char name[32];
  if (vmtool_cmdline_value(cmdline, "name", name, sizeof name) < 0) name[0] = 0;
  printf("hello, %s: %u CPU(s), %u MiB of RAM\n", name[0] ? name : "world", (unsigned)bi->cpu_count,
         (unsigned)(bi->mem_size >> 20));
  if (vmtool_cmdline_has(cmdline, "devices"))
    for (uint32_t i = 0; i < bi->dev_entry_count; i++) {
      const struct vmtool_dev_entry *d = vmtool_dev_entry(bi, i);
      printf("device %s at 0x%llx\n", d->name, (unsigned long long)d->base);
    }
  return 0;
}
