/* QEMU has no halt detection: the benchmark guests end there through isa-debug-exit (status (1 << 1) | 1). */
int bench_main(void);
int main(void) {
  bench_main();
  return 1;
}
