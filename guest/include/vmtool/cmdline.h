/* The command line vmtool hands a guest (`--cmdline`; vmtool_cmdline(bi) in vmtool/boot_info.h, or the
 * Multiboot information's cmdline), read as words separated by spaces, tabs or newlines (no quoting).
 * Matching is by whole word or whole key: vmtool appends one word `virtio_mmio.device=SIZE@BASE:IRQ` per
 * virtio device after the user's text (Linux's syntax), and a search for "virtio", "device" or "mmio" must
 * not find those by accident. Header-only. */
#ifndef VMTOOL_CMDLINE_H
#define VMTOOL_CMDLINE_H

#include <stddef.h>

static inline int vmtool_cmdline_space(char c) { return c == ' ' || c == '\t' || c == '\n'; }

/* The word of the command line that starts with `prefix` and goes on with `next` (or ends, when next is 0):
 * its first character after the prefix, or 0 when there is none. */
static inline const char *vmtool_cmdline_find(const char *cmdline, const char *prefix, char next) {
  for (const char *w = cmdline; *w;) {
    while (vmtool_cmdline_space(*w)) w++;
    const char *c = w, *p = prefix;
    while (*p && *c == *p) c++, p++;
    if (*w && !*p && (next ? *c == next : *c == 0 || vmtool_cmdline_space(*c))) return c;
    while (*w && !vmtool_cmdline_space(*w)) w++;
  }
  return 0;
}

/* Whether `word` is one of the words: "quiet" matches the word quiet, not quietly nor quiet=1. */
static inline int vmtool_cmdline_has(const char *cmdline, const char *word) {
  return *word && vmtool_cmdline_find(cmdline, word, 0) != 0;
}

/* The value of the first word `key=value`: copied into buf (NUL-terminated, cut to size - 1 bytes when it is
 * longer); returns the value's whole length (0 for `key=`), or -1 when no word has that key. */
static inline int vmtool_cmdline_value(const char *cmdline, const char *key, char *buf, size_t size) {
  const char *v = *key ? vmtool_cmdline_find(cmdline, key, '=') : 0;
  if (!v) return -1;
  v++; /* past '=' */
  int len = 0;
  for (; v[len] && !vmtool_cmdline_space(v[len]); len++)
    if ((size_t)len + 1 < size) buf[len] = v[len];
  if (size > 0) buf[(size_t)len < size ? (size_t)len : size - 1] = 0;
  return len;
}

#endif
