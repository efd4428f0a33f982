// virtio-rng (entropy device, id 4): one queue of device-writable buffers that the device fills with random
// bytes. The entropy source is injected (the host's CSPRNG through a pool in the VMM, a seeded generator in
// tests).
import { randomFillSync } from "node:crypto";
import { DEVICE_ID } from "./constants.js";
import type { VirtioContext, VirtioDevice } from "./device.js";
import type { ChainBuffers } from "./chain-io.js";
import type { SplitQueue } from "./virtqueue.js";

/** Fills `buf` with random bytes. */
export type EntropySource = (buf: Uint8Array) => void;

/** The host's CSPRNG, one call per buffer (OpenSSL's RAND_bytes through node:crypto). */
export const cryptoEntropy: EntropySource = (buf) => {
  randomFillSync(buf);
};

/** Bytes the default entropy pool holds. */
export const ENTROPY_POOL_BYTES = 64 * 1024;

/**
 * An EntropySource that hands out the bytes of a pool filled from `source` `poolBytes` at a time, each byte
 * once, and refills the pool when it is used up. A call into the CSPRNG costs ~2 µs here whatever its size,
 * more than copying 4 KiB; one call per 64 KiB instead of one per request (Linux asks for 64 bytes at a
 * time) takes that off each request. The pool is filled when this is made, so the CSPRNG's own start-up
 * (node:crypto and OpenSSL, milliseconds in a new thread) happens with the device, not in the guest's first
 * request.
 */
export function pooledEntropy(
  source: EntropySource = cryptoEntropy,
  poolBytes = ENTROPY_POOL_BYTES,
): EntropySource {
  const pool = new Uint8Array(poolBytes);
  source(pool);
  let used = 0;
  return (buf) => {
    for (let done = 0; done < buf.length;) {
      if (used === pool.length) {
        source(pool);
        used = 0;
      }
      const n = Math.min(buf.length - done, pool.length - used);
      buf.set(pool.subarray(used, used + n), done);
      used += n;
      done += n;
    }
  };
}

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

  counters(): Record<string, number> {
    return { "bytes served": this.bytesServed };
  }
  private readonly fillView: (view: Uint8Array) => void;
  /** One request (made once: nothing is allocated per request). */
  private readonly serveChain = (chain: ChainBuffers): number => {
    if (chain.writer.length === 0) this.ctx?.trace(`request ${chain.head} has no device-writable buffer`);
    const n = chain.writer.fill(RNG_MAX_BYTES_PER_REQUEST, this.fillView);
    this.bytesServed += n;
    return n;
  };

  /** `entropy`: where the bytes come from; by default the host's CSPRNG through a pool (pooledEntropy). */
  constructor(entropy: EntropySource = pooledEntropy()) {
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
    q.serveAll(ctx.memory, this.serveChain);
    ctx.notifyUsed(q);
  }
}
