/* A hostile virtio driver: sets up virtio-rng at 0xD0000000 properly, then offers a descriptor that points
 * outside guest RAM (at 0xF0000000). A correct device must not touch memory, must set DEVICE_NEEDS_RESET and
 * raise the configuration-change interrupt. Prints what it sees; exit status 0 when the device behaved. */
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

static uint32_t rd(uint32_t off) { return mmio_read32(BASE + off); }
static void wr(uint32_t off, uint32_t v) { mmio_write32(BASE + off, v); }

int main(void) {
  if (rd(0x008) != 4) return 2;
  for (int i = 0; i < 256; i++) canary[i] = (uint8_t)i;
  wr(0x070, 0);
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
  wr(0x070, 1 | 2 | 8 | 4);
  descs[0] = (struct desc){0xF0000000u, 4096, 2, 0};
  av.ring[0] = 0;
  __asm__ volatile("" ::: "memory");
  av.idx = 1;
  wr(0x050, 0);
  uint32_t st = rd(0x070), is = rd(0x060);
  int intact = 1;
  for (int i = 0; i < 256; i++) intact &= canary[i] == (uint8_t)i;
  printf("virtio-attack: status 0x%x interrupt 0x%x used %u canary %d\n", st, is, us.idx, intact);
  return (st & 64) && (is & 2) && us.idx == 0 && intact ? 0 : 9;
}
