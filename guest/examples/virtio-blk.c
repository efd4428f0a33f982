/* virtio-blk through the SDK driver (vmtool/virtio.h), for the first disk in the machine description (or
 * the device at 0xD0000000): write 2 sectors at sector 2 with a pattern, flush, read them back and compare,
 * then get the disk's id and try a read past the end. Prints each request's status. Exit status: 0 all good;
 * 7 the write was refused with VIRTIO_BLK_S_IOERR (a read-only disk; the rest still checked); other values:
 * the failed step. Waits are TSC-timed (VMTOOL_VIRTIO_WAIT_DEFAULT): the I/O worker serves the queue on its
 * own thread, and how long that takes depends on the host (docs/svm.md). */
#include <vmtool/printf.h>
#include <vmtool/virtio.h>

#define FALLBACK_BASE 0xD0000000u
#define QSIZE 8

/* virtio-blk request types and the header every request starts with. */
#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
struct req { uint32_t type, reserved; uint64_t sector; };

VMTOOL_VIRTQ_MEMORY(queue_mem, QSIZE);
static struct vmtool_virtq q;
static struct req hdr;
static uint8_t data[1024], back[1024];
static volatile uint8_t status;

/* One request: header, optional data (device-readable for writes, writable for reads), status byte.
 * Returns the status the device wrote, or -1 when it did not answer in time. */
static int request(uint32_t type, uint64_t sector, void *buf, uint32_t len, int dev_writes) {
  hdr.type = type;
  hdr.reserved = 0;
  hdr.sector = sector;
  status = 0xff;
  struct vmtool_virtq_buf b[3];
  uint16_t n = 0;
  b[n++] = (struct vmtool_virtq_buf){&hdr, sizeof hdr, 0};
  if (len) b[n++] = (struct vmtool_virtq_buf){buf, len, (uint32_t)dev_writes};
  b[n++] = (struct vmtool_virtq_buf){&status, 1, 1};
  if (vmtool_virtq_call(&q, b, n, VMTOOL_VIRTIO_WAIT_DEFAULT) < 0) return -1;
  vmtool_virtio_ack_interrupt(q.dev);
  return status;
}

int main(const struct vmtool_boot_info *bi) {
  static struct vmtool_virtio_dev dev;
  if (vmtool_virtio_find(bi, VIRTIO_ID_BLOCK, 0, &dev) < 0 &&
      vmtool_virtio_probe(FALLBACK_BASE, VIRTIO_ID_BLOCK, &dev) < 0) {
    printf("virtio-blk: no device at 0x%x\n", FALLBACK_BASE);
    return 2;
  }
  int r = vmtool_virtio_init(&dev, VIRTIO_FEATURE(VIRTIO_BLK_F_RO)); /* accept read-only if offered */
  if (r < 0) return r == VMTOOL_VIRTIO_ERR_NO_VERSION_1 ? 3 : 4;
  if (vmtool_virtq_setup(&dev, &q, 0, queue_mem, QSIZE) < 0) return 5;
  vmtool_virtio_driver_ok(&dev);
  uint32_t cap = (uint32_t)vmtool_virtio_config64(&dev, 0); /* capacity in 512-byte sectors */
  uint32_t ro = (dev.features & VIRTIO_FEATURE(VIRTIO_BLK_F_RO)) != 0;
  printf("virtio-blk: capacity %u sectors, read-only %u\n", cap, ro);

  for (int i = 0; i < 1024; i++) data[i] = (uint8_t)(i * 7 + 3);
  int ws = request(VIRTIO_BLK_T_OUT, 2, data, sizeof data, 0);
  int fs = request(VIRTIO_BLK_T_FLUSH, 0, 0, 0, 0);
  int rs = request(VIRTIO_BLK_T_IN, 2, back, sizeof back, 1);
  int same = 1;
  for (int i = 0; i < 1024; i++) same &= back[i] == data[i];
  static char id[21];
  int is = request(VIRTIO_BLK_T_GET_ID, 0, id, 20, 1);
  printf("virtio-blk: write %d flush %d read %d same %d id '%s'\n", ws, fs, rs, same, id);
  int past = request(VIRTIO_BLK_T_IN, cap, back, 512, 1);
  printf("virtio-blk: read past the end: status %d\n", past);
  vmtool_virtio_reset(&dev);
  if (ws == 1) return 7;
  if (ws || fs || rs || is || !same || past != 1) return 8;
  return 0;
}
