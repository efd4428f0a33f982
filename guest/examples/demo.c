/* vmtool's built-in demo guest (shipped prebuilt as guest/prebuilt/demo.elf): 64-bit long mode. Greets,
 * prints the machine description vmtool handed over in RSI, makes a few VM exits of different kinds while
 * saying what each one is, then halts with interrupts off (vmtool exits with status 0). */
#include <vmtool/boot_info.h>
#include <vmtool/console.h>
#include <vmtool/printf.h>
#include <vmtool/uart.h>

#define UNCLAIMED_PORT 0x100

/* The first address from `at` on that no MMIO device of the description covers. */
static uint64_t first_free(const struct vmtool_boot_info *bi, uint64_t at) {
  for (int moved = 1; moved;) {
    moved = 0;
    for (uint32_t i = 0; i < bi->dev_entry_count; i++) {
      const struct vmtool_dev_entry *d = vmtool_dev_entry(bi, i);
      if (d->space == VMTOOL_SPACE_MMIO && at >= d->base && at - d->base < d->size) {
        at = d->base + d->size;
        moved = 1;
      }
    }
  }
  return at;
}

int main(const struct vmtool_boot_info *bi) {
  printf("Hello from vmtool's demo guest: 64-bit long mode, loaded from an ELF64 file.\n");
  printf("Every character of this text is one OUT to port 0xE9 (the debug console): one VM exit each.\n\n");

  printf("The machine description vmtool wrote at %p (its address came in RSI):\n", (const void *)bi);
  vmtool_print_boot_info(bi);

  printf("\nA few other exits:\n");
  uart_init(UART_COM1);
  const char *s = "  [uart] this line went through the 16550A UART at 0x3f8 (COM1)\n";
  while (*s) com1_putc(*s++);
  outb(UART_COM1 + UART_SCR, 0x5a);
  printf("  [pio]  UART scratch register: wrote 0x5a, read back 0x%02x\n", inb(UART_COM1 + UART_SCR));
  printf("  [pio]  read of unclaimed port 0x%x: 0x%02x (all ones)\n", UNCLAIMED_PORT, inb(UNCLAIMED_PORT));
  if (vmtool_boot_info_valid(bi)) {
    /* The first address of the MMIO window with no device there (virtio devices sit at its start when there are
       any), so an MMIO exit that reads all ones. */
    uint64_t mmio = 0;
    for (uint32_t i = 0; i < bi->mem_entry_count; i++) {
      const struct vmtool_mem_entry *e = vmtool_mem_entry(bi, i);
      if (e->use == VMTOOL_MEM_RESERVED && e->base >= bi->mem_size && e->base < 0xFEC00000u) {
        mmio = first_free(bi, e->base);
        break;
      }
    }
    if (mmio) printf("  [mmio] read of unclaimed address 0x%llx: 0x%08x (all ones)\n", (unsigned long long)mmio,
                     mmio_read32((uintptr_t)mmio));
  }
  printf("\nHalting with interrupts disabled: nothing can wake this vCPU, so vmtool ends with status 0.\n");
  return 0;
}
