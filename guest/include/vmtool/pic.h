/* The 8259A pair (in-kernel irqchip under vmtool): remap IRQs 0-15 to vectors base..base+15, masks, EOI. */
#ifndef VMTOOL_PIC_H
#define VMTOOL_PIC_H

#include <vmtool/io.h>

#define PIC1_CMD 0x20
#define PIC1_DATA 0x21
#define PIC2_CMD 0xA0
#define PIC2_DATA 0xA1
#define PIC_EOI 0x20

/* ICW1..ICW4: edge-triggered, cascaded, 8086 mode; every IRQ masked afterwards. */
static inline void pic_remap(uint8_t master_base, uint8_t slave_base) {
  outb(PIC1_CMD, 0x11);
  outb(PIC2_CMD, 0x11);
  outb(PIC1_DATA, master_base);
  outb(PIC2_DATA, slave_base);
  outb(PIC1_DATA, 0x04); /* slave on IRQ 2 */
  outb(PIC2_DATA, 0x02);
  outb(PIC1_DATA, 0x01);
  outb(PIC2_DATA, 0x01);
  outb(PIC1_DATA, 0xFF);
  outb(PIC2_DATA, 0xFF);
}

static inline void pic_unmask(unsigned irq) {
  if (irq < 8) {
    outb(PIC1_DATA, inb(PIC1_DATA) & (uint8_t) ~(1u << irq));
  } else {
    outb(PIC2_DATA, inb(PIC2_DATA) & (uint8_t) ~(1u << (irq - 8)));
    outb(PIC1_DATA, inb(PIC1_DATA) & (uint8_t) ~(1u << 2));
  }
}

static inline void pic_eoi(unsigned irq) {
  if (irq >= 8) outb(PIC2_CMD, PIC_EOI);
  outb(PIC1_CMD, PIC_EOI);
}

#endif
