/* A host program, not a guest: the smallest proof that this machine's KVM cannot run IRET in 32-bit
 * protected mode. PVM (the kvm_pvm backend) emulates guest ring-0 code with KVM's instruction emulator,
 * whose IRET handles real mode only; on VT-x/AMD-V hardware both variants below halt normally.
 *   gcc -O2 -o iret-protected guest/repro/iret-protected.c && ./iret-protected
 * Variant "iret":    pushf; push cs; push next; iret; next: hlt
 * Variant "popf/ret": pushf; push next; xchg ...: the same return done with popf and ret (vmtool's SDK way). */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define MEM (2u << 20)
#define GDT 0x1000
#define CODE 0x2000

static const char *run(int kvm, const uint8_t *code, size_t len) {
  static char msg[64];
  int vm = ioctl(kvm, KVM_CREATE_VM, 0);
  uint8_t *ram = mmap(NULL, MEM, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  struct kvm_userspace_memory_region r = {.slot = 0, .guest_phys_addr = 0, .memory_size = MEM,
                                          .userspace_addr = (uintptr_t)ram};
  ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r);
  ioctl(vm, KVM_SET_TSS_ADDR, 0xfffbd000);
  uint64_t gdt[3] = {0, 0x00CF9A000000FFFFull, 0x00CF92000000FFFFull}; /* null, code32, data32 */
  memcpy(ram + GDT, gdt, sizeof gdt);
  memcpy(ram + CODE, code, len);
  int cpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  struct kvm_run *kr = mmap(NULL, ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0), PROT_READ | PROT_WRITE, MAP_SHARED, cpu, 0);
  struct kvm_sregs s;
  ioctl(cpu, KVM_GET_SREGS, &s);
  struct kvm_segment cs = {.base = 0, .limit = 0xffffffff, .selector = 8, .type = 0xb, .present = 1, .db = 1, .s = 1, .g = 1};
  struct kvm_segment ds = cs;
  ds.selector = 0x10;
  ds.type = 3;
  s.cs = cs;
  s.ds = s.es = s.fs = s.gs = s.ss = ds;
  s.gdt.base = GDT;
  s.gdt.limit = sizeof gdt - 1;
  s.cr0 |= 1;
  ioctl(cpu, KVM_SET_SREGS, &s);
  struct kvm_regs g = {.rip = CODE, .rsp = 0x8000, .rflags = 2};
  ioctl(cpu, KVM_SET_REGS, &g);
  ioctl(cpu, KVM_RUN, 0);
  if (kr->exit_reason == KVM_EXIT_HLT) snprintf(msg, sizeof msg, "halted (KVM_EXIT_HLT): ok");
  else if (kr->exit_reason == KVM_EXIT_INTERNAL_ERROR)
    snprintf(msg, sizeof msg, "KVM_EXIT_INTERNAL_ERROR suberror %u", kr->internal.suberror);
  else snprintf(msg, sizeof msg, "exit reason %u", kr->exit_reason);
  close(cpu);
  close(vm);
  munmap(ram, MEM);
  return msg;
}

int main(void) {
  int kvm = open("/dev/kvm", O_RDWR);
  if (kvm < 0) {
    perror("/dev/kvm");
    return 1;
  }
  /* next = CODE + 8 in both variants */
  const uint8_t with_iret[] = {0x9c, 0x0e, 0x68, 0x08, 0x20, 0x00, 0x00, 0xcf, 0xf4};
  /* pushf; push $next; xchg (%esp),%eax; xchg 4(%esp),%eax; xchg (%esp),%eax; popf; ret -> [EFLAGS, EIP] */
  const uint8_t with_popf_ret[] = {0x9c, 0x68, 0x12, 0x20, 0x00, 0x00, 0x87, 0x04, 0x24, 0x87, 0x44,
                                   0x24, 0x04, 0x87, 0x04, 0x24, 0x9d, 0xc3, 0xf4};
  printf("iret:     %s\n", run(kvm, with_iret, sizeof with_iret));
  printf("popf/ret: %s\n", run(kvm, with_popf_ret, sizeof with_popf_ret));
  return 0;
}
