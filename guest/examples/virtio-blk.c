/* virtio-blk driver written against the virtio 1.x spec (virtio-mmio version 2, one split queue), for the
 * first virtio device at 0xD0000000: write 2 sectors at sector 2 with a pattern, flush, read them back and
 * compare, then get the disk's id. Prints each request's status. Exit status: 0 all good; 7 the write was
 * refused with VIRTIO_BLK_S_IOERR (a read-only disk; the rest still checked); other values: the failed step. */
#include <vmtool/io.h>
#include <vmtool/printf.h>

#define BASE 0xD0000000u
#define QSIZE 8

struct desc { uint64_t addr; uint32_t len; uint16_t flags, next; };
struct avail { uint16_t flags, idx, ring[QSIZE], used_event; };
struct used { uint16_t flags; volatile uint16_t idx; struct { uint32_t id, len; } ring[QSIZE]; uint16_t avail_event; };
struct req { uint32_t type, reserved; uint64_t sector; };

static struct desc descs[QSIZE] __attribute__((aligned(16)));
static struct avail av __attribute__((aligned(2)));
static struct used us __attribute__((aligned(4)));
static struct req hdr;
static uint8_t data[1024], back[1024];
static volatile uint8_t status;
static uint16_t used_seen;

static uint32_t rd(uint32_t off) { return mmio_read32(BASE + off); }
static uint64_t rdtsc(void) {
  uint32_t lo, hi;
  __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
  return ((uint64_t)hi << 32) | lo;
}
static void wr(uint32_t off, uint32_t v) { mmio_write32(BASE + off, v); }

/* One request: header, optional data (device-readable for writes, writable for reads), status. */
static int request(uint32_t type, uint64_t sector, void *buf, uint32_t len, int dev_writes) {
  hdr.type = type;
  hdr.sector = sector;
  status = 0xff;
  int n = 0;
  descs[n] = (struct desc){(uint32_t)(uintptr_t)&hdr, sizeof hdr, 1, (uint16_t)(n + 1)};
  n++;
  if (len) {
    descs[n] = (struct desc){(uint32_t)(uintptr_t)buf, len, (uint16_t)(1 | (dev_writes ? 2 : 0)), (uint16_t)(n + 1)};
    n++;
  }
  descs[n] = (struct desc){(uint32_t)(uintptr_t)&status, 1, 2, 0};
  av.ring[av.idx % QSIZE] = 0;
  __asm__ volatile("" ::: "memory");
  av.idx++;
  wr(0x050, 0);
  /* Wait by time, not by a count of spins: the I/O worker serves the queue on its own thread, and how long that
   * takes depends on the host (under kvm_amd in QEMU's software CPU, more than 1,000,000 spins; docs/svm.md). */
  for (uint64_t t0 = rdtsc(); us.idx == used_seen;)
    if (rdtsc() - t0 > (1ull << 33)) return -1;
  used_seen++;
  wr(0x064, rd(0x060));
  return status;
}

int main(void) {
  if (rd(0x000) != 0x74726976 || rd(0x004) != 2 || rd(0x008) != 2) {
    printf("virtio-blk: no device at 0x%x\n", BASE);
    return 2;
  }
  wr(0x070, 0);
  wr(0x070, 1 | 2);
  wr(0x014, 0);
  uint32_t f0 = rd(0x010);
  wr(0x024, 0);
  wr(0x020, f0 & (1u << 5)); /* accept VIRTIO_BLK_F_RO if offered */
  wr(0x024, 1);
  wr(0x020, 1); /* VIRTIO_F_VERSION_1 */
  wr(0x070, 1 | 2 | 8);
  if (!(rd(0x070) & 8)) return 4;
  wr(0x030, 0);
  wr(0x038, QSIZE);
  wr(0x080, (uint32_t)(uintptr_t)descs);
  wr(0x090, (uint32_t)(uintptr_t)&av);
  wr(0x0a0, (uint32_t)(uintptr_t)&us);
  wr(0x044, 1);
  wr(0x070, 1 | 2 | 8 | 4);
  uint32_t cap = rd(0x100);
  printf("virtio-blk: capacity %u sectors, read-only %u\n", cap, (f0 >> 5) & 1);

  for (int i = 0; i < 1024; i++) data[i] = (uint8_t)(i * 7 + 3);
  int ws = request(1, 2, data, sizeof data, 0);
  int fs = request(4, 0, 0, 0, 0);
  int rs = request(0, 2, back, sizeof back, 1);
  int same = 1;
  for (int i = 0; i < 1024; i++) same &= back[i] == data[i];
  static char id[21];
  int is = request(8, 0, id, 20, 1);
  printf("virtio-blk: write %d flush %d read %d same %d id '%s'\n", ws, fs, rs, same, id);
  int past = request(0, cap, back, 512, 1);
  printf("virtio-blk: read past the end: status %d\n", past);
  if (ws == 1) return 7;
  if (ws || fs || rs || is || !same || past != 1) return 8;
  return 0;
}
