// The contract between the virtio-mmio transport and a virtio device type (rng, console, blk). The
// transport owns registers, feature negotiation, status and queues; the device owns its configuration
// space and what a request means. Like every device here, neither does I/O of its own: entropy, output,
// input and block storage come in through injected functions and interfaces.
import type { GuestMemory } from "../../memory/guest-memory.js";
import type { SplitQueue } from "./virtqueue.js";

/** What the transport gives a device once the driver has set DRIVER_OK. */
export interface VirtioContext {
  readonly memory: GuestMemory;
  readonly queues: readonly SplitQueue[];
  /** Raise the used-buffer interrupt if the queue's driver asked for one (EVENT_IDX / NO_INTERRUPT). */
  notifyUsed(queue: SplitQueue): void;
  /** Run processQueue(queue) now, guarded like a notify (for device-side events such as new input). */
  kick(queue: SplitQueue): void;
  /** The device changed its configuration space: bump ConfigGeneration and raise the config interrupt. */
  configChanged(): void;
  /** Report a diagnostic line (printed under `vmtool run --trace`). */
  trace(message: string): void;
}

export interface VirtioDevice {
  /** Short type name for messages, e.g. "virtio-blk". */
  readonly type: string;
  readonly deviceId: number;
  /** Device-type feature bits offered (the transport adds VERSION_1, INDIRECT_DESC and EVENT_IDX). */
  readonly features: bigint;
  /** Maximum size of each queue; the length is the number of queues. */
  readonly queueMaxSizes: readonly number[];
  /** The device configuration space (its length is the config size); read by the transport. */
  readonly config: Uint8Array;
  /** A driver write to the configuration space (already bounds-checked); most fields are read-only. */
  writeConfig?(offset: number, data: Uint8Array): void;
  /** The driver set DRIVER_OK: the queues are usable. `features` is what was negotiated. */
  activate(ctx: VirtioContext, features: bigint): void;
  /** The driver notified `queue` (or the device was just activated): take and complete its chains. */
  processQueue(queue: SplitQueue): void;
  /** Device reset: drop all state that the driver set up. */
  reset(): void;
  /** What the device counted (requests, bytes, drops), by name, for `vmtool run --stats`. */
  counters?(): Record<string, number>;
}
