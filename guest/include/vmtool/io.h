/* Port I/O, MMIO and a few privileged instructions for freestanding vmtool guests (16-bit code excepted).
 * Every access to a port or an MMIO address leaves the guest (a VM exit) unless KVM handles it in the kernel,
 * so these are the guest's way of talking to vmtool's devices. */
#ifndef VMTOOL_IO_H
#define VMTOOL_IO_H

#include <stdint.h>

static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outw(uint16_t port, uint16_t v) { __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }

static inline uint8_t inb(uint16_t port) {
  uint8_t v;
  __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}
static inline uint16_t inw(uint16_t port) {
  uint16_t v;
  __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}
static inline uint32_t inl(uint16_t port) {
  uint32_t v;
  __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}

/* MMIO: volatile accesses of exactly the given width (one instruction, so one exit per access). */
static inline uint8_t mmio_read8(uintptr_t a) { return *(volatile uint8_t *)a; }
static inline uint16_t mmio_read16(uintptr_t a) { return *(volatile uint16_t *)a; }
static inline uint32_t mmio_read32(uintptr_t a) { return *(volatile uint32_t *)a; }
static inline void mmio_write8(uintptr_t a, uint8_t v) { *(volatile uint8_t *)a = v; }
static inline void mmio_write16(uintptr_t a, uint16_t v) { *(volatile uint16_t *)a = v; }
static inline void mmio_write32(uintptr_t a, uint32_t v) { *(volatile uint32_t *)a = v; }

/* 64-bit MMIO. 64-bit code: one 8-byte MOV (one exit of 8 bytes). 32-bit code has no 8-byte access through
 * the general registers, so these make two 4-byte accesses, always the low half at a first, then the high
 * half at a + 4 (Linux's lo_hi_readq/lo_hi_writeq order): two exits, and not atomic. A register the device may
 * change between the two halves needs a protocol of its own (virtio's ConfigGeneration, see
 * vmtool_virtio_config64). */
#if defined(__x86_64__)
static inline uint64_t mmio_read64(uintptr_t a) {
  uint64_t v;
  __asm__ volatile("movq (%1), %0" : "=r"(v) : "r"(a) : "memory");
  return v;
}
static inline void mmio_write64(uintptr_t a, uint64_t v) {
  __asm__ volatile("movq %0, (%1)" : : "r"(v), "r"(a) : "memory");
}
#else
static inline uint64_t mmio_read64(uintptr_t a) {
  uint32_t lo = mmio_read32(a);
  uint32_t hi = mmio_read32(a + 4);
  return ((uint64_t)hi << 32) | lo;
}
static inline void mmio_write64(uintptr_t a, uint64_t v) {
  mmio_write32(a, (uint32_t)v);
  mmio_write32(a + 4, (uint32_t)(v >> 32));
}
#endif

static inline void cli(void) { __asm__ volatile("cli" ::: "memory"); }
static inline void sti(void) { __asm__ volatile("sti" ::: "memory"); }
static inline void hlt(void) { __asm__ volatile("hlt" ::: "memory"); }
/* sti takes effect after the next instruction, so an interrupt cannot slip in between sti and hlt. */
static inline void sti_hlt(void) { __asm__ volatile("sti; hlt" ::: "memory"); }

static inline uintptr_t read_cr0(void) {
  uintptr_t v;
  __asm__ volatile("mov %%cr0, %0" : "=r"(v));
  return v;
}
static inline uint16_t read_cs(void) {
  uint16_t v;
  __asm__ volatile("mov %%cs, %0" : "=r"(v));
  return v;
}

#endif
