/* A minimal VMM in C on /dev/kvm: the reference that bench/run-all.mjs compares vmtool with.
 *
 * It builds the same machine as `vmtool run` for a flat binary (one RAM slot at 0, the same GDT, TSS, page
 * tables and stack addresses, see src/vm/machine-layout.ts and src/vm/boot-modes.ts) and runs a KVM_RUN loop
 * on one thread that handles the debug console (0xE9, output buffered per line like vmtool), the exit port
 * (0xF4: exit status (V << 1) | 1) and HLT. Without --irqchip, HLT comes back to user space and ends the run;
 * with it (the same in-kernel PIC/IOAPIC/local APIC as vmtool; --pit adds the PIT like `vmtool run --pit`), a
 * halt is not seen: use a guest that ends through the exit port, or one that exits enough for the measurement.
 *
 * usage: ref-vmm [--irqchip [--pit]] [--mem BYTES] real|protected|long LOAD_ADDR IMAGE
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define GDT 0x94000
#define BOOT_TSS (GDT + 0x800)
#define PAGE_TABLES 0x98000
#define STACK_TOP 0x90000
#define BOOT_INFO 0x90000
#define TSS_ADDR 0xfffbd000
#define IDENTITY_MAP 0xfffbc000

static void die(const char *what) {
  fprintf(stderr, "ref-vmm: %s: %s\n", what, strerror(errno));
  exit(2);
}

static char outbuf[65536];
static size_t outlen;
static void flush_out(void) {
  size_t off = 0;
  while (off < outlen) {
    ssize_t n = write(1, outbuf + off, outlen - off);
    if (n <= 0) break;
    off += (size_t)n;
  }
  outlen = 0;
}

static struct kvm_segment flat(uint16_t sel, uint8_t type, int code64) {
  struct kvm_segment s = {.base = 0, .limit = 0xffffffff, .selector = sel, .type = type, .present = 1,
                          .dpl = 0, .db = code64 ? 0 : 1, .s = 1, .l = code64, .g = 1};
  return s;
}

int main(int argc, char **argv) {
  int irqchip = 0, pit = 0;
  size_t mem_size = 64 << 20;
  int a = 1;
  for (; a < argc && argv[a][0] == '-'; a++) {
    if (!strcmp(argv[a], "--irqchip")) irqchip = 1;
    else if (!strcmp(argv[a], "--pit")) pit = 1;
    else if (!strcmp(argv[a], "--mem") && a + 1 < argc) mem_size = strtoull(argv[++a], 0, 0);
    else break;
  }
  if (argc - a != 3) {
    fprintf(stderr, "usage: ref-vmm [--irqchip [--pit]] [--mem BYTES] real|protected|long LOAD_ADDR IMAGE\n");
    return 2;
  }
  const char *mode = argv[a];
  uint64_t load = strtoull(argv[a + 1], 0, 0);

  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) die("/dev/kvm");
  int vm = ioctl(kvm, KVM_CREATE_VM, 0);
  if (vm < 0) die("KVM_CREATE_VM");
  if (ioctl(vm, KVM_SET_TSS_ADDR, TSS_ADDR) < 0) die("KVM_SET_TSS_ADDR");
  uint64_t idmap = IDENTITY_MAP;
  if (ioctl(vm, KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0) die("KVM_SET_IDENTITY_MAP_ADDR");
  uint8_t *mem = mmap(0, mem_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) die("mmap");
  struct kvm_userspace_memory_region region = {
      .slot = 0, .guest_phys_addr = 0, .memory_size = mem_size, .userspace_addr = (uint64_t)mem};
  if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) die("KVM_SET_USER_MEMORY_REGION");

  /* After the RAM slot, as vmtool does: a memslot change once an irqchip exists waits for SRCU. */
  if (irqchip && ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0) die("KVM_CREATE_IRQCHIP");
  if (irqchip && pit) {
    struct kvm_pit_config config = {0};
    if (ioctl(vm, KVM_CREATE_PIT2, &config) < 0) die("KVM_CREATE_PIT2");
  }
  FILE *f = fopen(argv[a + 2], "rb");
  if (!f) die(argv[a + 2]);
  size_t n = fread(mem + load, 1, mem_size - load, f);
  fclose(f);
  if (n == 0) die("empty image");

  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  if (vcpu < 0) die("KVM_CREATE_VCPU");
  struct {
    struct kvm_cpuid2 c;
    struct kvm_cpuid_entry2 e[256];
  } cpuid = {.c.nent = 256};
  if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, &cpuid) < 0) die("KVM_GET_SUPPORTED_CPUID");
  if (ioctl(vcpu, KVM_SET_CPUID2, &cpuid) < 0) die("KVM_SET_CPUID2");
  int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  struct kvm_run *run = mmap(0, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
  if (run == MAP_FAILED) die("mmap kvm_run");

  struct kvm_sregs sregs;
  struct kvm_regs regs = {.rflags = 2, .rip = load, .rsp = STACK_TOP, .rsi = BOOT_INFO};
  if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0) die("KVM_GET_SREGS");
  if (!strcmp(mode, "real")) {
    uint16_t cs = (load & 0xf0000) >> 4;
    regs.rip = load & 0xffff;
    regs.rsp = 0xfff0;
    sregs.cs.selector = cs;
    sregs.cs.base = (uint64_t)cs << 4;
    sregs.ss.selector = 0x8000;
    sregs.ss.base = 0x80000;
  } else {
    uint64_t *gdt = (uint64_t *)(mem + GDT);
    gdt[0] = 0;
    gdt[1] = 0x00cf9b000000ffffULL;
    gdt[2] = 0x00cf93000000ffffULL;
    gdt[3] = 0x00af9b000000ffffULL;
    gdt[4] = 0x67 | ((uint64_t)(BOOT_TSS & 0xffffff) << 16) | (0x8bULL << 40) | ((uint64_t)(BOOT_TSS >> 24) << 56);
    gdt[5] = 0;
    memset(mem + BOOT_TSS, 0, 0x68);
    int long_mode = !strcmp(mode, "long");
    sregs.cs = flat(long_mode ? 0x18 : 0x08, 0xb, long_mode);
    sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = flat(0x10, 0x3, 0);
    struct kvm_segment tr = {.base = BOOT_TSS, .limit = 0x67, .selector = 0x20, .type = 0xb, .present = 1};
    sregs.tr = tr;
    sregs.gdt.base = GDT;
    sregs.gdt.limit = 6 * 8 - 1;
    sregs.cr0 = 0x33; /* PE MP ET NE */
    sregs.cr4 = 0x600; /* OSFXSR OSXMMEXCPT */
    sregs.efer = 0;
    if (long_mode) {
      uint64_t *pml4 = (uint64_t *)(mem + PAGE_TABLES), *pdpt = pml4 + 512, *pd = pml4 + 1024;
      memset(pml4, 0, 6 * 4096);
      pml4[0] = (PAGE_TABLES + 0x1000) | 3;
      for (int i = 0; i < 4; i++) pdpt[i] = (PAGE_TABLES + 0x2000 + i * 0x1000) | 3;
      for (uint64_t j = 0; j < 2048; j++) pd[j] = (j << 21) | 0x83;
      sregs.cr3 = PAGE_TABLES;
      sregs.cr0 |= 0x80010000; /* PG WP */
      sregs.cr4 |= 0x20;       /* PAE */
      sregs.efer = 0x500;      /* LME LMA */
    }
  }
  if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0) die("KVM_SET_SREGS");
  if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0) die("KVM_SET_REGS");

  for (;;) {
    if (ioctl(vcpu, KVM_RUN, 0) < 0) {
      if (errno == EINTR) continue;
      die("KVM_RUN");
    }
    switch (run->exit_reason) {
    case KVM_EXIT_IO: {
      uint8_t *data = (uint8_t *)run + run->io.data_offset;
      for (uint32_t i = 0; i < run->io.count; i++, data += run->io.size) {
        if (run->io.direction == KVM_EXIT_IO_OUT && run->io.port == 0xe9) {
          if (outlen == sizeof outbuf) flush_out();
          outbuf[outlen++] = (char)data[0];
          if (data[0] == '\n') flush_out();
        } else if (run->io.direction == KVM_EXIT_IO_OUT && run->io.port == 0xf4) {
          flush_out();
          return ((data[0] << 1) | 1) & 0xff;
        } else if (run->io.direction == KVM_EXIT_IO_IN) {
          memset(data, 0xff, run->io.size);
        }
      }
      break;
    }
    case KVM_EXIT_MMIO:
      if (!run->mmio.is_write) memset(run->mmio.data, 0xff, run->mmio.len);
      break;
    case KVM_EXIT_HLT:
      flush_out();
      return 0;
    default:
      flush_out();
      fprintf(stderr, "ref-vmm: exit reason %u\n", run->exit_reason);
      return 4;
    }
  }
}
