/* The virtio-blk benchmark guest (bench/virtio.mjs): the SDK's virtio driver (vmtool/virtio.h) on the disk at
 * BASE (0xD0000000 unless built with -DBASE=...; no machine description under QEMU), then 500 writes and 500
 * reads of 4 KiB (8 sectors), one after the other, over the first 2 MiB of the disk (notify, poll the used
 * ring). Prints "done N requests, M errors" and halts. Each request costs the guest one QueueNotify write (an
 * ioeventfd under vmtool). */
#include <vmtool/printf.h>
#include <vmtool/virtio.h>

#ifndef BASE
#define BASE 0xD0000000u
#endif
#define QSIZE 8
#define REQUESTS 1000

struct req { uint32_t type, reserved; uint64_t sector; };

VMTOOL_VIRTQ_MEMORY(queue_mem, QSIZE);
static struct req hdr;
static uint8_t data[4096];
static volatile uint8_t status;

static uint64_t rdtsc(void) {
  uint32_t lo, hi;
  __asm__ volatile("lfence; rdtsc" : "=a"(lo), "=d"(hi));
  return ((uint64_t)hi << 32) | lo;
}

int main(void) {
  struct vmtool_virtio_dev dev;
  struct vmtool_virtq q;
  if (vmtool_virtio_probe(BASE, VIRTIO_ID_BLOCK, &dev) < 0) {
    printf("virtio-blk-bench: no disk at 0x%x\n", BASE);
    return 2;
  }
  if (vmtool_virtio_init(&dev, 0) < 0) return 3; /* VIRTIO_F_VERSION_1 only */
  if (vmtool_virtq_setup(&dev, &q, 0, queue_mem, QSIZE) < 0) return 4;
  vmtool_virtio_driver_ok(&dev);
  struct vmtool_virtq_buf b[3] = {{&hdr, sizeof hdr, 0}, {data, sizeof data, 0}, {&status, 1, 1}};
  /* The reference in the same VM: 1000 port-I/O exits to a port nobody claims (0xe0), in TSC cycles. */
  uint64_t t0 = rdtsc();
  for (int i = 0; i < 1000; i++) __asm__ volatile("outb %%al, $0xe0" : : "a"(0));
  uint64_t t1 = rdtsc();
  uint32_t errors = 0;
  for (uint32_t i = 0; i < REQUESTS; i++) {
    int write = i < REQUESTS / 2;
    hdr.type = write ? 1 : 0; /* VIRTIO_BLK_T_OUT / IN */
    hdr.sector = (uint64_t)(i % 512) * 8;
    status = 0xff;
    /* The chain is written once per direction; the requests in between only change the header. */
    int r;
    if (i == 0 || i == REQUESTS / 2) {
      b[1].device_writes = !write;
      r = vmtool_virtq_submit(&q, b, 3);
    } else
      r = vmtool_virtq_resubmit(&q);
    if (r < 0 || vmtool_virtq_wait(&q, VMTOOL_VIRTIO_WAIT_FOREVER) < 0 || status != 0) errors++;
  }
  uint64_t t2 = rdtsc();
  printf("tsc/1024: 1000 port exits %u, 1000 requests %u\n", (uint32_t)((t1 - t0) >> 10), (uint32_t)((t2 - t1) >> 10));
  printf("done %u requests, %u errors\n", REQUESTS, errors);
  return 0;
}
