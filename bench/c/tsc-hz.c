/* Prints the host's TSC frequency in Hz (TSC ticks over 200 ms of CLOCK_MONOTONIC), so that bench/virtio.mjs
 * can turn the guests' TSC counts into seconds. The guest reads the same TSC under KVM (no TSC scaling). */
#include <stdio.h>
#include <time.h>
#include <x86intrin.h>

static double ns(const struct timespec *a, const struct timespec *b) {
  return (double)(b->tv_sec - a->tv_sec) * 1e9 + (double)(b->tv_nsec - a->tv_nsec);
}

int main(void) {
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  unsigned long long t0 = __rdtsc();
  do clock_gettime(CLOCK_MONOTONIC, &b);
  while (ns(&a, &b) < 2e8);
  unsigned long long t1 = __rdtsc();
  printf("%.0f\n", (double)(t1 - t0) / (ns(&a, &b) / 1e9));
  return 0;
}
