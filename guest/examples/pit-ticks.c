/* 32-bit protected mode: the i8254 PIT that `vmtool run --pit` adds (KVM's in-kernel PIT, channel 0 on IRQ 0
 * through the in-kernel 8259). It looks for the PIT in the machine description; without one it shows that
 * ports 0x40-0x43 belong to nobody (reads as all ones) and exits through the exit port with 1 (status 3).
 * With one, it programs channel 0 as a rate generator at ~1 kHz, reads the counter back through a latch
 * command (it must count down), takes 10 timer interrupts with STI; HLT, prints what it saw and halts with
 * interrupts off (status 0). */
#include <vmtool/boot_info.h>
#include <vmtool/console.h>
#include <vmtool/interrupt.h>
#include <vmtool/pic.h>
#include <vmtool/printf.h>

#define PIT_CH0 0x40
#define PIT_CMD 0x43
#define PIT_HZ 1193182u
#define TICK_HZ 1000u
#define IRQ_BASE 0x20
#define TICKS 10

static struct vmtool_idt_gate idt[256];
static volatile uint32_t ticks;

void pit_handler(void) {
  ticks++;
  pic_eoi(0);
}
VMTOOL_DEFINE_ISR(pit_isr, pit_handler);

/* Latch channel 0 and read its 16-bit count (low byte first). */
static uint16_t pit_count(void) {
  outb(PIT_CMD, 0x00);
  uint8_t lo = inb(PIT_CH0);
  uint8_t hi = inb(PIT_CH0);
  return (uint16_t)(lo | (hi << 8));
}

static const struct vmtool_dev_entry *find_pit(const struct vmtool_boot_info *bi) {
  if (!vmtool_boot_info_valid(bi)) return 0;
  for (uint32_t i = 0; i < bi->dev_entry_count; i++) {
    const struct vmtool_dev_entry *d = vmtool_dev_entry(bi, i);
    if (d->kind == VMTOOL_DEV_PIT_8254) return d;
  }
  return 0;
}

int main(const struct vmtool_boot_info *bi) {
  const struct vmtool_dev_entry *pit = find_pit(bi);
  if (!pit) {
    uint8_t v = inb(PIT_CH0);
    printf("pit-ticks: no PIT in the machine description; port 0x40 reads 0x%x\n", v);
    return 1; /* start32.S writes it to the exit port */
  }
  printf("pit-ticks: PIT at port 0x%x, irq %u\n", (unsigned)pit->base, (unsigned)pit->irq);

  const uint16_t divisor = (uint16_t)(PIT_HZ / TICK_HZ);
  outb(PIT_CMD, 0x34); /* channel 0, lobyte/hibyte, mode 2 (rate generator), binary */
  outb(PIT_CH0, divisor & 0xFF);
  outb(PIT_CH0, divisor >> 8);

  /* The count runs down from the divisor: two reads some time apart differ and stay below it. */
  uint16_t a = pit_count();
  for (volatile int i = 0; i < 2000; i++) {
  }
  uint16_t b = pit_count();
  printf("pit-ticks: counter %s (divisor %u)\n", (a != b && a <= divisor && b <= divisor) ? "counts" : "stuck",
         (unsigned)divisor);

  vmtool_set_gate(idt, IRQ_BASE + 0, pit_isr);
  vmtool_load_idt(idt, 256);
  pic_remap(IRQ_BASE, IRQ_BASE + 8);
  pic_unmask(0);
  while (ticks < TICKS) sti_hlt();
  cli();
  printf("pit-ticks: %u timer interrupts on IRQ 0\n", (unsigned)ticks);
  return 0;
}
