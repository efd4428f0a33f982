// vmtool's exit statuses, documented in README.md ("Exit statuses").
// Odd statuses 1..255 belong to the guest: a write of V to the exit port (0xF4) ends vmtool with (V << 1) | 1,
// QEMU's isa-debug-exit convention. vmtool's own statuses are therefore even, so the two never collide.
export const ExitCode = {
  OK: 0,
  /** Bad usage or bad input: unknown option, wrong number, missing/truncated/unsupported file. */
  USAGE: 2,
  /** The guest faulted: triple fault, failed VM entry, KVM internal error, a vCPU that cannot go on. */
  GUEST_FAULT: 4,
  /** The host cannot do it: /dev/kvm missing or not accessible, a needed KVM capability missing. */
  HOST_UNSUPPORTED: 6,
  /** A bug or an unexpected system error inside vmtool. */
  INTERNAL: 8,
  /** Interrupted by SIGINT/SIGTERM (128 + 2). */
  INTERRUPTED: 130,
} as const;
export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];
