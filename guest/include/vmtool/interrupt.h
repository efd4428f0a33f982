/* Interrupt handlers for 32-bit protected-mode guests: an IDT gate setter and an entry stub that saves the
 * registers, calls a plain C function and returns to the interrupted code.
 *
 * Why the stub does not end in IRET: on this project's development machine KVM is the PVM backend, which
 * runs guest ring-0 code through KVM's instruction emulator, and that emulator implements IRET in real mode
 * only (a protected-mode IRET ends the run with KVM_EXIT_INTERNAL_ERROR, "emulation failure";
 * guest/repro/iret-protected.c proves it with plain KVM ioctls). For a return to the same privilege level
 * IRET only pops EIP, CS and EFLAGS, so the stub does the same with POPF and RET, which works on every
 * backend. Define VMTOOL_USE_IRET before including this header to get a plain IRET instead. */
#ifndef VMTOOL_INTERRUPT_H
#define VMTOOL_INTERRUPT_H

#include <vmtool/io.h>

#if !defined(__i386__)
#error "vmtool/interrupt.h is for 32-bit protected-mode guests (-m32)"
#endif

struct vmtool_idt_gate {
  uint16_t offset_lo;
  uint16_t selector;
  uint8_t zero;
  uint8_t type; /* 0x8E: present, DPL 0, 32-bit interrupt gate (IF cleared on entry) */
  uint16_t offset_hi;
} __attribute__((packed));

struct vmtool_idt_ptr {
  uint16_t limit;
  uint32_t base;
} __attribute__((packed));

static inline void vmtool_set_gate(struct vmtool_idt_gate *idt, unsigned vector, void (*entry)(void)) {
  uint32_t a = (uint32_t)(uintptr_t)entry;
  idt[vector].offset_lo = a & 0xFFFF;
  idt[vector].selector = read_cs();
  idt[vector].zero = 0;
  idt[vector].type = 0x8E;
  idt[vector].offset_hi = a >> 16;
}

static inline void vmtool_load_idt(struct vmtool_idt_gate *idt, unsigned entries) {
  struct vmtool_idt_ptr p = {(uint16_t)(entries * sizeof(*idt) - 1), (uint32_t)(uintptr_t)idt};
  __asm__ volatile("lidt %0" : : "m"(p));
}

#ifdef VMTOOL_USE_IRET
#define VMTOOL_ISR_RETURN "iret\n"
#else
/* Stack on entry (same privilege): [esp]=EIP [esp+4]=CS [esp+8]=EFLAGS. Rewrite it as [EFLAGS, EIP] over
 * the CS slot, then POPF; RET leaves ESP where IRET would have. */
#define VMTOOL_ISR_RETURN     \
  "push %eax\n"               \
  "mov 4(%esp), %eax\n"       \
  "xchg %eax, 12(%esp)\n"     \
  "mov %eax, 8(%esp)\n"       \
  "pop %eax\n"                \
  "add $4, %esp\n"            \
  "popf\n"                    \
  "ret\n"
#endif

/* Defines `void entry(void)`, an interrupt entry point calling `void handler(void)` (a normal C function). */
#define VMTOOL_DEFINE_ISR(entry, handler)                                                          \
  void entry(void);                                                                                \
  void handler(void);                                                                              \
  __asm__(".text\n.globl " #entry "\n.type " #entry ", @function\n" #entry ":\n"                   \
          "pushal\n"                                                                               \
          "cld\n"                                                                                  \
          "call " #handler "\n"                                                                    \
          "popal\n" VMTOOL_ISR_RETURN)

#endif
