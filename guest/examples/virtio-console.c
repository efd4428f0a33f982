/* virtio-console echo through the SDK driver (vmtool/virtio.h): find the console in the machine description
 * (or at 0xD0000000), set up receiveq 0 and transmitq 1, print a prompt through the transmitq, then echo every
 * line that arrives on the receiveq back with "echo: " in front, until a line "quit". Exit status 0 on
 * success, else the step that failed. 32-bit protected mode, polling the used rings (no interrupts). */
#include <vmtool/printf.h>
#include <vmtool/virtio.h>

#define FALLBACK_BASE 0xD0000000u
#define QSIZE 4

VMTOOL_VIRTQ_MEMORY(rx_mem, QSIZE);
VMTOOL_VIRTQ_MEMORY(tx_mem, QSIZE);
static struct vmtool_virtq rx, tx;
static char rxbuf[64], txbuf[96];

/* Send LEN bytes of txbuf and wait until the device has taken them. */
static void send(uint32_t len) {
  struct vmtool_virtq_buf b = {txbuf, len, 0};
  vmtool_virtq_call(&tx, &b, 1, VMTOOL_VIRTIO_WAIT_DEFAULT);
}

static void say(const char *s) {
  uint32_t len = 0;
  for (; s[len]; len++) txbuf[len] = s[len];
  send(len);
}

int main(const struct vmtool_boot_info *bi) {
  static struct vmtool_virtio_dev dev;
  if (vmtool_virtio_find(bi, VIRTIO_ID_CONSOLE, 0, &dev) < 0 &&
      vmtool_virtio_probe(FALLBACK_BASE, VIRTIO_ID_CONSOLE, &dev) < 0) {
    printf("virtio-console: no console at 0x%x\n", FALLBACK_BASE);
    return 2;
  }
  int r = vmtool_virtio_init(&dev, 0); /* VIRTIO_F_VERSION_1 only */
  if (r < 0) return r == VMTOOL_VIRTIO_ERR_NO_VERSION_1 ? 3 : 4;
  if (vmtool_virtq_setup(&dev, &rx, 0, rx_mem, QSIZE) < 0 || vmtool_virtq_setup(&dev, &tx, 1, tx_mem, QSIZE) < 0)
    return 5;
  vmtool_virtio_driver_ok(&dev);
  say("virtio-console ready\n");
  char line[64];
  uint32_t len = 0;
  for (;;) {
    /* Input comes when the person types it: wait without a time limit. */
    struct vmtool_virtq_buf b = {rxbuf, sizeof rxbuf, 1};
    int32_t n = vmtool_virtq_call(&rx, &b, 1, VMTOOL_VIRTIO_WAIT_FOREVER);
    if (n < 0 || n > (int32_t)sizeof rxbuf) return 6;
    for (int32_t i = 0; i < n; i++) {
      char c = rxbuf[i];
      if (c != '\n' && len < sizeof line) {
        line[len++] = c;
        continue;
      }
      if (len == 4 && line[0] == 'q' && line[1] == 'u' && line[2] == 'i' && line[3] == 't') {
        say("bye\n");
        return 0;
      }
      const char *pre = "echo: ";
      uint32_t k = 0;
      for (; pre[k]; k++) txbuf[k] = pre[k];
      for (uint32_t j = 0; j < len; j++) txbuf[k++] = line[j];
      txbuf[k++] = '\n';
      send(k);
      len = 0;
    }
  }
}
