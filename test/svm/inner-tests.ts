// Which test files run inside the kvm_amd VM (kvm-amd.test.ts), and why each other one does not.
// Inside there is Node, busybox, the compiled project, its runtime node_modules and build/guest (guests built
// on the host by `make -C guest`); there is no gcc, binutils, gdb, QEMU or network.

/** Test files (paths as in the repository) run inside under kvm_amd, each with `node --test`. */
export const INNER_TESTS: readonly string[] = [
  // src/kvm on its own: real-mode and long-mode guests, port I/O, MMIO exits, the reset state.
  "test/svm/kvm-smoke.test.ts",
];

/** Test files that do not run inside, with the reason. */
export const NOT_INSIDE: Readonly<Record<string, string>> = {
  "test/kvm/caps.test.ts":
    "compiles C against <linux/kvm.h> with gcc (not inside); the numbers it checks do not depend on the backend",
  "test/kvm/struct-layout.test.ts":
    "compiles C against <linux/kvm.h> with gcc (not inside); struct layouts do not depend on the backend",
  "test/svm/kvm-amd.test.ts": "this harness itself: it boots the QEMU VM",
};
