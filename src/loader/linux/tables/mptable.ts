// The Intel MultiProcessor Specification 1.4 tables, what a kernel booted with `acpi=off` (or without ACPI)
// finds the vCPUs and the IOAPIC through: the MP floating pointer structure (16 bytes, found by the kernel's
// scan of the BIOS area) and the configuration table it points at, with one processor entry per vCPU, the ISA
// bus, KVM's IOAPIC, an I/O interrupt entry per ISA IRQ (identity-mapped onto the IOAPIC's pins, as KVM's
// default routing wires them; IRQ 2, the 8259 cascade, has none), and the local interrupts every BIOS reports:
// ExtINT on LINT0, NMI on LINT1. The floating pointer's feature byte 2 leaves IMCR clear: virtual wire mode.
import { LAYOUT } from "../../../vm/machine-layout.js";
import { setChecksum } from "./acpi.js";

export const MP_FLOATING_SIZE = 16;
const MP_HEADER_SIZE = 44;
const ENTRY = { PROCESSOR: 0, BUS: 1, IOAPIC: 2, IO_INTERRUPT: 3, LOCAL_INTERRUPT: 4 } as const;
const INT_TYPE = { INT: 0, NMI: 1, EXTINT: 3 } as const;
/** Local APIC version (integrated APIC, as KVM's reports) and IOAPIC version (KVM's IOAPIC). */
const LAPIC_VERSION = 0x14;
const IOAPIC_VERSION = 0x11;
const CPU_ENABLED = 0x01;
const CPU_BOOTSTRAP = 0x02;
/** CPU signature (family 6) and feature flags (FPU, APIC) of the processor entries; Linux reads neither. */
const CPU_SIGNATURE = 0x600;
const CPU_FEATURES = 0x201;
const ISA_IRQS = 16;
const CASCADE_IRQ = 2;
/** Destination "every local APIC" of a local interrupt entry. */
const ALL_LAPICS = 0xff;

function ascii(s: string, len: number): number[] {
  return Array.from({ length: len }, (_, i) => (i < s.length ? s.charCodeAt(i) : 0x20));
}
function le16(n: number): number[] {
  return [n & 0xff, (n >>> 8) & 0xff];
}
function le32(n: number): number[] {
  return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];
}

/** The configuration table ("PCMP") for `cpus` vCPUs, checksummed. */
export function mpConfigTable(cpus: number): Uint8Array {
  const entries: number[][] = [];
  for (let i = 0; i < cpus; i++)
    entries.push([
      ENTRY.PROCESSOR,
      i,
      LAPIC_VERSION,
      CPU_ENABLED | (i === 0 ? CPU_BOOTSTRAP : 0),
      ...le32(CPU_SIGNATURE),
      ...le32(CPU_FEATURES),
      ...new Array<number>(8).fill(0),
    ]);
  const busId = 0;
  entries.push([ENTRY.BUS, busId, ...ascii("ISA", 6)]);
  const ioapicId = cpus;
  entries.push([ENTRY.IOAPIC, ioapicId, IOAPIC_VERSION, 0x01, ...le32(LAYOUT.IOAPIC)]);
  for (let irq = 0; irq < ISA_IRQS; irq++)
    if (irq !== CASCADE_IRQ)
      entries.push([ENTRY.IO_INTERRUPT, INT_TYPE.INT, ...le16(0), busId, irq, ioapicId, irq]);
  entries.push([ENTRY.LOCAL_INTERRUPT, INT_TYPE.EXTINT, ...le16(0), busId, 0, ALL_LAPICS, 0]);
  entries.push([ENTRY.LOCAL_INTERRUPT, INT_TYPE.NMI, ...le16(0), busId, 0, ALL_LAPICS, 1]);
  const body = entries.flat();
  const t = Uint8Array.from([
    ...ascii("PCMP", 4),
    ...le16(MP_HEADER_SIZE + body.length),
    4, // specification revision 1.4
    0, // checksum
    ...ascii("VMTOOL", 8),
    ...ascii("VMTOOL LINUX", 12),
    ...le32(0), // no OEM table
    ...le16(0),
    ...le16(entries.length),
    ...le32(LAYOUT.LAPIC),
    ...le16(0), // no extended entries
    0,
    0,
    ...body,
  ]);
  setChecksum(t, 7);
  return t;
}

/** The floating pointer structure ("_MP_") pointing at the configuration table at `configAddr`. */
export function mpFloatingPointer(configAddr: number): Uint8Array {
  const t = Uint8Array.from([...ascii("_MP_", 4), ...le32(configAddr), 1, 4, 0, 0, 0, 0, 0, 0]);
  setChecksum(t, 10);
  return t;
}
