/* vmtool's two simplest devices: the debug console (port 0xE9, Bochs/QEMU convention: every byte written
 * goes to vmtool's standard output) and the exit port (0xF4, QEMU's isa-debug-exit: writing V ends the run,
 * vmtool exits with status (V << 1) | 1). A guest that halts with interrupts disabled ends with status 0. */
#ifndef VMTOOL_CONSOLE_H
#define VMTOOL_CONSOLE_H

#include <vmtool/io.h>

#define VMTOOL_DEBUG_CONSOLE_PORT 0xE9
#define VMTOOL_EXIT_PORT 0xF4

static inline void debug_putc(char c) { outb(VMTOOL_DEBUG_CONSOLE_PORT, (uint8_t)c); }
static inline void debug_puts(const char *s) {
  while (*s) debug_putc(*s++);
}

/* Ends the run: vmtool exits with status (value << 1) | 1. */
static inline __attribute__((noreturn)) void vmtool_exit(uint8_t value) {
  outb(VMTOOL_EXIT_PORT, value);
  for (;;) hlt(); /* not reached: the exit port stops the VM */
}

/* Ends the run with status 0: halted with interrupts off, nothing can wake the vCPU. */
static inline __attribute__((noreturn)) void vmtool_halt(void) {
  for (;;) __asm__ volatile("cli; hlt");
}

#endif
