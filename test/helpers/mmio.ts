// MMIO accesses as numbers, for tests that drive a device's registers by hand (devices take byte slices).
import type { MmioDevice } from "../../src/devices/types.js";

/** Read `size` bytes at `offset` as a little-endian number. */
export function readMmio(dev: MmioDevice, offset: number, size: number): bigint {
  const data = new Uint8Array(size);
  dev.mmioRead(offset, data);
  let v = 0n;
  for (let i = size - 1; i >= 0; i--) v = (v << 8n) | BigInt(data[i]);
  return v;
}

/** Write the low `size` bytes of `value` at `offset`, little-endian. */
export function writeMmio(dev: MmioDevice, offset: number, size: number, value: bigint): void {
  const data = new Uint8Array(size);
  for (let i = 0; i < size; i++) data[i] = Number((value >> BigInt(8 * i)) & 0xffn);
  dev.mmioWrite(offset, data);
}
