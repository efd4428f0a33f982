/* 32-bit protected mode: a self-test of vmtool's 16550A UART (COM1) as a guest sees it through real port I/O,
 * the in-kernel 8259 and IRQ 4. It checks the registers, loopback, FIFO trigger levels, overrun and the
 * interrupt priority order by polling; then real interrupts: OUT2 gating (none in loopback, none without
 * OUT2), THR-empty interrupts (on enable and after each THR write), and received-data interrupts for bytes
 * the host sends on standard input (it waits for 3). Results go to the debug console, one line per check;
 * when all pass the guest halts (vmtool status 0), else it writes the number of failed checks to the exit port. */
#include <vmtool/console.h>
#include <vmtool/interrupt.h>
#include <vmtool/pic.h>
#include <vmtool/printf.h>
#include <vmtool/uart.h>

#define COM1 UART_COM1
#define IRQ_BASE 0x20
#define IIR_ID(v) ((v) & 0x0F)

static struct vmtool_idt_gate idt[256];
static volatile uint32_t irqs;      /* interrupts taken on IRQ 4 */
static volatile uint8_t last_iir;   /* IIR as the handler first read it */
static volatile uint8_t rx[64];     /* bytes the handler drained */
static volatile uint32_t rx_count;
static unsigned checks, failures;

/* Reads IIR once (which clears a THR-empty interrupt), then drains received data. */
void com1_handler(void) {
  irqs++;
  last_iir = inb(COM1 + UART_IIR);
  while (inb(COM1 + UART_LSR) & UART_LSR_DR) {
    uint8_t c = inb(COM1 + UART_RBR);
    if (rx_count < sizeof rx) rx[rx_count++] = c;
  }
  pic_eoi(UART_COM1_IRQ);
}

/* The IRQ 4 entry: the SDK's stub, which returns without IRET (a protected-mode IRET cannot run on the kvm_pvm
 * backend; see vmtool/interrupt.h and docs/devices.md). */
VMTOOL_DEFINE_ISR(com1_isr, com1_handler);

static void check(int ok, const char *what, unsigned got, unsigned want) {
  checks++;
  if (ok) {
    printf("ok   %s\n", what);
  } else {
    failures++;
    printf("FAIL %s: got 0x%x, want 0x%x\n", what, got, want);
  }
}
#define EQ(what, got, want)                                                                                   \
  do {                                                                                                        \
    unsigned g_ = (got), w_ = (want);                                                                         \
    check(g_ == w_, what, g_, w_);                                                                            \
  } while (0)

static void drain(void) {
  while (inb(COM1 + UART_LSR) & UART_LSR_DR) (void)inb(COM1 + UART_RBR);
}

/* Lets pending interrupts in for a while without halting (halting with none coming would never end). */
static void window(void) {
  sti();
  for (volatile int i = 0; i < 200; i++) {
  }
  cli();
}

/* Sleeps until the interrupt count passes `target`. */
static void wait_irqs(uint32_t target) {
  while (irqs < target) sti_hlt();
  cli();
}

static void test_registers(void) {
  outb(COM1 + UART_IER, 0);
  outb(COM1 + UART_SCR, 0x55);
  EQ("scratch holds 0x55", inb(COM1 + UART_SCR), 0x55);
  outb(COM1 + UART_SCR, 0xAA);
  EQ("scratch holds 0xAA", inb(COM1 + UART_SCR), 0xAA);

  outb(COM1 + UART_LCR, UART_LCR_DLAB);
  outb(COM1 + UART_DLL, 0x34);
  outb(COM1 + UART_DLM, 0x12);
  EQ("divisor latch low", inb(COM1 + UART_DLL), 0x34);
  EQ("divisor latch high", inb(COM1 + UART_DLM), 0x12);
  outb(COM1 + UART_LCR, UART_LCR_8N1);
  EQ("IER untouched by DLM", inb(COM1 + UART_IER), 0);
  EQ("LCR reads back 8N1", inb(COM1 + UART_LCR), UART_LCR_8N1);

  outb(COM1 + UART_IER, 0xFF);
  EQ("IER keeps bits 0-3", inb(COM1 + UART_IER), 0x0F);
  outb(COM1 + UART_IER, 0);

  outb(COM1 + UART_FCR, UART_FCR_ENABLE);
  EQ("IIR shows FIFOs on", inb(COM1 + UART_IIR) & 0xC0, 0xC0);
  outb(COM1 + UART_FCR, 0);
  EQ("IIR shows FIFOs off", inb(COM1 + UART_IIR) & 0xC0, 0);
  EQ("LSR idle: THRE|TEMT", inb(COM1 + UART_LSR) & 0x7F, UART_LSR_THRE | UART_LSR_TEMT);

  /* A 16-bit access is split like on an ISA bus: LCR then MCR. */
  outw(COM1 + UART_LCR, (uint16_t)(UART_MCR_DTR << 8 | UART_LCR_8N1));
  EQ("outw wrote LCR and MCR", inw(COM1 + UART_LCR), (unsigned)(UART_MCR_DTR << 8 | UART_LCR_8N1));
}

static void test_loopback(void) {
  outb(COM1 + UART_MCR, UART_MCR_LOOP);
  EQ("loopback: MSR inputs follow MCR (all off)", inb(COM1 + UART_MSR) & 0xF0, 0);
  outb(COM1 + UART_MCR, UART_MCR_LOOP | 0x0F);
  EQ("loopback: MSR inputs follow MCR (all on)", inb(COM1 + UART_MSR) & 0xF0, 0xF0);
  outb(COM1 + UART_MCR, UART_MCR_LOOP | UART_MCR_RTS);
  /* From all four on to RTS only: CTS stays, DSR and DCD drop (deltas), RI's trailing edge sets TERI. */
  EQ("loopback: RTS->CTS, deltas of the others", inb(COM1 + UART_MSR), 0x10 | 0x02 | 0x04 | 0x08);

  /* FIFOs on, trigger level 4, received-data interrupt enabled (identified in IIR, polled here). */
  outb(COM1 + UART_FCR, UART_FCR_ENABLE | UART_FCR_CLEAR_RX | UART_FCR_CLEAR_TX | 0x40);
  outb(COM1 + UART_IER, UART_IER_RDI);
  outb(COM1 + UART_THR, 'A');
  outb(COM1 + UART_THR, 'B');
  EQ("loopback: data ready", inb(COM1 + UART_LSR) & UART_LSR_DR, UART_LSR_DR);
  EQ("below trigger 4: character timeout", IIR_ID(inb(COM1 + UART_IIR)), 0x0C);
  outb(COM1 + UART_THR, 'C');
  outb(COM1 + UART_THR, 'D');
  EQ("at trigger 4: received data", IIR_ID(inb(COM1 + UART_IIR)), 0x04);
  char got[5] = {0};
  for (int i = 0; i < 4; i++) got[i] = (char)inb(COM1 + UART_RBR);
  EQ("loopback: bytes come back in order", got[0] == 'A' && got[1] == 'B' && got[2] == 'C' && got[3] == 'D', 1);
  EQ("empty FIFO: no interrupt", IIR_ID(inb(COM1 + UART_IIR)), 0x01);

  for (int i = 0; i < 17; i++) outb(COM1 + UART_THR, (uint8_t)('a' + i));
  EQ("17 bytes into 16: overrun", inb(COM1 + UART_LSR) & 0x03, 0x03);
  EQ("reading LSR cleared OE", inb(COM1 + UART_LSR) & 0x02, 0);
  unsigned n = 0, in_order = 1;
  while (inb(COM1 + UART_LSR) & UART_LSR_DR) in_order &= inb(COM1 + UART_RBR) == 'a' + n++;
  EQ("the first 16 survive the overrun", n * in_order, 16);
}

static void test_priority(void) {
  /* Still in loopback: line status (overrun) > received data > THR empty > modem status. */
  outb(COM1 + UART_IER, 0);
  outb(COM1 + UART_FCR, UART_FCR_ENABLE | UART_FCR_CLEAR_RX);
  for (int i = 0; i < 17; i++) outb(COM1 + UART_THR, '0');
  outb(COM1 + UART_MCR, UART_MCR_LOOP | UART_MCR_DTR); /* DSR changes: a modem-status delta */
  outb(COM1 + UART_IER, 0x0F);
  EQ("priority 1: line status", IIR_ID(inb(COM1 + UART_IIR)), 0x06);
  (void)inb(COM1 + UART_LSR);
  EQ("priority 2: received data", IIR_ID(inb(COM1 + UART_IIR)), 0x04);
  drain();
  EQ("priority 3: THR empty", IIR_ID(inb(COM1 + UART_IIR)), 0x02);
  EQ("priority 4: modem status (reading IIR cleared THRE)", IIR_ID(inb(COM1 + UART_IIR)), 0x00);
  (void)inb(COM1 + UART_MSR);
  EQ("all sources cleared", IIR_ID(inb(COM1 + UART_IIR)), 0x01);
  outb(COM1 + UART_IER, 0);
}

static void test_interrupts(void) {
  vmtool_set_gate(idt, IRQ_BASE + UART_COM1_IRQ, com1_isr);
  vmtool_load_idt(idt, 256);
  pic_remap(IRQ_BASE, IRQ_BASE + 8);
  pic_unmask(UART_COM1_IRQ);

  /* Loopback with OUT2 set: the interrupt is identified but does not reach the PIC (as on a PC). */
  outb(COM1 + UART_MCR, UART_MCR_LOOP | UART_MCR_OUT2);
  outb(COM1 + UART_IER, UART_IER_RDI);
  outb(COM1 + UART_THR, 'L');
  EQ("loopback: received data identified", IIR_ID(inb(COM1 + UART_IIR)), 0x04);
  window();
  EQ("loopback: no IRQ reaches the PIC", irqs, 0);
  outb(COM1 + UART_IER, 0);
  drain();

  /* Out of loopback, OUT2 set: enabling THR-empty interrupts raises one at once. */
  outb(COM1 + UART_MCR, UART_MCR_DTR | UART_MCR_RTS | UART_MCR_OUT2);
  outb(COM1 + UART_IER, UART_IER_THRI);
  wait_irqs(1);
  EQ("THR-empty interrupt on enable", last_iir, 0xC2);
  /* Each byte written re-arms it: a fresh edge for the edge-triggered 8259. */
  outb(COM1 + UART_THR, '>');
  wait_irqs(2);
  EQ("THR-empty interrupt after a THR write", last_iir, 0xC2);
  outb(COM1 + UART_IER, 0);
  window();
  EQ("no more interrupts once disabled", irqs, 2);

  /* Received data from the host: wait for 3 bytes by polling, then check the OUT2 gate and take them by IRQ. */
  outb(COM1 + UART_FCR, UART_FCR_ENABLE | 0xC0); /* trigger 14: 3 bytes give a character timeout */
  printf("waiting for 3 bytes on COM1\n");
  outb(COM1 + UART_THR, '?'); /* tells the host test we are ready */
  while (!(inb(COM1 + UART_LSR) & UART_LSR_DR)) {
  }
  outb(COM1 + UART_MCR, UART_MCR_DTR | UART_MCR_RTS);
  outb(COM1 + UART_IER, UART_IER_RDI);
  window();
  EQ("OUT2 clear: no IRQ", irqs, 2);
  outb(COM1 + UART_MCR, UART_MCR_DTR | UART_MCR_RTS | UART_MCR_OUT2);
  while (rx_count < 3) {
    uint32_t before = irqs;
    wait_irqs(before + 1);
  }
  EQ("received-data interrupt identified (timeout, FIFO on)", last_iir, 0xCC);
  EQ("host bytes arrived by interrupt", rx[0] == 'h' && rx[1] == 'i' && rx[2] == '!', 1);
}

int main(void) {
  EQ("debug console answers 0xE9", inb(VMTOOL_DEBUG_CONSOLE_PORT), 0xE9);
  EQ("an unclaimed port (COM2) reads all ones", inb(0x2F8 + UART_LSR), 0xFF);
  test_registers();
  test_loopback();
  test_priority();
  test_interrupts();
  printf("uart-selftest: %u checks, %u failed\n", checks, failures);
  return (int)failures; /* start32.S halts on 0, else writes the value to the exit port */
}
