/* A guest that ends right after posting disk writes, without waiting for them: a large write to the first
 * disk, then, while the device is still busy with it, a one-sector write of a known pattern to the second
 * disk, then `cli; hlt` (or, with "exit" on the command line, a write to the exit port). The VMM must serve
 * both before the run ends: the test checks the second disk's first sector. Needs two disks and 64 MiB. */
#include <vmtool/printf.h>
#include <vmtool/virtio.h>
#include <vmtool/io.h>

#define QSIZE 32
#define BIG_CHUNK (1u << 20)
#define BIG_CHUNKS 16 /* 16 MiB from guest RAM at 16 MiB */
#define BIG_DATA 0x1000000u

#define VIRTIO_BLK_T_OUT 1
struct req { uint32_t type, reserved; uint64_t sector; };

VMTOOL_VIRTQ_MEMORY(mem0, QSIZE);
VMTOOL_VIRTQ_MEMORY(mem1, QSIZE);
static struct vmtool_virtq q0, q1;
static struct req hdr0, hdr1;
static uint8_t sector[512];
static volatile uint8_t status0, status1;

static int disk(const struct vmtool_boot_info *bi, uint32_t nth, struct vmtool_virtio_dev *dev,
                struct vmtool_virtq *q, void *mem) {
  if (vmtool_virtio_find(bi, VIRTIO_ID_BLOCK, nth, dev) < 0) return -1;
  if (vmtool_virtio_init(dev, 0) < 0) return -1;
  if (vmtool_virtq_setup(dev, q, 0, mem, QSIZE) < 0) return -1;
  vmtool_virtio_driver_ok(dev);
  return 0;
}

static int has_word(const struct vmtool_boot_info *bi, const char *w) {
  const char *c = vmtool_cmdline(bi);
  for (; *c; c++) {
    int i = 0;
    while (w[i] && c[i] == w[i]) i++;
    if (!w[i] && (c[i] == ' ' || c[i] == 0)) return 1;
  }
  return 0;
}

int main(const struct vmtool_boot_info *bi) {
  static struct vmtool_virtio_dev d0, d1;
  if (disk(bi, 0, &d0, &q0, mem0) < 0 || disk(bi, 1, &d1, &q1, mem1) < 0) {
    printf("lost-write: two disks needed\n");
    return 2;
  }
  struct vmtool_virtq_buf big[BIG_CHUNKS + 2];
  hdr0 = (struct req){VIRTIO_BLK_T_OUT, 0, 0};
  big[0] = (struct vmtool_virtq_buf){&hdr0, sizeof hdr0, 0};
  for (uint32_t i = 0; i < BIG_CHUNKS; i++)
    big[1 + i] = (struct vmtool_virtq_buf){(void *)(uintptr_t)(BIG_DATA + i * BIG_CHUNK), BIG_CHUNK, 0};
  big[BIG_CHUNKS + 1] = (struct vmtool_virtq_buf){&status0, 1, 1};
  for (int i = 0; i < 512; i++) sector[i] = (uint8_t)(0xA5 ^ i);
  hdr1 = (struct req){VIRTIO_BLK_T_OUT, 0, 0};
  struct vmtool_virtq_buf small[3] = {
      {&hdr1, sizeof hdr1, 0}, {sector, sizeof sector, 0}, {&status1, 1, 1}};

  if (vmtool_virtq_submit(&q0, big, BIG_CHUNKS + 2) < 0) return 3;
  /* Let the device start on the large write, then post the small one while it is busy. */
  for (uint64_t t0 = vmtool_virtio_rdtsc(); vmtool_virtio_rdtsc() - t0 < 2000000;) __asm__ volatile("pause");
  if (vmtool_virtq_submit(&q1, small, 3) < 0) return 4;
  printf("lost-write: posted\n");
  if (has_word(bi, "exit")) outb(0xF4, 5);
  __asm__ volatile("cli; hlt");
  return 0;
}
