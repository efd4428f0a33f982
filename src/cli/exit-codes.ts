// vmtool's exit statuses, documented in README.md ("Exit statuses"); exit-status.ts says which error or run end
// gives which. Odd statuses 1..255 belong to the guest: a write of V to the exit port (0xF4) ends vmtool with
// (V << 1) | 1, QEMU's isa-debug-exit convention. vmtool's own statuses below 128 are therefore even, so the
// two never collide; 128 + n is the shells' convention for "ended by signal n".
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
  /** The guest's output could not be written to standard output (disk full, I/O error): it is incomplete. */
  OUTPUT_FAILED: 10,
  /**
   * The other end of a connection went away, stopped answering or broke its protocol: the VMM of
   * `vmtool introspect`, or the tool of `vmtool run --introspect` with `--introspect-on-timeout stop`.
   */
  PEER: 12,
  /** The guest reset the machine (a Linux guest's reboot through the i8042, or its panic with panic=-1). */
  GUEST_RESET: 14,
  /** `run --gdb`: the debugger killed the guest (gdb's `kill`). */
  GDB_KILLED: 16,
  /** SIGHUP (128 + 1): the terminal hung up. */
  HANGUP: 129,
  /** SIGINT (128 + 2): Ctrl-C, or Ctrl-A x typed on a raw terminal. */
  INTERRUPTED: 130,
  /** SIGQUIT (128 + 3). */
  QUIT: 131,
  /** Standard output's reader went away (EPIPE), as for a program killed by SIGPIPE (128 + 13). */
  OUTPUT_CLOSED: 141,
  /** SIGTERM (128 + 15). */
  TERMINATED: 143,
} as const;
export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];
