/* The C reference for scripts/svm-bench.sh: the same long-mode guest as test/svm/tiny-vm.ts (an OUT loop of N
 * iterations, then HLT) on /dev/kvm with a bare KVM_RUN loop. Prints "c <exits> <ns per exit>".
 * Built static on the host (gcc -O2 -static) so that it also runs inside the kvm_amd VM, where there is no
 * C library but Node's. */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>

#define RAM (2u << 20)
#define ENTRY 0x1000

static void die(const char *what) {
  perror(what);
  exit(1);
}

int main(int argc, char **argv) {
  uint32_t n = argc > 1 ? (uint32_t)strtoul(argv[1], 0, 0) : 20000;
  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) die("/dev/kvm");
  int vm = ioctl(kvm, KVM_CREATE_VM, 0);
  if (vm < 0) die("KVM_CREATE_VM");
  ioctl(vm, KVM_SET_TSS_ADDR, 0xfffbd000ul);
  uint8_t *ram = mmap(0, RAM, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (ram == MAP_FAILED) die("mmap");
  struct kvm_userspace_memory_region region = {.memory_size = RAM, .userspace_addr = (uintptr_t)ram};
  if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) die("KVM_SET_USER_MEMORY_REGION");
  /* mov ecx, n; mov dx, 0x80; mov al, 1; L: out dx, al; dec ecx; jnz L; hlt */
  uint8_t code[] = {0xb9, 0, 0, 0, 0, 0x66, 0xba, 0x80, 0, 0xb0, 1, 0xee, 0xff, 0xc9, 0x75, 0xfb, 0xf4};
  memcpy(code + 1, &n, 4);
  memcpy(ram + ENTRY, code, sizeof code);
  uint64_t *pml4 = (uint64_t *)(ram + 0x9000), *pdpt = (uint64_t *)(ram + 0xa000), *pd = (uint64_t *)(ram + 0xb000);
  pml4[0] = 0xa000 | 3;
  pdpt[0] = 0xb000 | 3;
  for (uint64_t i = 0; i < 512; i++) pd[i] = (i << 21) | 0x83;
  uint64_t *gdt = (uint64_t *)(ram + 0x8000);
  gdt[1] = 0x00af9b000000ffffull;
  gdt[2] = 0x00cf93000000ffffull;
  int cpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  if (cpu < 0) die("KVM_CREATE_VCPU");
  int size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  struct kvm_run *run = mmap(0, size, PROT_READ | PROT_WRITE, MAP_SHARED, cpu, 0);
  if (run == MAP_FAILED) die("mmap kvm_run");
  struct kvm_sregs s;
  if (ioctl(cpu, KVM_GET_SREGS, &s) < 0) die("KVM_GET_SREGS");
  struct kvm_segment code_seg = {.limit = 0xffffffff, .selector = 8, .type = 11, .present = 1, .s = 1, .l = 1, .g = 1};
  struct kvm_segment data_seg = {.limit = 0xffffffff, .selector = 16, .type = 3, .present = 1, .s = 1, .db = 1, .g = 1};
  s.cs = code_seg;
  s.ds = s.es = s.ss = s.fs = s.gs = data_seg;
  s.cr0 = 0x80000011;
  s.cr3 = 0x9000;
  s.cr4 = 0x20;
  s.efer = 0x500;
  s.gdt.base = 0x8000;
  s.gdt.limit = 0x17;
  if (ioctl(cpu, KVM_SET_SREGS, &s) < 0) die("KVM_SET_SREGS");
  struct kvm_regs r = {.rip = ENTRY, .rflags = 2, .rsp = 0x7000};
  if (ioctl(cpu, KVM_SET_REGS, &r) < 0) die("KVM_SET_REGS");
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  uint32_t exits = 0;
  for (;;) {
    if (ioctl(cpu, KVM_RUN, 0) < 0) die("KVM_RUN");
    if (run->exit_reason != KVM_EXIT_IO) break;
    exits++;
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  if (run->exit_reason != KVM_EXIT_HLT || exits != n) {
    fprintf(stderr, "unexpected end: exit reason %u after %u exits\n", run->exit_reason, exits);
    return 1;
  }
  double ns = (t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec);
  printf("c %u %.0f\n", exits, ns / (exits + 1));
  return 0;
}
