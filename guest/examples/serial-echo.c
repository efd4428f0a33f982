/* 32-bit protected mode: an interrupt-driven echo on the 16550A UART (COM1). The UART raises IRQ 4 through
 * the in-kernel 8259 (remapped to vector 0x24); the handler drains the receive FIFO into a ring; the main
 * loop echoes bytes and sleeps in hlt between them (vmtool/interrupt.h: the handler returns without IRET).
 * EOT (0x04, Ctrl-D in a raw terminal) ends the run through the exit port with value 0 (vmtool exits with
 * status 1), after a summary line. */
#include <vmtool/console.h>
#include <vmtool/interrupt.h>
#include <vmtool/pic.h>
#include <vmtool/printf.h>
#include <vmtool/uart.h>

#define IRQ_BASE 0x20
#define EOT 0x04

static struct vmtool_idt_gate idt[256];
static volatile uint8_t ring[256];
static volatile uint8_t head, tail; /* uint8_t indexes wrap with the ring */
static volatile uint32_t interrupts;

/* Runs with interrupts off (interrupt gate): drain the receive FIFO, then end the interrupt at the PIC. */
void com1_irq(void) {
  interrupts++;
  while (inb(UART_COM1 + UART_LSR) & UART_LSR_DR) {
    uint8_t c = inb(UART_COM1 + UART_RBR);
    if ((uint8_t)(head + 1) != tail) ring[head++] = c; /* full ring: drop */
  }
  pic_eoi(UART_COM1_IRQ);
}
VMTOOL_DEFINE_ISR(com1_entry, com1_irq);

int main(void) {
  vmtool_set_putc(com1_putc);
  uart_init(UART_COM1);
  vmtool_set_gate(idt, IRQ_BASE + UART_COM1_IRQ, com1_entry);
  vmtool_load_idt(idt, 256);
  pic_remap(IRQ_BASE, IRQ_BASE + 8);
  pic_unmask(UART_COM1_IRQ);
  outb(UART_COM1 + UART_IER, UART_IER_RDI);
  printf("serial-echo: ready (EOT ends)\n");

  uint32_t bytes = 0;
  for (;;) {
    cli();
    if (head == tail) {
      sti_hlt(); /* woken by the next interrupt */
      continue;
    }
    uint8_t c = ring[tail++];
    sti();
    if (c == EOT) break;
    com1_putc((char)c);
    bytes++;
  }
  cli();
  printf("\nserial-echo: %u bytes echoed, %u interrupts\n", (unsigned)bytes, (unsigned)interrupts);
  vmtool_exit(0);
}
