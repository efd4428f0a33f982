/* A hostile virtio driver: sets up virtio-rng at 0xD0000000 properly, then attacks it in the way a word of the
 * command line names (default "outside"):
 *   outside   a descriptor pointing outside guest RAM (0xF0000000)
 *   overflow  a descriptor whose address + length wraps past 2^64
 *   loop      a chain whose NEXT links loop (0 -> 1 -> 0)
 *   next      a chain linking to descriptor 100, past the queue size
 *   head      an available ring entry naming descriptor 200, past the queue size
 *   avail     avail.idx moved 1000 entries ahead
 *   early     a notify before DRIVER_OK (the device must ignore it: no reset, nothing used)
 * A correct device touches no memory; for every attack but "early" it sets DEVICE_NEEDS_RESET and raises the
 * configuration-change interrupt. Prints what it sees (and whether the canary next to its buffers is intact);
 * exit status 0 when the device behaved, 9 when not. Then it resets the device and checks that a good request
 * is served again (the device recovers). */
#include <vmtool/boot_info.h>
#include <vmtool/cmdline.h>
#include <vmtool/io.h>
#include <vmtool/printf.h>

#define BASE 0xD0000000u
#define QSIZE 8

struct desc { uint64_t addr; uint32_t len; uint16_t flags, next; };
struct avail { uint16_t flags, idx, ring[QSIZE], used_event; };
struct used { uint16_t flags; volatile uint16_t idx; struct { uint32_t id, len; } ring[QSIZE]; uint16_t avail_event; };

static struct desc descs[QSIZE] __attribute__((aligned(16)));
static struct avail av __attribute__((aligned(2)));
static struct used us __attribute__((aligned(4)));
static uint8_t canary[256];
static uint8_t buf[64];

static uint32_t rd(uint32_t off) { return mmio_read32(BASE + off); }
static void wr(uint32_t off, uint32_t v) { mmio_write32(BASE + off, v); }

/* Reset, negotiate VERSION_1, set up queue 0; DRIVER_OK only when `ok`. */
static void setup(int ok) {
  wr(0x070, 0);
  for (int i = 0; i < QSIZE; i++) descs[i] = (struct desc){0, 0, 0, 0};
  av.idx = 0;
  av.flags = 0;
  us.idx = 0;
  wr(0x070, 1 | 2);
  wr(0x024, 1);
  wr(0x020, 1);
  wr(0x070, 1 | 2 | 8);
  wr(0x030, 0);
  wr(0x038, QSIZE);
  wr(0x080, (uint32_t)(uintptr_t)descs);
  wr(0x090, (uint32_t)(uintptr_t)&av);
  wr(0x0a0, (uint32_t)(uintptr_t)&us);
  wr(0x044, 1);
  if (ok) wr(0x070, 1 | 2 | 8 | 4);
}

static void offer(uint16_t head, uint16_t idx) {
  av.ring[0] = head;
  __asm__ volatile("" ::: "memory");
  av.idx = idx;
  wr(0x050, 0);
}

int main(const struct vmtool_boot_info *bi) {
  if (rd(0x008) != 4) return 2;
  const char *cmd = vmtool_boot_info_valid(bi) ? vmtool_cmdline(bi) : "";
  for (int i = 0; i < 256; i++) canary[i] = (uint8_t)i;
  int early = vmtool_cmdline_has(cmd, "early");
  setup(!early);
  const char *name = "outside";
  if (vmtool_cmdline_has(cmd, "overflow")) {
    name = "overflow";
    descs[0] = (struct desc){0xFFFFFFFFFFFFF000ull, 0x2000, 2, 0};
    offer(0, 1);
  } else if (vmtool_cmdline_has(cmd, "loop")) {
    name = "loop";
    descs[0] = (struct desc){(uint32_t)(uintptr_t)buf, 16, 1 | 2, 1};
    descs[1] = (struct desc){(uint32_t)(uintptr_t)buf + 16, 16, 1 | 2, 0};
    offer(0, 1);
  } else if (vmtool_cmdline_has(cmd, "next")) {
    name = "next";
    descs[0] = (struct desc){(uint32_t)(uintptr_t)buf, 16, 1 | 2, 100};
    offer(0, 1);
  } else if (vmtool_cmdline_has(cmd, "head")) {
    name = "head";
    descs[0] = (struct desc){(uint32_t)(uintptr_t)buf, 16, 2, 0};
    offer(200, 1);
  } else if (vmtool_cmdline_has(cmd, "avail")) {
    name = "avail";
    descs[0] = (struct desc){(uint32_t)(uintptr_t)buf, 16, 2, 0};
    offer(0, 1000);
  } else if (early) {
    name = "early";
    descs[0] = (struct desc){(uint32_t)(uintptr_t)buf, 16, 2, 0};
    offer(0, 1);
  } else {
    descs[0] = (struct desc){0xF0000000u, 4096, 2, 0};
    offer(0, 1);
  }
  uint32_t st = rd(0x070), isr = rd(0x060);
  int intact = 1;
  for (int i = 0; i < 256; i++) intact &= canary[i] == (uint8_t)i;
  printf("virtio-attack %s: status 0x%x interrupt 0x%x used %u canary %d\n", name, st, isr, us.idx, intact);
  int behaved = early ? !(st & 64) && us.idx == 0 && intact : (st & 64) && (isr & 2) && us.idx == 0 && intact;
  /* The device recovers after a reset: one good request of 16 bytes. */
  setup(1);
  descs[0] = (struct desc){(uint32_t)(uintptr_t)buf, 16, 2, 0};
  offer(0, 1);
  for (uint32_t spin = 0; us.idx != 1 && spin < 1000000; spin++) __asm__ volatile("pause");
  printf("after reset: used %u len %u\n", us.idx, us.ring[0].len);
  return behaved && us.idx == 1 && us.ring[0].len == 16 ? 0 : 9;
}
