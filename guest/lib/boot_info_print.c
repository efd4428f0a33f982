/* Prints vmtool's machine description (vmtool/boot_info.h) in a stable, line-per-item format that the tests
 * read back. */
#include <vmtool/boot_info.h>
#include <vmtool/printf.h>

static const char *use_name(uint32_t use) {
  switch (use) {
    case VMTOOL_MEM_FREE: return "free";
    case VMTOOL_MEM_KERNEL: return "kernel";
    case VMTOOL_MEM_INIT: return "init";
    case VMTOOL_MEM_RESERVED: return "reserved";
    default: return "?";
  }
}

static const char *kind_name(uint32_t kind) {
  switch (kind) {
    case VMTOOL_DEV_DEBUG_CONSOLE: return "debug-console";
    case VMTOOL_DEV_EXIT_PORT: return "exit-port";
    case VMTOOL_DEV_UART_16550: return "uart-16550";
    case VMTOOL_DEV_VIRTIO_MMIO: return "virtio-mmio";
    case VMTOOL_DEV_CPU: return "cpu";
    case VMTOOL_DEV_PIT_8254: return "pit-8254";
    default: return "?";
  }
}

void vmtool_print_boot_info(const struct vmtool_boot_info *bi) {
  if (!vmtool_boot_info_valid(bi)) {
    printf("boot info: none (bad magic at %p)\n", (const void *)bi);
    return;
  }
  printf("boot info: version %u, %u bytes, %u cpu(s), %llu MiB RAM\n", (unsigned)bi->version,
         (unsigned)bi->total_size, (unsigned)bi->cpu_count, (unsigned long long)(bi->mem_size >> 20));
  for (uint32_t i = 0; i < bi->mem_entry_count; i++) {
    const struct vmtool_mem_entry *e = vmtool_mem_entry(bi, i);
    printf("mem %08llx-%08llx %s%s\n", (unsigned long long)e->base,
           (unsigned long long)(e->base + e->size - 1), use_name(e->use),
           (e->flags & VMTOOL_MEM_READ_ONLY) ? " ro" : "");
  }
  for (uint32_t i = 0; i < bi->dev_entry_count; i++) {
    const struct vmtool_dev_entry *d = vmtool_dev_entry(bi, i);
    printf("dev %-8s %-13s %s 0x%llx+%llu", d->name, kind_name(d->kind),
           d->space == VMTOOL_SPACE_PIO ? "pio " : "mmio", (unsigned long long)d->base,
           (unsigned long long)d->size);
    if (d->irq != VMTOOL_IRQ_NONE) printf(" irq %u", (unsigned)d->irq);
    if (d->kind == VMTOOL_DEV_CPU) printf(" apic id %u", (unsigned)d->device_id);
    if (d->kind == VMTOOL_DEV_VIRTIO_MMIO) printf(" virtio id %u", (unsigned)d->device_id);
    printf("\n");
  }
  printf("cmdline: '%s'\n", vmtool_cmdline(bi));
}
