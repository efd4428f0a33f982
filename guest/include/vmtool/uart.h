/* The 16550A UART (COM1 at port 0x3F8, IRQ 4 on the master 8259): register offsets and bits. */
#ifndef VMTOOL_UART_H
#define VMTOOL_UART_H

#include <vmtool/io.h>

#define UART_COM1 0x3F8
#define UART_COM1_IRQ 4

#define UART_RBR 0 /* receive buffer (read, DLAB=0) */
#define UART_THR 0 /* transmit holding (write, DLAB=0) */
#define UART_DLL 0 /* divisor latch low (DLAB=1) */
#define UART_IER 1 /* interrupt enable (DLAB=0) */
#define UART_DLM 1 /* divisor latch high (DLAB=1) */
#define UART_IIR 2 /* interrupt identification (read) */
#define UART_FCR 2 /* FIFO control (write) */
#define UART_LCR 3 /* line control */
#define UART_MCR 4 /* modem control */
#define UART_LSR 5 /* line status */
#define UART_MSR 6 /* modem status */
#define UART_SCR 7 /* scratch */

#define UART_IER_RDI 0x01  /* received data available */
#define UART_IER_THRI 0x02 /* transmit holding register empty */
#define UART_IER_RLSI 0x04 /* receiver line status */
#define UART_IER_MSI 0x08  /* modem status */

#define UART_IIR_NO_INT 0x01
#define UART_IIR_ID_MASK 0x0E
#define UART_IIR_RDI 0x04
#define UART_IIR_THRI 0x02

#define UART_FCR_ENABLE 0x01
#define UART_FCR_CLEAR_RX 0x02
#define UART_FCR_CLEAR_TX 0x04

#define UART_LCR_8N1 0x03
#define UART_LCR_DLAB 0x80

#define UART_MCR_DTR 0x01
#define UART_MCR_RTS 0x02
#define UART_MCR_OUT2 0x08 /* on a PC, OUT2 gates the UART's interrupt onto the IRQ line */
#define UART_MCR_LOOP 0x10

#define UART_LSR_DR 0x01   /* data ready */
#define UART_LSR_THRE 0x20 /* transmit holding register empty */
#define UART_LSR_TEMT 0x40 /* transmitter empty */

/* 115200 baud (divisor 1), 8N1, interrupts off, FIFOs left as they are (off after reset: 16450 mode, one
 * byte at a time). Bytes that arrived before the guest started (input piped into vmtool) are kept. */
static inline void uart_init(uint16_t base) {
  outb(base + UART_IER, 0);
  outb(base + UART_LCR, UART_LCR_DLAB);
  outb(base + UART_DLL, 1);
  outb(base + UART_DLM, 0);
  outb(base + UART_LCR, UART_LCR_8N1);
  outb(base + UART_MCR, UART_MCR_DTR | UART_MCR_RTS | UART_MCR_OUT2);
}

/* 16-byte FIFOs, interrupt at every byte. As on a real 16550A, switching FIFO mode on empties the FIFOs:
 * bytes received before this call are lost. */
static inline void uart_enable_fifo(uint16_t base) {
  outb(base + UART_FCR, UART_FCR_ENABLE | UART_FCR_CLEAR_RX | UART_FCR_CLEAR_TX);
}

static inline void uart_putc(uint16_t base, char c) {
  while (!(inb(base + UART_LSR) & UART_LSR_THRE)) {
  }
  outb(base + UART_THR, (uint8_t)c);
}

static inline void com1_putc(char c) { uart_putc(UART_COM1, c); }

#endif
