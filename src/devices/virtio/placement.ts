// Where `vmtool run` puts its virtio-mmio devices and how a guest learns about them: the machine description's
// device entries and Linux's own syntax for devices it cannot discover. No I/O, no KVM: the CLI uses it to
// check options and build the description before any VM exists.
import { LAYOUT } from "../../vm/machine-layout.js";
import { DEVICE_ID, MMIO_WINDOW_SIZE } from "./constants.js";

/** ISA interrupt lines for virtio devices (COM1 has 4; these are free on vmtool's PC). */
export const VIRTIO_IRQS = [5, 6, 7, 9, 10, 11, 12, 14, 15] as const;
/** The most virtio devices one VM gets (one free ISA line each). */
export const MAX_VIRTIO_DEVICES = VIRTIO_IRQS.length;

export type VirtioType = "rng" | "console" | "blk";

/** Queues per device type (rng: requestq; console: receiveq, transmitq; blk: one requestq). */
export const QUEUE_COUNT: Record<VirtioType, number> = { rng: 1, console: 2, blk: 1 };
const DEVICE_IDS: Record<VirtioType, number> = {
  rng: DEVICE_ID.ENTROPY,
  console: DEVICE_ID.CONSOLE,
  blk: DEVICE_ID.BLOCK,
};

/** Where the i-th virtio device sits. */
export function virtioSlot(i: number): { base: number; size: number; irq: number } {
  return { base: LAYOUT.MMIO_BASE + i * MMIO_WINDOW_SIZE, size: MMIO_WINDOW_SIZE, irq: VIRTIO_IRQS[i] };
}

export interface PlannedVirtio {
  type: VirtioType;
  base: number;
  size: number;
  irq: number;
  deviceId: number;
  queues: number;
  /** Name in the machine description (at most 15 bytes). */
  name: string;
  path?: string;
  readOnly?: boolean;
  /**
   * blk: the disk already opened and locked by the caller (src/backends/block-file.ts's descriptor()); the I/O
   * worker then serves it as it is, and the caller closes it after the run. Without it the worker opens `path`.
   */
  opened?: unknown;
}

/** The devices in their fixed order: rng, console, then each disk. */
export function planVirtio(opts: {
  rng?: boolean;
  console?: boolean;
  disks?: readonly { path: string; readOnly: boolean; opened?: unknown }[];
}): PlannedVirtio[] {
  const list: Omit<PlannedVirtio, "base" | "size" | "irq">[] = [];
  const add = (type: VirtioType, name: string, extra: Partial<PlannedVirtio> = {}) =>
    list.push({ type, name, deviceId: DEVICE_IDS[type], queues: QUEUE_COUNT[type], ...extra });
  if (opts.rng) add("rng", "virtio-rng");
  if (opts.console) add("console", "virtio-console");
  (opts.disks ?? []).forEach((d, i) =>
    add("blk", `virtio-blk${i}`, { path: d.path, readOnly: d.readOnly, opened: d.opened }),
  );
  return list.map((d, i) => ({ ...d, ...virtioSlot(i) }));
}

/** Linux's syntax for devices it cannot discover: `virtio_mmio.device=<size>@<base>:<irq>`, one per device. */
export function linuxCmdline(devices: readonly PlannedVirtio[]): string {
  return devices
    .map((d) => `virtio_mmio.device=0x${d.size.toString(16)}@0x${d.base.toString(16)}:${d.irq}`)
    .join(" ");
}
