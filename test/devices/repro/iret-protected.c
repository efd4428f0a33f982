/* Reproducer: does this host's KVM run a 32-bit protected-mode IRET?
 *
 * A bare KVM VM (no vmtool) starts in flat 32-bit protected mode with a real GDT, and runs either
 *   iret:  pushf; push cs; push $next; iret; next: out %al, $0xF4
 *   popf:  pushf; popf; push $next; ret;         next: out %al, $0xF4   (the same work, without IRET)
 * and prints the first exit: "io 0xf4" when the code reached the OUT, else the exit reason (and the internal
 * error's suberror). On VT-x/AMD-V hardware both print "io 0xf4". On the kvm_pvm backend, which runs guest
 * ring-0 code in the host kernel's x86 instruction emulator, "iret" prints "internal-error 1" (emulation
 * failure): that emulator implements IRET in real mode only.
 *
 * Usage: iret-protected iret|popf */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#define MEM (1 << 20)
#define GDT 0x500
#define CODE 0x1000
#define STACK 0x8000

static void seg(struct kvm_segment *s, uint16_t sel, uint8_t type) {
  memset(s, 0, sizeof *s);
  s->base = 0;
  s->limit = 0xFFFFFFFF;
  s->selector = sel;
  s->type = type;
  s->present = 1;
  s->dpl = 0;
  s->db = 1;
  s->s = 1;
  s->g = 1;
}

int main(int argc, char **argv) {
  int use_iret = argc > 1 && strcmp(argv[1], "iret") == 0;
  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) return perror("/dev/kvm"), 2;
  int vm = ioctl(kvm, KVM_CREATE_VM, 0);
  if (vm < 0 || ioctl(vm, KVM_SET_TSS_ADDR, 0xFFFBD000UL) < 0) return perror("vm"), 2;
  uint8_t *mem = mmap(NULL, MEM, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  struct kvm_userspace_memory_region region = {0, 0, 0, MEM, (uint64_t)(uintptr_t)mem};
  if (mem == MAP_FAILED || ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) return perror("mem"), 2;

  /* GDT: null, 0x08 flat 32-bit code, 0x10 flat data (IRET reads CS's descriptor from here). */
  uint64_t gdt[3] = {0, 0x00CF9A000000FFFFULL, 0x00CF92000000FFFFULL};
  memcpy(mem + GDT, gdt, sizeof gdt);
  const uint8_t with_iret[] = {0x9C, 0x0E, 0x68, 0x08, 0x10, 0x00, 0x00, 0xCF, 0xE6, 0xF4, 0xF4};
  const uint8_t with_popf[] = {0x9C, 0x9D, 0x68, 0x08, 0x10, 0x00, 0x00, 0xC3, 0xE6, 0xF4, 0xF4};
  /* In both, next (the OUT) is at CODE + 8. */
  memcpy(mem + CODE, use_iret ? with_iret : with_popf, sizeof with_iret);

  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  struct kvm_run *run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
  if (vcpu < 0 || run == MAP_FAILED) return perror("vcpu"), 2;
  struct kvm_sregs sregs;
  ioctl(vcpu, KVM_GET_SREGS, &sregs);
  seg(&sregs.cs, 0x08, 11);
  seg(&sregs.ds, 0x10, 3);
  sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
  sregs.gdt.base = GDT;
  sregs.gdt.limit = sizeof gdt - 1;
  sregs.cr0 |= 1; /* PE */
  ioctl(vcpu, KVM_SET_SREGS, &sregs);
  struct kvm_regs regs = {0};
  regs.rip = CODE;
  regs.rsp = STACK;
  regs.rflags = 2;
  ioctl(vcpu, KVM_SET_REGS, &regs);

  if (ioctl(vcpu, KVM_RUN, 0) < 0) return perror("KVM_RUN"), 2;
  if (run->exit_reason == KVM_EXIT_IO)
    printf("io 0x%x\n", run->io.port);
  else if (run->exit_reason == KVM_EXIT_INTERNAL_ERROR)
    printf("internal-error %u\n", run->internal.suberror);
  else
    printf("exit %u\n", run->exit_reason);
  return 0;
}
