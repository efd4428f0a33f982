/* 32-bit protected mode: one virtio-console transmit chain of 64 descriptors, each covering all of guest RAM
 * (64 x 64 MiB = 4 GiB with --mem 64M: the most bytes a chain may carry). A device that copied the chain
 * before writing it out would need 4 GiB of host memory for this one request; vmtool streams it from guest
 * RAM and writes out at most its per-chain limit. Then one ordinary transmit reports what the guest saw:
 *   virtio-console-4g: 64 x N bytes, used len L, status 0xS
 * and the guest halts (status 0). Exit status 2: no console; 3: set-up failed; 4: the chain did not come
 * back in time; 5: the device asked for a reset. */
#include <vmtool/printf.h>
#include <vmtool/virtio.h>

#define FALLBACK_BASE 0xD0000000u
#define QSIZE 64 /* the console's QueueNumMax: one descriptor per entry */

VMTOOL_VIRTQ_MEMORY(tx_mem, QSIZE);
static struct vmtool_virtq tx;
static struct vmtool_virtq_buf bufs[QSIZE];
static char line[128];
static uint32_t line_len;

static void to_line(char c) {
  if (line_len < sizeof line) line[line_len++] = c;
}

int main(const struct vmtool_boot_info *bi) {
  static struct vmtool_virtio_dev dev;
  if (vmtool_virtio_find(bi, VIRTIO_ID_CONSOLE, 0, &dev) < 0 &&
      vmtool_virtio_probe(FALLBACK_BASE, VIRTIO_ID_CONSOLE, &dev) < 0)
    return 2;
  if (vmtool_virtio_init(&dev, 0) < 0 || vmtool_virtq_setup(&dev, &tx, 1, tx_mem, QSIZE) < 0) return 3;
  vmtool_virtio_driver_ok(&dev);

  /* RAM is one range from 0; a descriptor's length is 32 bits. */
  uint32_t ram = bi->mem_size > 0xFFFFFFFFull ? 0xFFFFFFFFu : (uint32_t)bi->mem_size;
  for (uint32_t i = 0; i < QSIZE; i++) {
    bufs[i].addr = (const volatile void *)0;
    bufs[i].len = ram;
    bufs[i].device_writes = 0;
  }
  int32_t used = vmtool_virtq_call(&tx, bufs, QSIZE, VMTOOL_VIRTIO_WAIT_DEFAULT);
  if (used < 0) return 4;
  uint32_t status = vmtool_virtio_status(&dev);
  if (status & VIRTIO_STATUS_DEVICE_NEEDS_RESET) return 5;

  vmtool_set_putc(to_line);
  printf("\nvirtio-console-4g: %u x %u bytes, used len %d, status 0x%x\n", QSIZE, ram, used, status);
  struct vmtool_virtq_buf report = {line, line_len, 0};
  if (vmtool_virtq_call(&tx, &report, 1, VMTOOL_VIRTIO_WAIT_DEFAULT) < 0) return 4;
  return 0;
}
