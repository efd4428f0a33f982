// The CLI's own errors and option parsing. Errors of the layers below are their own (src/errors.ts says how);
// exit-status.ts maps every one of them to a status.
import { InputError, VmtoolError } from "../errors.js";

/** Bad usage: an option's value is wrong (exit 2). */
export class UsageError extends InputError {}

/** Standard output could not be written: closed by its reader (EPIPE) or failing (ENOSPC, EIO...). */
export class StdoutError extends VmtoolError {
  constructor(readonly code: string) {
    super(
      code === "EPIPE"
        ? "standard output was closed by its reader (EPIPE)"
        : `cannot write to standard output (${code})`,
    );
  }
}

/**
 * Parse an integer option: decimal, 0x hex, 0o octal or 0b binary, with an optional K/M/G suffix (powers of
 * 1024; a decimal fraction is allowed with a suffix when the result is a whole number of bytes: 3.25G).
 */
export function parseIntOption(
  text: string,
  what: string,
  opts: { min?: bigint; max?: bigint } = {},
): bigint {
  const t = text.trim().replace(/_/g, "");
  const m = /^(0x[0-9a-f]+|0o[0-7]+|0b[01]+|[0-9]+(?:\.[0-9]+)?)([kmg]i?b?)?$/i.exec(t);
  if (!m) throw new UsageError(`${what}: '${text}' is not a number (decimal, 0x hex, optional K/M/G suffix)`);
  const suffix = (m[2] ?? "").charAt(0).toLowerCase();
  const shift = suffix === "k" ? 10n : suffix === "m" ? 20n : suffix === "g" ? 30n : 0n;
  let value: bigint;
  const dot = m[1].indexOf(".");
  if (dot >= 0) {
    // 3.25G: digits and fraction as an exact rational, scaled by the suffix.
    const frac = m[1].slice(dot + 1);
    const scaled = BigInt(m[1].slice(0, dot) + frac) << shift;
    const denom = 10n ** BigInt(frac.length);
    if (shift === 0n || scaled % denom !== 0n)
      throw new UsageError(`${what}: '${text}' is not a whole number${shift === 0n ? "" : " of bytes"}`);
    value = scaled / denom;
  } else value = BigInt(m[1]) << shift;
  if (opts.min !== undefined && value < opts.min)
    throw new UsageError(`${what}: ${text} is below the minimum ${fmtNum(opts.min)}`);
  if (opts.max !== undefined && value > opts.max)
    throw new UsageError(`${what}: ${text} is above the maximum ${fmtNum(opts.max)}`);
  return value;
}

function fmtNum(v: bigint): string {
  return v >= 0x10000n ? `0x${v.toString(16)}` : v.toString();
}
