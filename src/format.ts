// Number formatting shared by every layer's messages. No imports: any layer may use it.

/** `0x` and the hexadecimal digits of `n`, at least `width` of them (zero-padded). */
export function hex(n: number | bigint, width = 0): string {
  return `0x${n.toString(16).padStart(width, "0")}`;
}
