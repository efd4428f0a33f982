// vmtool's machine description (struct vmtool_boot_info, guest/include/vmtool/boot_info.h), written into
// guest memory at LAYOUT.BOOT_INFO before the first instruction. Non-Multiboot guests get its address in
// ESI/RSI. The field offsets are declared once below; a test compiles the C header and compares them.
import { LoadOptionError } from "./errors.js";
import type { GuestMemory } from "../memory/guest-memory.js";
import { IRQS, LAYOUT, PORTS } from "../vm/machine-layout.js";
import { buildMemoryMap, type MemoryMapEntry } from "./memory-map.js";
import type { LoadPlan } from "./types.js";

export const BOOT_INFO_MAGIC = 0x42544d56; // "VMTB" in guest memory (little-endian)
export const BOOT_INFO_VERSION = 1;

/** Offsets and sizes of the three C structs; the only place the TypeScript side knows them. */
export const BOOT_INFO_LAYOUT = {
  vmtool_boot_info: {
    size: 80,
    fields: {
      magic: 0,
      version: 4,
      header_size: 6,
      total_size: 8,
      flags: 12,
      cpu_count: 16,
      mem_entry_count: 20,
      mem_entry_offset: 24,
      mem_entry_size: 28,
      dev_entry_count: 32,
      dev_entry_offset: 36,
      dev_entry_size: 40,
      cmdline_offset: 44,
      cmdline_size: 48,
      reserved: 52,
      mem_size: 56,
      ioapic_base: 64,
      lapic_base: 72,
    },
  },
  vmtool_mem_entry: { size: 24, fields: { base: 0, size: 8, flags: 16, use: 20 } },
  vmtool_dev_entry: {
    size: 48,
    fields: { base: 0, size: 8, kind: 16, space: 20, irq: 24, device_id: 28, name: 32 },
  },
} as const;
const H = BOOT_INFO_LAYOUT.vmtool_boot_info;
const M = BOOT_INFO_LAYOUT.vmtool_mem_entry;
const D = BOOT_INFO_LAYOUT.vmtool_dev_entry;
export const DEV_NAME_MAX = 15;

/** Device kinds (VMTOOL_DEV_* in the C header). */
export const DeviceKind = {
  "debug-console": 1,
  "exit-port": 2,
  "uart-16550": 3,
  "virtio-mmio": 4,
  /** A CPU: its local APIC's window (base, size); device_id is its APIC id. */
  cpu: 5,
  /** The in-kernel i8254 PIT (`--pit`): ports 0x40..0x43, channel 0 on IRQ 0. */
  "pit-8254": 6,
} as const;
export type DeviceKindName = keyof typeof DeviceKind;
export const IRQ_NONE = 0xffffffff;

export interface DeviceDescription {
  kind: DeviceKindName;
  /** Short name for people and guests ("com1"), at most 15 bytes. */
  name: string;
  space: "pio" | "mmio";
  base: number;
  size: number;
  /** ISA IRQ line (PIC/IOAPIC pin), if the device interrupts. */
  irq?: number;
  /** Kind-specific id (the virtio device ID); 0 when absent. */
  deviceId?: number;
}

/** The devices of `vmtool run` in this version, at their standard PC places (machine-layout.ts). */
export const STANDARD_DEVICES: readonly DeviceDescription[] = [
  { kind: "debug-console", name: "debugcon", space: "pio", base: PORTS.DEBUG_CONSOLE, size: 1 },
  { kind: "exit-port", name: "exit", space: "pio", base: PORTS.EXIT, size: 1 },
  { kind: "uart-16550", name: "com1", space: "pio", base: PORTS.COM1, size: 8, irq: IRQS.COM1 },
];

/** The PIT's entry, listed only when the machine has one (`--pit`). */
export const PIT_DEVICE: DeviceDescription = {
  kind: "pit-8254",
  name: "pit",
  space: "pio",
  base: PORTS.PIT,
  size: 4,
  irq: IRQS.PIT,
};

/**
 * The CPUs of a machine with several: one entry each (name "cpuN", its local APIC at LAYOUT.LAPIC, device_id =
 * APIC id = N). A one-CPU machine lists none (cpu_count 1, APIC id 0), so its description is as before.
 */
export function cpuDevices(cpus: number): DeviceDescription[] {
  if (cpus <= 1) return [];
  return Array.from({ length: cpus }, (_, i) => ({
    kind: "cpu" as const,
    name: `cpu${i}`,
    space: "mmio" as const,
    base: LAYOUT.LAPIC,
    size: 0x1000,
    deviceId: i,
  }));
}

/** Longest --cmdline accepted (bytes, UTF-8, without the NUL): it must also fit the Multiboot area. */
export const CMDLINE_MAX = 4095;

/** Refuse a command line the guest could not get whole: too long, or with a NUL byte inside. */
export function checkCmdline(cmdline: string): Uint8Array {
  const bytes = new TextEncoder().encode(cmdline);
  if (bytes.includes(0)) throw new LoadOptionError("--cmdline: contains a NUL character");
  if (bytes.length > CMDLINE_MAX)
    throw new LoadOptionError(`--cmdline: ${bytes.length} bytes is too long (at most ${CMDLINE_MAX})`);
  return bytes;
}

export interface BootInfoInput {
  memSize: number;
  cpus: number;
  devices?: readonly DeviceDescription[];
  cmdline?: string;
  /** The image's segments become KERNEL entries of the memory map. */
  plan?: Pick<LoadPlan, "segments">;
}

/** The bytes of the machine description, as they will sit at LAYOUT.BOOT_INFO. */
export function encodeBootInfo(input: BootInfoInput): { bytes: Uint8Array; memoryMap: MemoryMapEntry[] } {
  const memoryMap = buildMemoryMap(input.memSize, input.plan);
  const devices = input.devices ?? STANDARD_DEVICES;
  const cmd = checkCmdline(input.cmdline ?? "");
  if (!Number.isInteger(input.cpus) || input.cpus < 1)
    throw new LoadOptionError(`bad CPU count ${input.cpus}`);
  const memOff = H.size;
  const devOff = memOff + memoryMap.length * M.size;
  const cmdOff = devOff + devices.length * D.size;
  const total = cmdOff + cmd.length + 1;
  if (total > LAYOUT.BOOT_INFO_MAX)
    throw new LoadOptionError(
      `machine description of ${total} bytes exceeds its ${LAYOUT.BOOT_INFO_MAX}-byte area`,
    );
  const bytes = new Uint8Array(total);
  const v = new DataView(bytes.buffer);
  const f = H.fields;
  v.setUint32(f.magic, BOOT_INFO_MAGIC, true);
  v.setUint16(f.version, BOOT_INFO_VERSION, true);
  v.setUint16(f.header_size, H.size, true);
  v.setUint32(f.total_size, total, true);
  v.setUint32(f.flags, 0, true);
  v.setUint32(f.cpu_count, input.cpus, true);
  v.setUint32(f.mem_entry_count, memoryMap.length, true);
  v.setUint32(f.mem_entry_offset, memOff, true);
  v.setUint32(f.mem_entry_size, M.size, true);
  v.setUint32(f.dev_entry_count, devices.length, true);
  v.setUint32(f.dev_entry_offset, devOff, true);
  v.setUint32(f.dev_entry_size, D.size, true);
  v.setUint32(f.cmdline_offset, cmdOff, true);
  v.setUint32(f.cmdline_size, cmd.length + 1, true);
  v.setBigUint64(f.mem_size, BigInt(input.memSize), true);
  v.setBigUint64(f.ioapic_base, BigInt(LAYOUT.IOAPIC), true);
  v.setBigUint64(f.lapic_base, BigInt(LAYOUT.LAPIC), true);
  memoryMap.forEach((e, i) => {
    const o = memOff + i * M.size;
    v.setBigUint64(o + M.fields.base, BigInt(e.base), true);
    v.setBigUint64(o + M.fields.size, BigInt(e.size), true);
    v.setUint32(o + M.fields.flags, e.flags, true);
    v.setUint32(o + M.fields.use, e.use, true);
  });
  devices.forEach((d, i) => {
    const o = devOff + i * D.size;
    const name = new TextEncoder().encode(d.name);
    if (name.length > DEV_NAME_MAX)
      throw new Error(`device name '${d.name}' is longer than ${DEV_NAME_MAX} bytes`);
    v.setBigUint64(o + D.fields.base, BigInt(d.base), true);
    v.setBigUint64(o + D.fields.size, BigInt(d.size), true);
    v.setUint32(o + D.fields.kind, DeviceKind[d.kind], true);
    v.setUint32(o + D.fields.space, d.space === "pio" ? 0 : 1, true);
    v.setUint32(o + D.fields.irq, d.irq ?? IRQ_NONE, true);
    v.setUint32(o + D.fields.device_id, d.deviceId ?? 0, true);
    bytes.set(name, o + D.fields.name);
  });
  bytes.set(cmd, cmdOff);
  return { bytes, memoryMap };
}

/** Write the machine description into guest RAM and return its guest physical address (for ESI/RSI). */
export function writeBootInfo(mem: GuestMemory, input: BootInfoInput): number {
  const { bytes } = encodeBootInfo(input);
  mem.fill(LAYOUT.BOOT_INFO, LAYOUT.BOOT_INFO_MAX, 0);
  mem.write(LAYOUT.BOOT_INFO, bytes);
  return LAYOUT.BOOT_INFO;
}
