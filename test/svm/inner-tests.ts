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
  // No /dev/kvm in these: pure decoders and device state machines give the same results on any backend.
  "test/arch/vmx-decode.test.ts": "decodes saved VMX MSR dumps; no KVM",
  "test/devices/bus.test.ts": "device bus state machine; no KVM",
  "test/devices/byte-queue.test.ts": "device helper; no KVM",
  "test/devices/legacy-devices.test.ts": "device state machines; no KVM",
  "test/devices/uart16550.test.ts": "device state machine; no KVM",
  "test/virtio/devices.test.ts": "virtio device state machines over plain buffers; no KVM",
  "test/virtio/transport.test.ts": "virtio-mmio transport state machine; no KVM",
  "test/virtio/virtqueue.test.ts": "split virtqueue over plain buffers; no KVM",
  "test/observer/module-tree.test.ts": "reads a fake vmtool.ko debugfs tree; no KVM",
  "test/guest/build.test.ts":
    "builds the guests with gcc and make (not inside); the images themselves are carried in",
  "test/kernel/module.test.ts": "boots its own kernel under QEMU (not inside)",
};
