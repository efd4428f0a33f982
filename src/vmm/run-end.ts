// How a run ended, as the threads and the main thread report it. No exit statuses here: the CLI turns a RunEnd
// into one (src/cli/exit-status.ts, README "Exit statuses"). No imports: the threads load this file.

/** Why a run ended. `reason` is one line for a person. */
export type RunEnd =
  /** The guest halted with nothing left to wake it, or shut itself down. */
  | { kind: "halted"; reason: string }
  /** The guest powered the machine off (ACPI S5 through the FADT's sleep control register: Linux's `poweroff`). */
  | { kind: "poweroff"; reason: string }
  /** The guest reset the machine (the i8042's reset line: Linux's `reboot=k`, and its panic with `panic=-1`). */
  | { kind: "reset"; reason: string }
  /** The guest wrote `value` to the exit port. */
  | { kind: "exit-port"; value: number; reason: string }
  /** The guest cannot go on: triple fault, failed VM entry, KVM internal error (a dump was printed). */
  | { kind: "fault"; reason: string }
  /** Stopped on request: an exit hook, or the library's caller. */
  | { kind: "stopped"; reason: string }
  /** The introspection tool did not answer an event in time and the run was to stop then. */
  | { kind: "peer"; reason: string }
  /** The process got a terminating signal. */
  | { kind: "signal"; signal: TerminatingSignal; reason: string }
  /** The person at the terminal typed the escape sequence (Ctrl-A x). */
  | { kind: "escape"; reason: string }
  /** Standard output was closed by its reader (EPIPE): nobody reads the guest's output any more. */
  | { kind: "output-closed"; reason: string }
  /** Writing the guest's output failed (ENOSPC, EIO...): the output is incomplete. */
  | { kind: "output-failed"; reason: string }
  /** A bug in vmtool. */
  | { kind: "internal"; reason: string };

export type RunEndKind = RunEnd["kind"];

/** The signals that end a run cleanly (the guest's output flushed, the terminal restored). */
export const TERMINATING_SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT"] as const;
export type TerminatingSignal = (typeof TERMINATING_SIGNALS)[number];
