/* A tiny printf for guests: %c %s %d %i %u %x %X %p %%, flags '0' and '-', a width, and the length
 * modifiers l and ll (z too). Output goes byte by byte through a put function (the debug console by
 * default). No floating point (guests are built with -mgeneral-regs-only). */
#ifndef VMTOOL_PRINTF_H
#define VMTOOL_PRINTF_H

#include <stdarg.h>

typedef void (*vmtool_putc_fn)(char c);

/* Where printf writes; the default is the debug console (port 0xE9). Returns the previous function. */
vmtool_putc_fn vmtool_set_putc(vmtool_putc_fn fn);
int printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int vprintf(const char *fmt, va_list ap);
int puts(const char *s); /* writes s and a newline */

#endif
