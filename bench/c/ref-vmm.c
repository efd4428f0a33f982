/* A minimal VMM in C on /dev/kvm: the reference that bench/run-all.mjs compares vmtool with.
 *
 * It builds the same machine as `vmtool run` for a flat binary (one RAM slot at 0, the same GDT, TSS, page
 * tables and stack addresses, see src/vm/machine-layout.ts and src/vm/boot-modes.ts) and runs a KVM_RUN loop
 * on one thread that handles the debug console (0xE9, output buffered per line like vmtool), the exit port
 * (0xF4: exit status (V << 1) | 1) and HLT. Without --irqchip, HLT comes back to user space and ends the run;
 * with it (the same in-kernel PIC/IOAPIC/local APIC as vmtool; --pit adds the PIT like `vmtool run --pit`), a
 * halt is not seen: use a guest that ends through the exit port, or one that exits enough for the measurement.
 *
 * With --msr-events MSR it is also the floor under an introspection event (bench/introspect.mjs): the guest's
 * writes of that MSR exit to user space (KVM_CAP_X86_USER_SPACE_MSR and an MSR filter, as vmtool's core sets
 * them), and each is an event as a KVMI VMM makes one, with the least work any VMM does for it: the registers
 * from KVM_CAP_SYNC_REGS, the nine MSRs of a KVMI event with one KVM_GET_MSRS, a 560-byte message over a UNIX
 * stream socket to a tool (a child process that answers each with a 24-byte reply, blocking read and write),
 * the reply read, the write done with KVM_SET_MSRS. --report prints to standard error the events (or with no
 * --msr-events, the 0xE9 writes) and the mean nanoseconds from one to the next, first to last. --cpu N keeps
 * the VMM and its tool on that one CPU.
 *
 * usage: ref-vmm [--irqchip [--pit]] [--mem BYTES] [--msr-events MSR] [--report] [--cpu N]
 *        real|protected|long LOAD_ADDR IMAGE
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
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

static double now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

/* What --report counts: the first and last time, and how many. */
static long counted;
static double first_ns, last_ns;
static void count(void) {
  last_ns = now_ns();
  if (counted++ == 0) first_ns = last_ns;
}
static void report(int on) {
  if (on)
    fprintf(stderr, "%ld %.1f\n", counted, counted > 1 ? (last_ns - first_ns) / (double)(counted - 1) : 0.0);
}

static int full(int fd, void *buf, size_t n, int writing) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = writing ? write(fd, (char *)buf + done, n - done) : read(fd, (char *)buf + done, n - done);
    if (r <= 0) return -1;
    done += (size_t)r;
  }
  return 0;
}

/* The sizes of a KVMI MSR event (header, common part with kvm_regs, kvm_sregs and the nine MSRs, the MSR
 * event's own part) and of its reply (header, event reply, the new value). */
#define EVENT_BYTES 560
#define REPLY_BYTES 24
static const uint32_t EVENT_MSRS[9] = {0x174, 0x175, 0x176, 0xc0000080, 0xc0000081,
                                       0xc0000082, 0xc0000083, 0x277, 0xc0000102};

/* The tool: answers each event with a reply whose new value is the one the guest wrote. */
static void tool(int fd) {
  uint8_t ev[EVENT_BYTES], reply[REPLY_BYTES] = {0};
  while (full(fd, ev, sizeof ev, 0) == 0) {
    memcpy(reply + 16, ev + EVENT_BYTES - 8, 8);
    if (full(fd, reply, sizeof reply, 1) < 0) break;
  }
  _exit(0);
}

static struct kvm_segment flat(uint16_t sel, uint8_t type, int code64) {
  struct kvm_segment s = {.base = 0, .limit = 0xffffffff, .selector = sel, .type = type, .present = 1,
                          .dpl = 0, .db = code64 ? 0 : 1, .s = 1, .l = code64, .g = 1};
  return s;
}

int main(int argc, char **argv) {
  int irqchip = 0, pit = 0, reporting = 0;
  uint32_t event_msr = 0;
  size_t mem_size = 64 << 20;
  int a = 1;
  for (; a < argc && argv[a][0] == '-'; a++) {
    if (!strcmp(argv[a], "--irqchip")) irqchip = 1;
    else if (!strcmp(argv[a], "--pit")) pit = 1;
    else if (!strcmp(argv[a], "--mem") && a + 1 < argc) mem_size = strtoull(argv[++a], 0, 0);
    else if (!strcmp(argv[a], "--msr-events") && a + 1 < argc) event_msr = (uint32_t)strtoul(argv[++a], 0, 0);
    else if (!strcmp(argv[a], "--report")) reporting = 1;
    else if (!strcmp(argv[a], "--cpu") && a + 1 < argc) {
      cpu_set_t one;
      CPU_ZERO(&one);
      CPU_SET(atoi(argv[++a]), &one);
      if (sched_setaffinity(0, sizeof one, &one) < 0) die("sched_setaffinity");
    }
    else break;
  }
  if (argc - a != 3) {
    fprintf(stderr, "usage: ref-vmm [--irqchip [--pit]] [--mem BYTES] [--msr-events MSR] [--report] [--cpu N] "
                    "real|protected|long LOAD_ADDR IMAGE\n");
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

  int tool_fd = -1;
  if (event_msr) {
    struct kvm_enable_cap cap = {.cap = KVM_CAP_X86_USER_SPACE_MSR, .args = {KVM_MSR_EXIT_REASON_FILTER}};
    if (ioctl(vm, KVM_ENABLE_CAP, &cap) < 0) die("KVM_CAP_X86_USER_SPACE_MSR");
    static uint8_t deny_write = 0; /* bit clear: the guest's write exits to user space */
    struct kvm_msr_filter filter = {.flags = KVM_MSR_FILTER_DEFAULT_ALLOW};
    filter.ranges[0] = (struct kvm_msr_filter_range){
        .flags = KVM_MSR_FILTER_WRITE, .nmsrs = 1, .base = event_msr, .bitmap = &deny_write};
    if (ioctl(vm, KVM_X86_SET_MSR_FILTER, &filter) < 0) die("KVM_X86_SET_MSR_FILTER");
    run->kvm_valid_regs = KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) die("socketpair");
    pid_t child = fork();
    if (child < 0) die("fork");
    if (child == 0) {
      close(sv[0]);
      tool(sv[1]);
    }
    close(sv[1]);
    tool_fd = sv[0];
  }

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
          if (reporting && !event_msr) count(); /* a clock read per exit only when asked */
          if (outlen == sizeof outbuf) flush_out();
          outbuf[outlen++] = (char)data[0];
          if (data[0] == '\n') flush_out();
        } else if (run->io.direction == KVM_EXIT_IO_OUT && run->io.port == 0xf4) {
          flush_out();
          report(reporting);
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
    case KVM_EXIT_X86_WRMSR: {
      if (run->msr.index != event_msr) die("an MSR exit for another MSR");
      count();
      struct {
        struct kvm_msrs h;
        struct kvm_msr_entry e[9];
      } msrs = {.h.nmsrs = 9};
      for (int i = 0; i < 9; i++) msrs.e[i].index = EVENT_MSRS[i];
      if (ioctl(vcpu, KVM_GET_MSRS, &msrs) != 9) die("KVM_GET_MSRS");
      uint8_t ev[EVENT_BYTES] = {0}, reply[REPLY_BYTES];
      memcpy(ev + 8, &run->s.regs.regs, sizeof run->s.regs.regs);
      memcpy(ev + 8 + sizeof run->s.regs.regs, &run->s.regs.sregs, sizeof run->s.regs.sregs);
      for (int i = 0; i < 9; i++) memcpy(ev + EVENT_BYTES - 8 - (9 - i) * 8, &msrs.e[i].data, 8);
      memcpy(ev + EVENT_BYTES - 8, &run->msr.data, 8);
      if (full(tool_fd, ev, sizeof ev, 1) < 0 || full(tool_fd, reply, sizeof reply, 0) < 0) die("the tool");
      struct {
        struct kvm_msrs h;
        struct kvm_msr_entry e;
      } set = {.h.nmsrs = 1, .e.index = event_msr};
      memcpy(&set.e.data, reply + 16, 8);
      if (ioctl(vcpu, KVM_SET_MSRS, &set) != 1) die("KVM_SET_MSRS");
      run->msr.error = 0;
      break;
    }
    case KVM_EXIT_HLT:
      flush_out();
      report(reporting);
      return 0;
    default:
      flush_out();
      fprintf(stderr, "ref-vmm: exit reason %u\n", run->exit_reason);
      return 4;
    }
  }
}
