/* The virtio-rng benchmark guest (bench/virtio.mjs): the SDK's virtio driver (vmtool/virtio.h) on the device
 * at BASE (no machine description under QEMU, so a fixed address), then 1000 requests of 4 KiB one after the
 * other (notify, poll the used ring), then "done N bytes" and halt. Each request costs the guest one
 * QueueNotify write, which KVM turns into an ioeventfd signal (no exit). */
#include <vmtool/printf.h>
#include <vmtool/virtio.h>

#ifndef BASE
#define BASE 0xD0000000u
#endif
#define QSIZE 8
#define REQUESTS 1000

VMTOOL_VIRTQ_MEMORY(queue_mem, QSIZE);
static uint8_t buf[4096];

static uint64_t rdtsc(void) {
  uint32_t lo, hi;
  __asm__ volatile("lfence; rdtsc" : "=a"(lo), "=d"(hi));
  return ((uint64_t)hi << 32) | lo;
}

int main(void) {
  struct vmtool_virtio_dev dev;
  struct vmtool_virtq q;
  if (vmtool_virtio_probe(BASE, VIRTIO_ID_RNG, &dev) < 0) return 2;
  if (vmtool_virtio_init(&dev, 0) < 0) return 3;
  if (vmtool_virtq_setup(&dev, &q, 0, queue_mem, QSIZE) < 0) return 4;
  vmtool_virtio_driver_ok(&dev);
  struct vmtool_virtq_buf b = {buf, sizeof buf, 1};
  /* The reference in the same VM: 1000 port-I/O exits to a port nobody claims (0xe0), in TSC cycles. */
  uint64_t t0 = rdtsc();
  for (int i = 0; i < 1000; i++) __asm__ volatile("outb %%al, $0xe0" : : "a"(0));
  uint64_t t1 = rdtsc();
  uint32_t total = 0;
  for (int i = 0; i < REQUESTS; i++) {
    if ((i == 0 ? vmtool_virtq_submit(&q, &b, 1) : vmtool_virtq_resubmit(&q)) < 0) return 5;
    total += (uint32_t)vmtool_virtq_wait(&q, VMTOOL_VIRTIO_WAIT_FOREVER);
  }
  uint64_t t2 = rdtsc();
  printf("tsc/1024: 1000 port exits %u, 1000 requests %u\n", (uint32_t)((t1 - t0) >> 10), (uint32_t)((t2 - t1) >> 10));
  printf("done %u bytes\n", total);
  return 0;
}
