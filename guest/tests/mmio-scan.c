/* Reads N distinct unclaimed MMIO addresses (one exit each), N from the command line (default 10000): what
 * `vmtool run --stats` must count in bounded memory. Prints the count and halts. */
#include <vmtool/boot_info.h>
#include <vmtool/io.h>
#include <vmtool/printf.h>

int main(const struct vmtool_boot_info *bi) {
  const char *c = vmtool_cmdline(bi);
  uint32_t n = 0;
  for (; *c >= '0' && *c <= '9'; c++) n = n * 10 + (uint32_t)(*c - '0');
  if (n == 0) n = 10000;
  uint32_t sum = 0;
  for (uint32_t i = 0; i < n; i++) sum += mmio_read32(0xE0000000u + 4 * i);
  printf("mmio-scan: %u reads, sum %x\n", n, sum);
  return 0;
}
