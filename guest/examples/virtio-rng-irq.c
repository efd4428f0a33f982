/* virtio-rng driven by its interrupt, through the SDK driver (vmtool/virtio.h): after the notify the guest
 * sleeps in HLT until the device's used-buffer interrupt arrives (its ISA IRQ from the machine description,
 * 5 by default, through the in-kernel 8259, remapped to vector 0x20 + IRQ; vmtool raises it through an irqfd
 * from its I/O worker). The handler acknowledges InterruptStatus and ends the interrupt at the PIC
 * (vmtool/interrupt.h: it returns without IRET); the main loop then takes the used element. Prints the used
 * index and length, how many interrupts came and the status bits they carried. 32-bit protected mode. */
#include <vmtool/interrupt.h>
#include <vmtool/pic.h>
#include <vmtool/printf.h>
#include <vmtool/virtio.h>

#define FALLBACK_BASE 0xD0000000u
#define FALLBACK_IRQ 5
#define IRQ_BASE 0x20
#define QSIZE 8

static struct vmtool_idt_gate idt[256];
VMTOOL_VIRTQ_MEMORY(queue_mem, QSIZE);
static uint8_t buf[4096];
static struct vmtool_virtio_dev dev;
static uint32_t irq = FALLBACK_IRQ;
static volatile uint32_t interrupts, status_bits;

void virtio_irq(void) {
  status_bits |= vmtool_virtio_ack_interrupt(&dev);
  interrupts++;
  pic_eoi(irq);
}
VMTOOL_DEFINE_ISR(virtio_entry, virtio_irq);

int main(const struct vmtool_boot_info *bi) {
  struct vmtool_virtq q;
  if (vmtool_virtio_find(bi, VIRTIO_ID_RNG, 0, &dev) < 0 &&
      vmtool_virtio_probe(FALLBACK_BASE, VIRTIO_ID_RNG, &dev) < 0) {
    printf("virtio-rng-irq: no virtio-rng at 0x%x\n", FALLBACK_BASE);
    return 2;
  }
  if (dev.irq < 16) irq = dev.irq;
  vmtool_set_gate(idt, IRQ_BASE + irq, virtio_entry);
  vmtool_load_idt(idt, 256);
  pic_remap(IRQ_BASE, IRQ_BASE + 8);
  pic_unmask(irq);
  /* VIRTIO_F_VERSION_1 only (no EVENT_IDX): an interrupt for every used buffer. */
  if (vmtool_virtio_init(&dev, 0) < 0) return 3;
  if (vmtool_virtq_setup(&dev, &q, 0, queue_mem, QSIZE) < 0) return 4;
  vmtool_virtio_driver_ok(&dev);
  struct vmtool_virtq_buf b = {buf, sizeof buf, 1};
  if (vmtool_virtq_submit(&q, &b, 1) < 0) return 5;
  for (;;) {
    cli();
    if (interrupts > 0) break;
    sti_hlt(); /* woken by the device's interrupt */
  }
  uint32_t len = 0;
  if (!vmtool_virtq_take(&q, &len)) return 6; /* the interrupt came before the used element: a device bug */
  printf("virtio-rng-irq: used %u len %u after %u interrupt(s), status bits 0x%x\n", q.used->idx, len, interrupts,
         status_bits);
  return 0;
}
