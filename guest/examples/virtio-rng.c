/* virtio-rng through the SDK driver (vmtool/virtio.h): find the entropy device in the machine description
 * (or probe 0xD0000000 when there is none), negotiate VIRTIO_F_VERSION_1, set up queue 0, ask for 4 KiB,
 * poll the used ring, and print the used length, an FNV-1a digest of the bytes and InterruptStatus. Exit
 * status 0 on success, else the step that failed (the exit port gives (n << 1) | 1). 32-bit protected mode. */
#include <vmtool/printf.h>
#include <vmtool/virtio.h>

#define FALLBACK_BASE 0xD0000000u
#define QSIZE 8

VMTOOL_VIRTQ_MEMORY(queue_mem, QSIZE);
static uint8_t buf[4096];

int main(const struct vmtool_boot_info *bi) {
  struct vmtool_virtio_dev dev;
  struct vmtool_virtq q;
  if (vmtool_virtio_find(bi, VIRTIO_ID_RNG, 0, &dev) < 0 &&
      vmtool_virtio_probe(FALLBACK_BASE, VIRTIO_ID_RNG, &dev) < 0) {
    printf("virtio-rng: no device at 0x%x\n", FALLBACK_BASE);
    return 2;
  }
  int r = vmtool_virtio_init(&dev, 0);
  if (r < 0) return r == VMTOOL_VIRTIO_ERR_NO_VERSION_1 ? 3 : 4;
  if (vmtool_virtq_setup(&dev, &q, 0, queue_mem, QSIZE) < 0) return 5;
  vmtool_virtio_driver_ok(&dev);

  struct vmtool_virtq_buf b = {buf, sizeof buf, 1};
  int32_t len = vmtool_virtq_call(&q, &b, 1, VMTOOL_VIRTIO_WAIT_DEFAULT);
  if (len < 0 || (uint32_t)len > sizeof buf) return 6;
  uint32_t h = 2166136261u;
  for (int32_t i = 0; i < len; i++) h = (h ^ buf[i]) * 16777619u;
  printf("virtio-rng: %u bytes, fnv1a %x, interrupt status %u\n", (uint32_t)len, h, vmtool_virtio_ack_interrupt(&dev));
  vmtool_virtio_reset(&dev);
  return 0;
}
