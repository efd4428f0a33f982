/* SMP hello, 32-bit protected mode, ELF32 at 1 MiB: the BSP (vCPU 0) wakes the application processors the
 * way a PC does it: INIT, then two STARTUP IPIs through its local APIC's ICR, broadcast to all but itself.
 * Each AP starts in real mode at the page the SIPI names (a trampoline copied below 1 MiB), switches to
 * 32-bit protected mode with its own GDT and stack, reads its APIC id (CPUID leaf 1, EBX[31:24]), prints
 * "AP n up", counts itself and halts with interrupts off (with "count": counts for good). The BSP waits for
 * cpu_count - 1 APs from the machine description, prints the total and halts. Nothing here uses IRET or `int n` (this machine's
 * kvm_pvm backend cannot run them in 32-bit mode, docs/run.md). Exit status 3 if an AP never showed up. */
#include <vmtool/boot_info.h>
#include <vmtool/cmdline.h>
#include <vmtool/io.h>
#include <vmtool/printf.h>

#define LAPIC 0xFEE00000u
#define LAPIC_SVR 0x0F0
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310
#define TRAMPOLINE 0x10000u /* SIPI vector 0x10: the AP starts at CS=0x1000, IP=0 */
#define AP_STACKS 0x20000u  /* 4 KiB per AP below 0x80000 (vmtool's boot stack starts there) */

volatile uint32_t ap_count;
/* Set from the command line word "ap-fault": the AP with APIC id 1 then triple-faults (a test of vmtool). */
static volatile uint32_t fault_ap;
/* Set from the command line word "stay": the BSP then sleeps in `sti; hlt` for good instead of ending (a VM
 * that stays up with all its vCPUs started, for the observer's tests). */
static uint32_t stay;
/* Set from the command line word "uart": every AP also writes 64 copies of its id digit to COM1 at the same
 * time, without any lock (vmtool's UART lives in one thread: no byte may be lost or duplicated). */
static volatile uint32_t uart_test;
#define UART_BYTES 64
/* Set from the command line word "count": once up, every vCPU adds 1 to its own counts[APIC id] for good (a VM
 * whose vCPUs all make progress, for the introspection tests: a paused vCPU's counter stands still). */
static volatile uint32_t count_mode;
volatile uint64_t counts[64];
static volatile uint32_t print_lock;

static void lock(void) {
  while (__atomic_exchange_n(&print_lock, 1, __ATOMIC_ACQUIRE)) __asm__ volatile("pause");
}
static void unlock(void) { __atomic_store_n(&print_lock, 0, __ATOMIC_RELEASE); }

/* The AP's C entry, called by the trampoline with its APIC id. */
void __attribute__((used, regparm(1))) ap_main(uint32_t apic_id) {
  lock();
  printf("AP %u up\n", apic_id);
  unlock();
  if (fault_ap && apic_id == 1) {
    static const struct __attribute__((packed)) { uint16_t limit; uint32_t base; } no_idt = {0, 0};
    __asm__ volatile("lidt %0; ud2" : : "m"(no_idt)); /* #UD with no IDT: triple fault */
  }
  if (uart_test)
    for (int i = 0; i < UART_BYTES; i++) {
      while (!(inb(0x3F8 + 5) & 0x20)) /* LSR.THRE */
        ;
      outb(0x3F8, (uint8_t)('0' + apic_id % 10));
    }
  __atomic_add_fetch(&ap_count, 1, __ATOMIC_SEQ_CST);
  while (count_mode) counts[apic_id % 64]++;
  for (;;) __asm__ volatile("cli; hlt");
}

/* The trampoline: assembled here, copied to TRAMPOLINE by the BSP. Offsets are from its first byte. */
__asm__(".pushsection .rodata\n"
        ".globl tramp_start, tramp_end\n"
        "tramp_start:\n"
        ".code16\n"
        "  cli\n"
        "  mov %cs, %ax\n"
        "  mov %ax, %ds\n"
        "  lgdtl gdtr - tramp_start\n"
        "  mov %cr0, %eax\n"
        "  or $1, %eax\n"
        "  mov %eax, %cr0\n"
        "  ljmpl $0x08, $0x10000 + pm32 - tramp_start\n"
        ".code32\n"
        "pm32:\n"
        "  mov $0x10, %ax\n"
        "  mov %ax, %ds\n"
        "  mov %ax, %es\n"
        "  mov %ax, %ss\n"
        "  mov $1, %eax\n"
        "  cpuid\n"
        "  shr $24, %ebx\n"
        "  mov %ebx, %esp\n"
        "  inc %esp\n"
        "  shl $12, %esp\n"
        "  add $0x20000, %esp\n"
        "  mov %ebx, %eax\n"
        "  mov $ap_main, %ecx\n"
        "  call *%ecx\n"
        "1: cli\n"
        "  hlt\n"
        "  jmp 1b\n"
        ".balign 8\n"
        "gdt:\n"
        "  .quad 0\n"
        "  .quad 0x00cf9a000000ffff\n" /* 0x08: flat 32-bit code */
        "  .quad 0x00cf92000000ffff\n" /* 0x10: flat data */
        "gdtr:\n"
        "  .word 23\n"
        "  .long 0x10000 + gdt - tramp_start\n"
        "tramp_end:\n"
        ".popsection\n");
extern const uint8_t tramp_start[], tramp_end[];

static void lapic_write(uint32_t reg, uint32_t v) { mmio_write32(LAPIC + reg, v); }
static uint64_t rdtsc(void) {
  uint32_t lo, hi;
  __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
  return ((uint64_t)hi << 32) | lo;
}
/* The MP specification's delays: 10 ms after INIT, 200 us after each STARTUP. They matter under kvm_amd: a
 * STARTUP that arrives while the AP has not yet taken the INIT is lost (docs/svm.md). By TSC time, not by spins
 * (2^25 ticks is >= 10 ms on any TSC below 3.3 GHz; 2^21 >= 200 us likewise). */
static void wait_tsc(uint64_t ticks) {
  for (uint64_t t0 = rdtsc(); rdtsc() - t0 < ticks;) __asm__ volatile("pause");
}

int main(const struct vmtool_boot_info *bi) {
  uint32_t cpus = vmtool_boot_info_valid(bi) ? bi->cpu_count : 1;
  if (vmtool_boot_info_valid(bi)) {
    const char *c = vmtool_cmdline(bi);
    fault_ap = vmtool_cmdline_has(c, "ap-fault");
    stay = vmtool_cmdline_has(c, "stay");
    uart_test = vmtool_cmdline_has(c, "uart");
    count_mode = vmtool_cmdline_has(c, "count");
  }
  volatile uint8_t *dst = (volatile uint8_t *)TRAMPOLINE;
  for (const uint8_t *p = tramp_start; p < tramp_end; p++) *dst++ = *p;
  printf("BSP: %u CPUs in the machine description, waking the APs\n", cpus);
  lapic_write(LAPIC_SVR, 0x1FF);                        /* software-enable the local APIC */
  lapic_write(LAPIC_ICR_HI, 0);
  lapic_write(LAPIC_ICR_LO, 0x000C4500);                /* INIT, assert, all excluding self */
  wait_tsc(1ull << 25);
  for (int i = 0; i < 2; i++) {
    lapic_write(LAPIC_ICR_LO, 0x000C4600 | (TRAMPOLINE >> 12)); /* STARTUP, vector 0x10 */
    wait_tsc(1ull << 21);
  }
  /* Wait by time, not by a count of spins: how long an AP takes to start depends on the KVM backend (under
   * kvm_amd in QEMU's software CPU three APs take well over 2^33 ticks; docs/svm.md). ~2^36 TSC ticks: tens of
   * seconds at most, and only when an AP never comes. */
  for (uint64_t t0 = rdtsc(); ap_count < cpus - 1 && rdtsc() - t0 < (1ull << 36);) __asm__ volatile("pause");
  lock();
  printf("BSP: %u of %u APs up\n", ap_count, cpus - 1);
  unlock();
  while (count_mode) counts[0]++;
  while (stay) __asm__ volatile("sti; hlt"); /* nothing ever interrupts: the halt stays wakeable, the VM up */
  return ap_count == cpus - 1 ? 0 : 3;
}
