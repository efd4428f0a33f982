/* virtio-rng driven by its interrupt: the driver of virtio-rng.c, but after the notify it sleeps in HLT until
 * the device's used-buffer interrupt arrives (ISA IRQ 5 through the in-kernel 8259, remapped to vector 0x25;
 * vmtool raises it through an irqfd from its I/O worker). The handler reads InterruptStatus, acknowledges it
 * and ends the interrupt at the PIC (vmtool/interrupt.h: it returns without IRET). Prints the used length,
 * how many interrupts came and the status bits they carried. 32-bit protected mode. */
#include <vmtool/interrupt.h>
#include <vmtool/io.h>
#include <vmtool/pic.h>
#include <vmtool/printf.h>

#define BASE 0xD0000000u
#define IRQ 5
#define IRQ_BASE 0x20
#define QSIZE 8

struct desc { uint64_t addr; uint32_t len; uint16_t flags, next; };
struct avail { uint16_t flags, idx, ring[QSIZE], used_event; };
struct used { uint16_t flags; volatile uint16_t idx; struct { uint32_t id, len; } ring[QSIZE]; uint16_t avail_event; };

static struct vmtool_idt_gate idt[256];
static struct desc descs[QSIZE] __attribute__((aligned(16)));
static struct avail av __attribute__((aligned(2)));
static struct used us __attribute__((aligned(4)));
static uint8_t buf[4096];
static volatile uint32_t interrupts, status_bits;

static uint32_t rd(uint32_t off) { return mmio_read32(BASE + off); }
static void wr(uint32_t off, uint32_t v) { mmio_write32(BASE + off, v); }

void virtio_irq(void) {
  uint32_t s = rd(0x060);
  wr(0x064, s); /* InterruptACK */
  status_bits |= s;
  interrupts++;
  pic_eoi(IRQ);
}
VMTOOL_DEFINE_ISR(virtio_entry, virtio_irq);

int main(void) {
  if (rd(0x000) != 0x74726976 || rd(0x008) != 4) {
    printf("virtio-rng-irq: no virtio-rng at 0x%x\n", BASE);
    return 2;
  }
  vmtool_set_gate(idt, IRQ_BASE + IRQ, virtio_entry);
  vmtool_load_idt(idt, 256);
  pic_remap(IRQ_BASE, IRQ_BASE + 8);
  pic_unmask(IRQ);
  wr(0x070, 0);
  wr(0x070, 1 | 2);
  wr(0x024, 1);
  wr(0x020, 1); /* VIRTIO_F_VERSION_1 only: an interrupt for every used buffer */
  wr(0x070, 1 | 2 | 8);
  wr(0x030, 0);
  wr(0x038, QSIZE);
  wr(0x080, (uint32_t)(uintptr_t)descs);
  wr(0x090, (uint32_t)(uintptr_t)&av);
  wr(0x0a0, (uint32_t)(uintptr_t)&us);
  wr(0x044, 1);
  wr(0x070, 1 | 2 | 8 | 4);
  descs[0] = (struct desc){(uint32_t)(uintptr_t)buf, sizeof buf, 2, 0};
  av.ring[0] = 0;
  __asm__ volatile("" ::: "memory");
  av.idx = 1;
  wr(0x050, 0);
  for (;;) {
    cli();
    if (interrupts > 0) break;
    sti_hlt(); /* woken by the device's interrupt */
  }
  printf("virtio-rng-irq: used %u len %u after %u interrupt(s), status bits 0x%x\n", us.idx, us.ring[0].len,
         interrupts, status_bits);
  return 0;
}
