/* A tiny printf for freestanding guests (see vmtool/printf.h). 64-bit numbers are converted without
 * libgcc's division helpers, so 32-bit guests link without a 32-bit libgcc. */
#include <stdint.h>
#include <stddef.h>
#include <vmtool/console.h>
#include <vmtool/printf.h>

static void default_putc(char c) { debug_putc(c); }
static vmtool_putc_fn put = default_putc;

vmtool_putc_fn vmtool_set_putc(vmtool_putc_fn fn) {
  vmtool_putc_fn old = put;
  put = fn ? fn : default_putc;
  return old;
}

/* n / 10 by shift-and-subtract: no __udivdi3 needed on 32-bit. */
static uint64_t divmod10(uint64_t n, unsigned *rem) {
  uint64_t q = 0, r = 0;
  for (int i = 63; i >= 0; i--) {
    r = (r << 1) | ((n >> i) & 1);
    if (r >= 10) {
      r -= 10;
      q |= (uint64_t)1 << i;
    }
  }
  *rem = (unsigned)r;
  return q;
}

static int emit(const char *s, int len, int width, int left, char pad) {
  int n = 0;
  if (!left)
    for (; width > len; width--, n++) put(pad);
  for (int i = 0; i < len; i++, n++) put(s[i]);
  if (left)
    for (; width > len; width--, n++) put(' ');
  return n;
}

int vprintf(const char *fmt, va_list ap) {
  int count = 0;
  for (; *fmt; fmt++) {
    if (*fmt != '%') {
      put(*fmt);
      count++;
      continue;
    }
    fmt++;
    int left = 0;
    char pad = ' ';
    for (;; fmt++) {
      if (*fmt == '-') left = 1;
      else if (*fmt == '0') pad = '0';
      else break;
    }
    int width = 0;
    while (*fmt >= '0' && *fmt <= '9') width = width * 10 + (*fmt++ - '0');
    int longs = 0;
    while (*fmt == 'l' || *fmt == 'z') {
      longs += *fmt == 'z' ? (sizeof(size_t) == 8 ? 2 : 1) : 1;
      fmt++;
    }
    char buf[24];
    int len = 0;
    uint64_t v = 0;
    int neg = 0;
    switch (*fmt) {
      case 'c':
        buf[0] = (char)va_arg(ap, int);
        count += emit(buf, 1, width, left, ' ');
        continue;
      case 's': {
        const char *s = va_arg(ap, const char *);
        if (!s) s = "(null)";
        int l = 0;
        while (s[l]) l++;
        count += emit(s, l, width, left, ' ');
        continue;
      }
      case 'd':
      case 'i': {
        int64_t sv = longs >= 2 ? va_arg(ap, long long) : longs == 1 ? va_arg(ap, long) : va_arg(ap, int);
        neg = sv < 0;
        v = neg ? (uint64_t)0 - (uint64_t)sv : (uint64_t)sv;
        goto decimal;
      }
      case 'u':
        v = longs >= 2 ? va_arg(ap, unsigned long long)
            : longs == 1 ? va_arg(ap, unsigned long)
                         : va_arg(ap, unsigned);
      decimal: {
        char tmp[24];
        int t = 0;
        do {
          unsigned r;
          v = divmod10(v, &r);
          tmp[t++] = (char)('0' + r);
        } while (v);
        if (neg) buf[len++] = '-';
        while (t) buf[len++] = tmp[--t];
        break;
      }
      case 'p':
        v = (uintptr_t)va_arg(ap, void *);
        buf[len++] = '0';
        buf[len++] = 'x';
        goto hex;
      case 'x':
      case 'X':
        v = longs >= 2 ? va_arg(ap, unsigned long long)
            : longs == 1 ? va_arg(ap, unsigned long)
                         : va_arg(ap, unsigned);
      hex: {
        const char *digits = *fmt == 'X' ? "0123456789ABCDEF" : "0123456789abcdef";
        char tmp[16];
        int t = 0;
        do {
          tmp[t++] = digits[v & 15];
          v >>= 4;
        } while (v);
        while (t) buf[len++] = tmp[--t];
        break;
      }
      case '%':
        put('%');
        count++;
        continue;
      case '\0':
        return count;
      default: /* unknown conversion: print it as is */
        put('%');
        put(*fmt);
        count += 2;
        continue;
    }
    count += emit(buf, len, width, left, pad);
  }
  return count;
}

int printf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vprintf(fmt, ap);
  va_end(ap);
  return n;
}

int puts(const char *s) {
  int n = 0;
  while (*s) {
    put(*s++);
    n++;
  }
  put('\n');
  return n + 1;
}
