/* What vmtool does with its standard streams, driven by the command line's first word:
 *   flood    print numbered lines forever on the debug console (a reader that goes away must end vmtool)
 *   flood-uart  the same on COM1 (the I/O worker's output)
 *   prompt   print "prompt> " on the debug console, no newline, then keep making port exits forever
 *   prompt-uart  print "prompt> " on COM1, then poll the UART's line status register forever, as a polled
 *            serial driver waiting for a key does
 *   hold     print "held" with no newline, then spin without exits (the signal test)
 * The lines are printed through the ports directly (no printf buffering in the guest). */
#include <vmtool/boot_info.h>
#include <vmtool/io.h>

#define COM1 0x3F8

static void dbg(const char *s) {
  for (; *s; s++) outb(0xE9, (uint8_t)*s);
}
static void uart(const char *s) {
  for (; *s; s++) {
    while (!(inb(COM1 + 5) & 0x20)) { /* THR empty */ }
    outb(COM1, (uint8_t)*s);
  }
}
static int starts(const char *c, const char *w) {
  int i = 0;
  for (; w[i]; i++)
    if (c[i] != w[i]) return 0;
  return c[i] == 0 || c[i] == ' ';
}
static void number(char *buf, uint32_t n) {
  char t[12];
  int i = 0;
  do t[i++] = (char)('0' + n % 10); while ((n /= 10) != 0);
  int j = 0;
  while (i > 0) buf[j++] = t[--i];
  buf[j++] = '\n';
  buf[j] = 0;
}

int main(const struct vmtool_boot_info *bi) {
  const char *c = vmtool_cmdline(bi);
  char line[32] = "line ";
  if (starts(c, "flood") || starts(c, "flood-uart")) {
    int on_uart = starts(c, "flood-uart");
    for (uint32_t n = 0;; n++) {
      number(line + 5, n);
      if (on_uart) uart(line);
      else dbg(line);
    }
  }
  if (starts(c, "prompt")) {
    dbg("prompt> ");
    for (;;) inb(0x80); /* an unclaimed port: one exit each */
  }
  if (starts(c, "prompt-uart")) {
    uart("prompt> ");
    for (;;)
      if (inb(COM1 + 5) & 0x01) break; /* data ready: a key */
    return 0;
  }
  if (starts(c, "hold")) {
    dbg("held");
    for (volatile uint32_t i = 0;; i++) { }
  }
  dbg("streams: unknown mode\n");
  return 2;
}
