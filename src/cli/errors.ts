// Errors that end a command with one clear line and a documented exit status (see exit-codes.ts).
import { ExitCode } from "./exit-codes.js";

/** An error meant for the user: its message is printed as one line, and the process exits with `exitCode`. */
export class VmtoolError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = ExitCode.INTERNAL,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** Bad usage or bad input (exit 2). */
export class UsageError extends VmtoolError {
  constructor(message: string) {
    super(message, ExitCode.USAGE);
  }
}

/** The host cannot do what was asked (exit 6): no /dev/kvm, a missing capability, no permission. */
export class HostError extends VmtoolError {
  constructor(message: string) {
    super(message, ExitCode.HOST_UNSUPPORTED);
  }
}

/** Parse an integer option: decimal, 0x hex, 0o octal or 0b binary, with optional K/M/G suffix (powers of 1024). */
export function parseIntOption(
  text: string,
  what: string,
  opts: { min?: bigint; max?: bigint } = {},
): bigint {
  const m = /^(0x[0-9a-f]+|0o[0-7]+|0b[01]+|[0-9]+)([kmg]i?b?)?$/i.exec(text.trim().replace(/_/g, ""));
  if (!m) throw new UsageError(`${what}: '${text}' is not a number (decimal, 0x hex, optional K/M/G suffix)`);
  let value = BigInt(m[1]);
  const suffix = (m[2] ?? "").charAt(0).toLowerCase();
  if (suffix === "k") value <<= 10n;
  else if (suffix === "m") value <<= 20n;
  else if (suffix === "g") value <<= 30n;
  if (opts.min !== undefined && value < opts.min)
    throw new UsageError(`${what}: ${text} is below the minimum ${fmtNum(opts.min)}`);
  if (opts.max !== undefined && value > opts.max)
    throw new UsageError(`${what}: ${text} is above the maximum ${fmtNum(opts.max)}`);
  return value;
}

function fmtNum(v: bigint): string {
  return v >= 0x10000n ? `0x${v.toString(16)}` : v.toString();
}
