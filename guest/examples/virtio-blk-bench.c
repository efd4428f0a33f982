/* The virtio-blk benchmark guest (bench/virtio.mjs): a virtio-blk driver for the first virtio-mmio device
 * (BASE, 0xD0000000 unless built with -DBASE=...), then 500 writes and 500 reads of 4 KiB (8 sectors),
 * one after the other, over the first 2 MiB of the disk (notify, poll the used ring). Prints "done N requests,
 * M errors" and halts. Each request costs the guest one QueueNotify write (an ioeventfd under vmtool). */
#include <vmtool/io.h>
#include <vmtool/printf.h>

#ifndef BASE
#define BASE 0xD0000000u
#endif
#define QSIZE 8
#define REQUESTS 1000

struct desc { uint64_t addr; uint32_t len; uint16_t flags, next; };
struct avail { uint16_t flags; volatile uint16_t idx; uint16_t ring[QSIZE], used_event; };
struct used { uint16_t flags; volatile uint16_t idx; struct { uint32_t id, len; } ring[QSIZE]; uint16_t avail_event; };
struct req { uint32_t type, reserved; uint64_t sector; };

static struct desc descs[QSIZE] __attribute__((aligned(16)));
static struct avail av __attribute__((aligned(2)));
static struct used us __attribute__((aligned(4)));
static struct req hdr;
static uint8_t data[4096];
static volatile uint8_t status;

static uint64_t rdtsc(void) {
  uint32_t lo, hi;
  __asm__ volatile("lfence; rdtsc" : "=a"(lo), "=d"(hi));
  return ((uint64_t)hi << 32) | lo;
}

static uint32_t rd(uint32_t off) { return mmio_read32(BASE + off); }
static void wr(uint32_t off, uint32_t v) { mmio_write32(BASE + off, v); }

int main(void) {
  if (rd(0x000) != 0x74726976 || rd(0x008) != 2) {
    printf("virtio-blk-bench: no disk at 0x%x\n", BASE);
    return 2;
  }
  wr(0x070, 0);
  wr(0x070, 1 | 2);
  wr(0x024, 1);
  wr(0x020, 1); /* VIRTIO_F_VERSION_1 only */
  wr(0x070, 1 | 2 | 8);
  if (!(rd(0x070) & 8)) return 3;
  wr(0x030, 0);
  wr(0x038, QSIZE);
  wr(0x080, (uint32_t)(uintptr_t)descs);
  wr(0x084, 0);
  wr(0x090, (uint32_t)(uintptr_t)&av);
  wr(0x094, 0);
  wr(0x0a0, (uint32_t)(uintptr_t)&us);
  wr(0x0a4, 0);
  wr(0x044, 1);
  wr(0x070, 1 | 2 | 8 | 4);
  descs[0] = (struct desc){(uint32_t)(uintptr_t)&hdr, sizeof hdr, 1, 1};
  descs[1] = (struct desc){(uint32_t)(uintptr_t)data, sizeof data, 1, 2};
  descs[2] = (struct desc){(uint32_t)(uintptr_t)&status, 1, 2, 0};
  /* The reference in the same VM: 1000 port-I/O exits to a port nobody claims (0xe0), in TSC cycles. */
  uint64_t t0 = rdtsc();
  for (int i = 0; i < 1000; i++) __asm__ volatile("outb %%al, $0xe0" : : "a"(0));
  uint64_t t1 = rdtsc();
  uint32_t errors = 0;
  for (uint32_t i = 0; i < REQUESTS; i++) {
    int write = i < REQUESTS / 2;
    hdr.type = write ? 1 : 0; /* VIRTIO_BLK_T_OUT / IN */
    hdr.sector = (uint64_t)(i % 512) * 8;
    descs[1].flags = write ? 1 : 1 | 2;
    status = 0xff;
    av.ring[i % QSIZE] = 0;
    __asm__ volatile("" ::: "memory");
    av.idx = (uint16_t)(i + 1);
    wr(0x050, 0);
    while (us.idx != (uint16_t)(i + 1)) __asm__ volatile("pause");
    if (status != 0) errors++;
  }
  uint64_t t2 = rdtsc();
  printf("tsc/1024: 1000 port exits %u, 1000 requests %u\n", (uint32_t)((t1 - t0) >> 10), (uint32_t)((t2 - t1) >> 10));
  printf("done %u requests, %u errors\n", REQUESTS, errors);
  return 0;
}
