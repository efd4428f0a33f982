// The virtio-mmio transport, virtio 1.x "modern" (register layout version 2): the registers a driver uses to
// find the device, negotiate features, set up queues, notify and acknowledge interrupts, plus the device's
// configuration space at 0x100. A plain state machine: register accesses come in through mmioRead/Write,
// and it reports interrupts through an IrqLine and diagnostics through a trace function.
//
// The guest is hostile: a bad register access is ignored (with a trace line), and a broken queue marks the
// device DEVICE_NEEDS_RESET (with a configuration-change interrupt, as the spec asks) and stops it until the
// driver resets it. No exception leaves mmioRead/mmioWrite/notify for anything the guest does.
import { GuestMemoryError, type GuestMemory } from "../../memory/guest-memory.js";
import type { IrqLine, MmioDevice } from "../types.js";
import {
  F,
  INT,
  MMIO_MAGIC,
  MMIO_REG as R,
  MMIO_VERSION,
  STATUS,
  VMTOOL_VENDOR_ID,
  bit,
} from "./constants.js";
import type { VirtioContext, VirtioDevice } from "./device.js";
import { SplitQueue, VirtqueueError } from "./virtqueue.js";

export interface VirtioMmioOptions {
  memory: GuestMemory;
  irq: IrqLine;
  /** Where trace lines go (the run loop prints them under --trace); the default drops them. */
  trace?: (line: string) => void;
  /** Name in messages (default: the device type and base address if given). */
  name?: string;
  /** Offer VIRTIO_F_INDIRECT_DESC / VIRTIO_F_EVENT_IDX (default: both). */
  indirect?: boolean;
  eventIdx?: boolean;
}

/** Features every vmtool virtio device offers on top of its own. */
function transportFeatures(opts: VirtioMmioOptions): bigint {
  let f = bit(F.VERSION_1);
  if (opts.indirect ?? true) f |= bit(F.INDIRECT_DESC);
  if (opts.eventIdx ?? true) f |= bit(F.EVENT_IDX);
  return f;
}

const U32 = 0xffff_ffffn;

export class VirtioMmioTransport implements MmioDevice {
  readonly name: string;
  readonly queues: readonly SplitQueue[];
  /** Everything the device offers (device-type bits and transport bits). */
  readonly deviceFeatures: bigint;

  private status = 0;
  private deviceFeaturesSel = 0;
  private driverFeaturesSel = 0;
  private driverFeatures = 0n;
  private negotiated = 0n;
  private queueSel = 0;
  private interruptStatus = 0;
  private configGeneration = 0;
  private irqHigh = false;
  /** Why the device stopped (DEVICE_NEEDS_RESET), for --trace and tests. */
  brokenReason?: string;
  private readonly memory: GuestMemory;
  private readonly irq: IrqLine;
  private readonly traceSink: (line: string) => void;
  private readonly ctx: VirtioContext;

  constructor(
    readonly device: VirtioDevice,
    opts: VirtioMmioOptions,
  ) {
    this.name = opts.name ?? device.type;
    this.memory = opts.memory;
    this.irq = opts.irq;
    this.traceSink = opts.trace ?? (() => {});
    this.deviceFeatures = device.features | transportFeatures(opts);
    this.queues = device.queueMaxSizes.map((max, i) => new SplitQueue(i, max));
    this.ctx = {
      memory: this.memory,
      queues: this.queues,
      notifyUsed: (q) => {
        if (q.needsInterrupt()) this.raise(INT.VRING);
      },
      kick: (q) => this.process(q),
      configChanged: () => {
        this.configGeneration = (this.configGeneration + 1) >>> 0;
        if (this.status & STATUS.DRIVER_OK) this.raise(INT.CONFIG);
      },
      trace: (m) => this.trace(m),
    };
  }

  /** The device status register as the driver reads it. */
  get deviceStatus(): number {
    return this.status;
  }

  /** Features both sides agreed on (valid once FEATURES_OK is set). */
  get features(): bigint {
    return this.negotiated;
  }

  get driverOk(): boolean {
    return (this.status & (STATUS.DRIVER_OK | STATUS.DEVICE_NEEDS_RESET)) === STATUS.DRIVER_OK;
  }

  private trace(message: string): void {
    this.traceSink(`${this.name}: ${message}`);
  }

  mmioRead(offset: number, data: Uint8Array): void {
    if (offset >= R.CONFIG) return this.readConfig(offset - R.CONFIG, data);
    if (data.length !== 4 || offset % 4 !== 0) {
      this.trace(
        `${data.length}-byte read at register offset 0x${offset.toString(16)} ignored (registers are 32-bit)`,
      );
      data.fill(0);
      return;
    }
    const v = this.readRegister(offset);
    data[0] = v & 0xff;
    data[1] = (v >>> 8) & 0xff;
    data[2] = (v >>> 16) & 0xff;
    data[3] = v >>> 24;
  }

  mmioWrite(offset: number, data: Uint8Array): void {
    if (offset >= R.CONFIG) return this.writeConfig(offset - R.CONFIG, data);
    if (data.length !== 4 || offset % 4 !== 0) {
      this.trace(
        `${data.length}-byte write at register offset 0x${offset.toString(16)} ignored (registers are 32-bit)`,
      );
      return;
    }
    this.writeRegister(offset, (data[0] | (data[1] << 8) | (data[2] << 16) | (data[3] << 24)) >>> 0);
  }

  private readRegister(offset: number): number {
    const q = this.queues[this.queueSel];
    switch (offset) {
      case R.MAGIC_VALUE:
        return MMIO_MAGIC;
      case R.VERSION:
        return MMIO_VERSION;
      case R.DEVICE_ID:
        return this.device.deviceId;
      case R.VENDOR_ID:
        return VMTOOL_VENDOR_ID;
      case R.DEVICE_FEATURES:
        return this.deviceFeaturesSel > 1
          ? 0
          : Number((this.deviceFeatures >> BigInt(32 * this.deviceFeaturesSel)) & U32);
      case R.QUEUE_NUM_MAX:
        return q ? q.maxSize : 0;
      case R.QUEUE_READY:
        return q?.ready ? 1 : 0;
      case R.INTERRUPT_STATUS:
        return this.interruptStatus;
      case R.STATUS:
        return this.status;
      case R.SHM_LEN_LOW:
      case R.SHM_LEN_HIGH:
      case R.SHM_BASE_LOW:
      case R.SHM_BASE_HIGH:
        return 0xffff_ffff; // no shared memory regions: length and base read as -1
      case R.QUEUE_RESET:
        return 0;
      case R.CONFIG_GENERATION:
        return this.configGeneration;
      default:
        this.trace(`read of write-only or unknown register 0x${offset.toString(16)}`);
        return 0;
    }
  }

  private writeRegister(offset: number, value: number): void {
    switch (offset) {
      case R.DEVICE_FEATURES_SEL:
        this.deviceFeaturesSel = value;
        return;
      case R.DRIVER_FEATURES_SEL:
        this.driverFeaturesSel = value;
        return;
      case R.DRIVER_FEATURES:
        return this.writeDriverFeatures(value);
      case R.QUEUE_SEL:
        this.queueSel = value;
        return;
      case R.QUEUE_NUM:
      case R.QUEUE_READY:
      case R.QUEUE_DESC_LOW:
      case R.QUEUE_DESC_HIGH:
      case R.QUEUE_DRIVER_LOW:
      case R.QUEUE_DRIVER_HIGH:
      case R.QUEUE_DEVICE_LOW:
      case R.QUEUE_DEVICE_HIGH:
        return this.writeQueueRegister(offset, value);
      case R.QUEUE_NOTIFY:
        return this.notify(value);
      case R.INTERRUPT_ACK:
        this.interruptStatus &= ~value;
        this.updateIrq();
        return;
      case R.STATUS:
        return this.writeStatus(value);
      case R.SHM_SEL:
      case R.QUEUE_RESET:
        return; // VIRTIO_F_RING_RESET and shared memory are not offered: nothing to do
      default:
        this.trace(
          `write of 0x${value.toString(16)} to read-only or unknown register 0x${offset.toString(16)} ignored`,
        );
    }
  }

  private writeDriverFeatures(value: number): void {
    if (this.status & STATUS.FEATURES_OK) {
      this.trace("DriverFeatures written after FEATURES_OK: ignored");
      return;
    }
    if (this.driverFeaturesSel > 1) {
      if (value !== 0)
        this.trace(
          `driver accepts unknown features 0x${value.toString(16)} in word ${this.driverFeaturesSel}`,
        );
      return;
    }
    const shift = BigInt(32 * this.driverFeaturesSel);
    this.driverFeatures = (this.driverFeatures & ~(U32 << shift)) | (BigInt(value >>> 0) << shift);
  }

  private writeQueueRegister(offset: number, value: number): void {
    const q = this.queues[this.queueSel];
    if (!q) {
      this.trace(
        `queue register 0x${offset.toString(16)} written with QueueSel=${this.queueSel}, which does not exist`,
      );
      return;
    }
    if (offset === R.QUEUE_READY) return this.setQueueReady(q, value);
    if (q.ready) {
      this.trace(
        `queue ${q.index}: register 0x${offset.toString(16)} written while the queue is ready: ignored`,
      );
      return;
    }
    const setLow = (addr: number) => addr - (addr % 2 ** 32) + value;
    const setHigh = (addr: number) => (addr % 2 ** 32) + value * 2 ** 32; // may exceed 2^53: activate refuses it
    switch (offset) {
      case R.QUEUE_NUM:
        q.size = value;
        return;
      case R.QUEUE_DESC_LOW:
        q.descAddr = setLow(q.descAddr);
        return;
      case R.QUEUE_DESC_HIGH:
        q.descAddr = setHigh(q.descAddr);
        return;
      case R.QUEUE_DRIVER_LOW:
        q.driverAddr = setLow(q.driverAddr);
        return;
      case R.QUEUE_DRIVER_HIGH:
        q.driverAddr = setHigh(q.driverAddr);
        return;
      case R.QUEUE_DEVICE_LOW:
        q.deviceAddr = setLow(q.deviceAddr);
        return;
      case R.QUEUE_DEVICE_HIGH:
        q.deviceAddr = setHigh(q.deviceAddr);
        return;
    }
  }

  private setQueueReady(q: SplitQueue, value: number): void {
    if (value === 0) {
      q.ready = false;
      q.deactivate();
      return;
    }
    if (q.ready) return;
    // Areas are checked now (when the driver commits to them); the queue is used only after DRIVER_OK. A
    // set-up the device refuses never makes the queue ready: QueueReady keeps reading 0.
    this.guard(() => {
      q.indirect = (this.negotiated & bit(F.INDIRECT_DESC)) !== 0n;
      q.eventIdx = (this.negotiated & bit(F.EVENT_IDX)) !== 0n;
      q.activate(this.memory);
      q.ready = true;
    });
  }

  private writeStatus(value: number): void {
    value &= 0xff;
    if (value === 0) return this.reset();
    const old = this.status;
    // Bits are only ever added by the driver; DEVICE_NEEDS_RESET is the device's own.
    if ((old & ~value & ~STATUS.DEVICE_NEEDS_RESET) !== 0)
      this.trace(`status 0x${value.toString(16)} clears bits of 0x${old.toString(16)} without a reset`);
    let next = (value & ~STATUS.DEVICE_NEEDS_RESET) | (old & STATUS.DEVICE_NEEDS_RESET);
    if (next & STATUS.FEATURES_OK && !(old & STATUS.FEATURES_OK)) {
      const refusal = this.checkFeatures();
      if (refusal) {
        this.trace(`FEATURES_OK refused: ${refusal}`);
        next &= ~STATUS.FEATURES_OK;
      } else {
        this.negotiated = this.driverFeatures;
      }
    }
    if (next & STATUS.DRIVER_OK && !(old & STATUS.DRIVER_OK) && !(next & STATUS.FEATURES_OK)) {
      this.trace("DRIVER_OK without FEATURES_OK: refused");
      next &= ~STATUS.DRIVER_OK;
    }
    this.status = next;
    if (next & STATUS.DRIVER_OK && !(old & STATUS.DRIVER_OK)) {
      this.guard(() => this.device.activate(this.ctx, this.negotiated));
      // Chains the driver queued (and maybe notified) before DRIVER_OK are handled now.
      for (const q of this.queues) if (q.ready) this.process(q);
    }
  }

  /** Why the driver's feature set cannot be accepted, or undefined when it can. */
  private checkFeatures(): string | undefined {
    const extra = this.driverFeatures & ~this.deviceFeatures;
    if (extra !== 0n) return `driver accepts features not offered (0x${extra.toString(16)})`;
    if ((this.driverFeatures & bit(F.VERSION_1)) === 0n)
      return "VIRTIO_F_VERSION_1 not accepted (legacy drivers are not supported)";
    return undefined;
  }

  private reset(): void {
    this.status = 0;
    this.driverFeatures = this.negotiated = 0n;
    this.deviceFeaturesSel = this.driverFeaturesSel = this.queueSel = 0;
    this.interruptStatus = 0;
    this.brokenReason = undefined;
    for (const q of this.queues) q.reset();
    this.guard(() => this.device.reset());
    this.updateIrq();
  }

  /** QueueNotify: the driver made buffers available in queue `index`. */
  notify(index: number): void {
    const q = this.queues[index];
    if (!q) return this.trace(`notify of queue ${index}, which does not exist`);
    if (this.status & STATUS.DEVICE_NEEDS_RESET) return; // already reported; waiting for the reset
    if (!(this.status & STATUS.DRIVER_OK))
      return this.trace(`notify of queue ${index} before DRIVER_OK: deferred`);
    if (!q.ready) return this.trace(`notify of queue ${index}, which is not ready`);
    this.process(q);
  }

  /** Let the device take chains from `q` (on notify, or when it has new input for the guest). */
  process(q: SplitQueue): void {
    if (!this.driverOk || !q.ready || !q.active) return;
    // guard() inlined: this is the per-request path, and a closure per call is garbage per request.
    try {
      this.device.processQueue(q);
    } catch (e) {
      this.failed(e);
    }
  }

  /**
   * Run device work; a guest-caused error (or, defensively, any other) marks the device broken instead of
   * escaping into the vCPU's exit loop.
   */
  private guard(work: () => void): void {
    try {
      work();
    } catch (e) {
      this.failed(e);
    }
  }

  private failed(e: unknown): void {
    if (e instanceof VirtqueueError || e instanceof GuestMemoryError) this.markBroken(e.message);
    else this.markBroken(`internal error: ${e instanceof Error ? e.message : String(e)}`);
  }

  /** Set DEVICE_NEEDS_RESET and tell the driver with a configuration-change interrupt. */
  markBroken(reason: string): void {
    if (this.status & STATUS.DEVICE_NEEDS_RESET) return;
    this.brokenReason = reason;
    this.trace(`DEVICE_NEEDS_RESET: ${reason}`);
    this.status |= STATUS.DEVICE_NEEDS_RESET;
    for (const q of this.queues) q.deactivate();
    if (this.status & STATUS.DRIVER_OK) {
      this.configGeneration = (this.configGeneration + 1) >>> 0;
      this.raise(INT.CONFIG);
    }
  }

  private raise(bits: number): void {
    this.interruptStatus |= bits;
    this.updateIrq();
  }

  private updateIrq(): void {
    const high = this.interruptStatus !== 0;
    if (high !== this.irqHigh) {
      this.irqHigh = high;
      this.irq.setLevel(high);
    }
  }

  private readConfig(offset: number, data: Uint8Array): void {
    const cfg = this.device.config;
    // Bytes past the end of the configuration space read as zero.
    for (let i = 0; i < data.length; i++) data[i] = offset + i < cfg.length ? cfg[offset + i] : 0;
  }

  private writeConfig(offset: number, data: Uint8Array): void {
    const cfg = this.device.config;
    const device = this.device;
    if (offset + data.length > cfg.length || !device.writeConfig) {
      this.trace(`${data.length}-byte write to configuration offset 0x${offset.toString(16)} ignored`);
      return;
    }
    const copy = data.slice(); // the caller's view is reused
    this.guard(() => device.writeConfig?.(offset, copy));
  }
}
