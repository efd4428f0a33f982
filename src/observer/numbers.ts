// The numbers the observer reads from files (KVM's statistics, pids, CPU and vCPU numbers in folder names,
// /proc fields) are decimal as the kernel prints them: digits only. Number() would also take "-5", "1e5",
// "0x10", "" (as 0) and 20-digit values it cannot hold exactly; none of them is shown as if the file said so.

/** Linux's PID_MAX_LIMIT on 64-bit: no pid or thread id is larger. */
export const PID_MAX = 4 * 1024 * 1024;
/** A C int: file descriptors, CPU numbers, vCPU ids. */
export const INT_MAX = 0x7fff_ffff;

/** `text` as a non-negative decimal integer of at most `max` (default: the largest a Number holds exactly). */
export function parseDecimal(text: string, max = Number.MAX_SAFE_INTEGER): number | null {
  if (!/^\d{1,16}$/.test(text)) return null;
  const v = Number(text);
  return v <= max ? v : null;
}
