/* virtio-rng driver written against the virtio 1.x spec (virtio-mmio version 2, one split queue): probe the
 * device at 0xD0000000, negotiate VIRTIO_F_VERSION_1, set up queue 0, ask for 4 KiB of entropy, poll the used
 * ring, and print the used length and an FNV-1a digest of the bytes. Exit status 0 on success, else the
 * step that failed (the exit port gives (n << 1) | 1). 32-bit protected mode, paging off. */
#include <vmtool/io.h>
#include <vmtool/printf.h>

#define BASE 0xD0000000u
#define REG(off) (BASE + (off))
#define QSIZE 8

struct desc { uint64_t addr; uint32_t len; uint16_t flags, next; };
struct avail { uint16_t flags, idx, ring[QSIZE], used_event; };
struct used_elem { uint32_t id, len; };
struct used { uint16_t flags; volatile uint16_t idx; struct used_elem ring[QSIZE]; uint16_t avail_event; };

static struct desc descs[QSIZE] __attribute__((aligned(16)));
static struct avail av __attribute__((aligned(2)));
static struct used us __attribute__((aligned(4)));
static uint8_t buf[4096];

static uint32_t rd(uint32_t off) { return mmio_read32(REG(off)); }
static void wr(uint32_t off, uint32_t v) { mmio_write32(REG(off), v); }

int main(void) {
  if (rd(0x000) != 0x74726976 || rd(0x004) != 2 || rd(0x008) != 4) {
    printf("virtio-rng: no device at 0x%x\n", BASE);
    return 2;
  }
  wr(0x070, 0);
  wr(0x070, 1);
  wr(0x070, 1 | 2);
  wr(0x014, 1);
  if (!(rd(0x010) & 1)) return 3; /* VIRTIO_F_VERSION_1 is bit 32 */
  wr(0x024, 0);
  wr(0x020, 0);
  wr(0x024, 1);
  wr(0x020, 1);
  wr(0x070, 1 | 2 | 8);
  if (!(rd(0x070) & 8)) return 4;
  wr(0x030, 0);
  if (rd(0x034) < QSIZE) return 5;
  wr(0x038, QSIZE);
  wr(0x080, (uint32_t)(uintptr_t)descs);
  wr(0x084, 0);
  wr(0x090, (uint32_t)(uintptr_t)&av);
  wr(0x094, 0);
  wr(0x0a0, (uint32_t)(uintptr_t)&us);
  wr(0x0a4, 0);
  wr(0x044, 1);
  wr(0x070, 1 | 2 | 8 | 4);

  descs[0].addr = (uint32_t)(uintptr_t)buf;
  descs[0].len = sizeof buf;
  descs[0].flags = 2; /* VIRTQ_DESC_F_WRITE */
  av.ring[0] = 0;
  __asm__ volatile("" ::: "memory"); /* x86 keeps stores in order; stop the compiler reordering them */
  av.idx = 1;
  wr(0x050, 0);
  for (uint32_t spin = 0; us.idx != 1; spin++)
    if (spin > 1000000) return 6;
  uint32_t h = 2166136261u;
  for (uint32_t i = 0; i < us.ring[0].len; i++) h = (h ^ buf[i]) * 16777619u;
  printf("virtio-rng: %u bytes, fnv1a %x, interrupt status %u\n", us.ring[0].len, h, rd(0x060));
  wr(0x064, rd(0x060));
  return 0;
}
