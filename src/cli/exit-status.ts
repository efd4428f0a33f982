// The one place that decides how the process ends: from an error's class (every layer throws its own typed
// errors, built on src/errors.ts) and from how a run ended (src/vmm/run-end.ts). Statuses: exit-codes.ts.
import { HostUnsupportedError, InputError, PeerError, VmtoolError } from "../errors.js";
import type { RunEnd, TerminatingSignal } from "../vmm/run-end.js";
import { ExitCode } from "./exit-codes.js";
import { StdoutError } from "./errors.js";

/** The exit status for an error that ended a command. */
export function statusForError(err: unknown): number {
  if (err instanceof StdoutError)
    return err.code === "EPIPE" ? ExitCode.OUTPUT_CLOSED : ExitCode.OUTPUT_FAILED;
  if (err instanceof InputError) return ExitCode.USAGE;
  if (err instanceof HostUnsupportedError) return ExitCode.HOST_UNSUPPORTED;
  if (err instanceof PeerError) return ExitCode.PEER;
  // Any other VmtoolError (a bus overlap, a failing system call...) and anything unexpected is vmtool's bug.
  return ExitCode.INTERNAL;
}

/** Whether the error's message alone says it all (ours are one line for a person; others need a stack). */
export function isOwnError(err: unknown): err is VmtoolError {
  return err instanceof VmtoolError;
}

const SIGNAL_STATUS: Record<TerminatingSignal, number> = {
  SIGHUP: ExitCode.HANGUP,
  SIGINT: ExitCode.INTERRUPTED,
  SIGQUIT: ExitCode.QUIT,
  SIGTERM: ExitCode.TERMINATED,
};

/** The exit status a guest's write of `value` to the exit port asks for, as the OS keeps it (8 bits). */
export function exitPortStatus(value: number): number {
  // (V << 1) | 1, of which the OS keeps the low 8 bits: V = 0..127 map to 1, 3, ..., 255; V = 128 gives 1 again.
  return (((value >>> 0) % 128) * 2 + 1) & 0xff;
}

/** The exit status of `vmtool run` for how the run ended. */
export function statusForRun(end: RunEnd): number {
  switch (end.kind) {
    case "halted":
    case "poweroff":
    case "stopped":
      return ExitCode.OK;
    case "exit-port":
      return exitPortStatus(end.value);
    case "fault":
      return ExitCode.GUEST_FAULT;
    case "peer":
      return ExitCode.PEER;
    case "reset":
      return ExitCode.GUEST_RESET;
    case "signal":
      return SIGNAL_STATUS[end.signal];
    case "escape":
      return ExitCode.INTERRUPTED;
    case "output-closed":
      return ExitCode.OUTPUT_CLOSED;
    case "output-failed":
      return ExitCode.OUTPUT_FAILED;
    case "internal":
      return ExitCode.INTERNAL;
  }
}
