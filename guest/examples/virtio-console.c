/* virtio-console echo, written against the virtio 1.x spec (virtio-mmio version 2): probe the console at
 * 0xD0000000, set up receiveq 0 and transmitq 1, print a prompt through the transmitq, then echo every line
 * that arrives on the receiveq back with "echo: " in front, until a line "quit". Exit status 0 on success,
 * else the step that failed. 32-bit protected mode, paging off, polling the used rings (no interrupts). */
#include <vmtool/io.h>
#include <vmtool/printf.h>

#define BASE 0xD0000000u
#define QSIZE 4

struct desc { uint64_t addr; uint32_t len; uint16_t flags, next; };
struct avail { uint16_t flags; volatile uint16_t idx; uint16_t ring[QSIZE], used_event; };
struct used_elem { uint32_t id, len; };
struct used { uint16_t flags; volatile uint16_t idx; struct used_elem ring[QSIZE]; uint16_t avail_event; };
struct queue {
  struct desc descs[QSIZE] __attribute__((aligned(16)));
  struct avail av __attribute__((aligned(2)));
  struct used us __attribute__((aligned(4)));
  uint16_t seen;
};

static struct queue rx, tx;
static char rxbuf[64], txbuf[96];

static uint32_t rd(uint32_t off) { return mmio_read32(BASE + off); }
static void wr(uint32_t off, uint32_t v) { mmio_write32(BASE + off, v); }

static int setup(uint32_t index, struct queue *q) {
  wr(0x030, index);
  if (rd(0x034) < QSIZE) return 0;
  wr(0x038, QSIZE);
  wr(0x080, (uint32_t)(uintptr_t)q->descs);
  wr(0x084, 0);
  wr(0x090, (uint32_t)(uintptr_t)&q->av);
  wr(0x094, 0);
  wr(0x0a0, (uint32_t)(uintptr_t)&q->us);
  wr(0x0a4, 0);
  wr(0x044, 1);
  return 1;
}

/* Offer one buffer on a queue and notify; wait for the device to use it; return the used length. */
static int submit(uint32_t index, struct queue *q, void *buf, uint32_t len, int writable) {
  q->descs[0].addr = (uint32_t)(uintptr_t)buf;
  q->descs[0].len = len;
  q->descs[0].flags = writable ? 2 : 0;
  q->av.ring[q->av.idx % QSIZE] = 0;
  __asm__ volatile("" ::: "memory");
  q->av.idx++;
  wr(0x050, index);
  while (q->us.idx == q->seen) __asm__ volatile("pause");
  int n = (int)q->us.ring[q->seen % QSIZE].len;
  q->seen++;
  return n;
}

static void say(const char *s, uint32_t len) {
  for (uint32_t i = 0; i < len; i++) txbuf[i] = s[i];
  submit(1, &tx, txbuf, len, 0);
}

int main(void) {
  if (rd(0x000) != 0x74726976 || rd(0x004) != 2 || rd(0x008) != 3) {
    printf("virtio-console: no console at 0x%x\n", BASE);
    return 2;
  }
  wr(0x070, 0);
  wr(0x070, 1 | 2);
  wr(0x014, 1);
  if (!(rd(0x010) & 1)) return 3;
  wr(0x024, 0);
  wr(0x020, 0);
  wr(0x024, 1);
  wr(0x020, 1); /* VIRTIO_F_VERSION_1 only */
  wr(0x070, 1 | 2 | 8);
  if (!(rd(0x070) & 8)) return 4;
  if (!setup(0, &rx) || !setup(1, &tx)) return 5;
  wr(0x070, 1 | 2 | 8 | 4);
  say("virtio-console ready\n", 21);
  char line[64];
  uint32_t len = 0;
  for (;;) {
    int n = submit(0, &rx, rxbuf, sizeof rxbuf, 1);
    for (int i = 0; i < n; i++) {
      char c = rxbuf[i];
      if (c != '\n' && len < sizeof line) {
        line[len++] = c;
        continue;
      }
      if (len == 4 && line[0] == 'q' && line[1] == 'u' && line[2] == 'i' && line[3] == 't') {
        say("bye\n", 4);
        return 0;
      }
      const char *pre = "echo: ";
      uint32_t k = 0;
      for (; pre[k]; k++) txbuf[k] = pre[k];
      for (uint32_t j = 0; j < len; j++) txbuf[k++] = line[j];
      txbuf[k++] = '\n';
      submit(1, &tx, txbuf, k, 0);
      len = 0;
    }
  }
}
