// virtio-rng (entropy device, id 4): one queue of device-writable buffers that the device fills with random
// bytes. The entropy source is injected (crypto.getRandomValues in the VMM, a seeded generator in tests).
import { DEVICE_ID } from "./constants.js";
import type { VirtioContext, VirtioDevice } from "./device.js";
import type { SplitQueue } from "./virtqueue.js";

/** Fills `buf` with random bytes. */
export type EntropySource = (buf: Uint8Array) => void;

/** The host's CSPRNG (getRandomValues takes at most 64 KiB per call). */
export const cryptoEntropy: EntropySource = (buf) => {
  for (let o = 0; o < buf.length; o += 65536)
    crypto.getRandomValues(buf.subarray(o, Math.min(buf.length, o + 65536)));
};

/**
 * Most bytes given for one request. The spec lets the device fill less than the whole buffer (the used
 * length says how much), so nothing is lost past it; Linux asks for 64 bytes at a time (hw_random's
 * buffer), other drivers for a few KiB.
 */
export const RNG_MAX_BYTES_PER_REQUEST = 64 * 1024;

export class VirtioRng implements VirtioDevice {
  readonly type = "virtio-rng";
  readonly deviceId = DEVICE_ID.ENTROPY;
  readonly features = 0n;
  readonly queueMaxSizes = [256];
  readonly config = new Uint8Array(0);
  private ctx?: VirtioContext;
  /** Bytes handed to the guest so far. */
  bytesServed = 0;
  private readonly fillView: (view: Uint8Array) => void;

  constructor(entropy: EntropySource = cryptoEntropy) {
    this.fillView = (view) => entropy(view);
  }

  activate(ctx: VirtioContext): void {
    this.ctx = ctx;
  }

  reset(): void {
    this.ctx = undefined;
  }

  processQueue(q: SplitQueue): void {
    const ctx = this.ctx;
    if (!ctx) return;
    q.serveAll(ctx.memory, (chain) => {
      if (chain.writer.length === 0) ctx.trace(`request ${chain.head} has no device-writable buffer`);
      const n = chain.writer.fill(RNG_MAX_BYTES_PER_REQUEST, this.fillView);
      this.bytesServed += n;
      return n;
    });
    ctx.notifyUsed(q);
  }
}
