// The ACPI tables a Linux guest finds vmtool's machine through (ACPI 6.5, chapter 5): an RSDP (revision 2) that
// points at an XSDT, which lists a FADT and a MADT; the FADT points at the DSDT.
// - FADT: hardware-reduced ACPI (no PM1 blocks, no SCI, no GPEs, no PM timer), with the sleep control and
//   status registers on ports PORTS.ACPI_SLEEP and +1: the kernel writes SLP_TYP (from \_S5_) and SLP_EN there
//   to power off. The boot architecture flags say there is no VGA; the CMOS RTC is there; the 8042 is not
//   announced (vmtool's serves only the CPU reset line), so the kernel does not probe for a keyboard.
// - MADT: one local APIC per vCPU (APIC id = vCPU index, as KVM's in-kernel APIC has it), KVM's IOAPIC with
//   GSI base 0, an interrupt source override for ISA IRQ 0 onto GSI 0 (KVM's default routing wires the PIT to
//   IOAPIC pin 0, not pin 2 as PC chipsets do), and LINT1 as NMI on every processor.
// - DSDT: the COM1 UART (PNP0501), the CMOS RTC (PNP0B00) and each virtio-mmio transport (LNRO0005) under
//   \_SB with their ports or MMIO window and interrupt, and \_S5_ (the soft-off sleep type the FADT's sleep
//   register takes). A hardware-reduced kernel sets up no legacy PIC and so no ISA IRQ numbers of its own: a
//   device the DSDT does not name cannot get its interrupt (Linux's built-in rtc_cmos platform device fails
//   its probe on IRQ 8 with -EINVAL), so each ISA device is there with its IRQ.
// Interrupts are edge-triggered, active high: the UART's line is an ISA line and each virtio device raises an
// edge through its irqfd.
import {
  amlConcat as concat,
  device,
  eisaId,
  extendedInterrupt,
  integer,
  ioPorts,
  memory32Fixed,
} from "./aml.js";
import { name, pkg, resourceTemplate, scope, string } from "./aml.js";
import { IRQS, LAYOUT, PORTS } from "../../../vm/machine-layout.js";

/** The machine the tables describe. */
export interface PlatformMachine {
  /** vCPUs; their APIC ids are 0 .. cpus - 1. */
  cpus: number;
  /** The virtio-mmio transports, in vmtool's order (src/devices/virtio/placement.ts). */
  virtio: readonly { base: number; size: number; irq: number }[];
}

export const OEM_ID = "VMTOOL";
const OEM_TABLE_ID = "VMTOOL  ";
const CREATOR_ID = "VMTL";
export const SDT_HEADER_SIZE = 36;
export const RSDP_SIZE = 36;
export const FADT_SIZE = 276;
/** The sleep type \_S5_ names, which the guest writes into the sleep control register to power off. */
export const S5_SLEEP_TYPE = 5;
/** Sleep control register: SLP_TYP in bits 4-2, SLP_EN bit 5 (ACPI 6.5, 4.8.3.7). */
export const SLEEP_CONTROL = { TYPE_SHIFT: 2, TYPE_MASK: 0x1c, ENABLE: 0x20 } as const;
/** Sleep status register: WAK_STS bit 7. */
export const SLEEP_STATUS_WAKE = 0x80;
const FADT_FLAGS = {
  WBINVD: 1 << 0,
  PWR_BUTTON: 1 << 4, // no fixed power button
  SLP_BUTTON: 1 << 5, // no fixed sleep button
  HW_REDUCED_ACPI: 1 << 20,
} as const;
const IAPC_BOOT_ARCH = { VGA_NOT_PRESENT: 1 << 2 } as const;
/** The IBM PC's century byte in CMOS, which src/devices/cmos-rtc.ts keeps. */
const CMOS_CENTURY = 0x32;
/** The COM1 UART's I/O ports. */
const COM1_PORTS = 8;
/** The CMOS RTC's index and data ports (src/devices/cmos-rtc.ts) and its ISA IRQ. */
export const CMOS_PORT = 0x70;
const CMOS_IRQ = 8;

function ascii(s: string, len: number): Uint8Array {
  const out = new Uint8Array(len);
  out.set(new TextEncoder().encode(s).subarray(0, len));
  return out;
}

/** The byte that makes `bytes` sum to 0 (mod 256) when stored at `at` (where a 0 stands now). */
export function setChecksum(bytes: Uint8Array, at: number, from = 0, to = bytes.length): void {
  bytes[at] = 0;
  let sum = 0;
  for (let i = from; i < to; i++) sum += bytes[i];
  bytes[at] = (256 - (sum & 0xff)) & 0xff;
}

/** A System Description Table: the 36-byte header (5.2.6) over `body`, checksummed. */
export function sdt(signature: string, revision: number, body: Uint8Array): Uint8Array {
  const t = new Uint8Array(SDT_HEADER_SIZE + body.length);
  const v = new DataView(t.buffer);
  t.set(ascii(signature, 4), 0);
  v.setUint32(4, t.length, true);
  t[8] = revision;
  t.set(ascii(OEM_ID, 6), 10);
  t.set(ascii(OEM_TABLE_ID, 8), 16);
  v.setUint32(24, 1, true); // OEM revision
  t.set(ascii(CREATOR_ID, 4), 28);
  v.setUint32(32, 1, true); // creator revision
  t.set(body, SDT_HEADER_SIZE);
  setChecksum(t, 9);
  return t;
}

/** RSDP revision 2 (5.2.5.3): no RSDT, the XSDT's address; both checksums. */
export function rsdp(xsdtAddr: number): Uint8Array {
  const t = new Uint8Array(RSDP_SIZE);
  const v = new DataView(t.buffer);
  t.set(ascii("RSD PTR ", 8), 0);
  t.set(ascii(OEM_ID, 6), 9);
  t[15] = 2;
  v.setUint32(16, 0, true);
  v.setUint32(20, RSDP_SIZE, true);
  v.setBigUint64(24, BigInt(xsdtAddr), true);
  setChecksum(t, 8, 0, 20);
  setChecksum(t, 32);
  return t;
}

/** XSDT (5.2.8): 64-bit addresses of the other tables. */
export function xsdt(entries: readonly number[]): Uint8Array {
  const body = new Uint8Array(8 * entries.length);
  const v = new DataView(body.buffer);
  entries.forEach((a, i) => v.setBigUint64(8 * i, BigInt(a), true));
  return sdt("XSDT", 1, body);
}

/** A Generic Address Structure (5.2.3.2) for one byte in I/O space. */
function ioByteRegister(out: DataView, at: number, port: number): void {
  out.setUint8(at, 1); // System I/O
  out.setUint8(at + 1, 8); // bit width
  out.setUint8(at + 2, 0); // bit offset
  out.setUint8(at + 3, 1); // byte access
  out.setBigUint64(at + 4, BigInt(port), true);
}

/** FADT revision 6 (5.2.9), hardware-reduced. Offsets are the table's (header included). */
export function fadt(dsdtAddr: number): Uint8Array {
  const t = new Uint8Array(FADT_SIZE - SDT_HEADER_SIZE);
  const v = new DataView(t.buffer);
  const at = (off: number) => off - SDT_HEADER_SIZE;
  v.setUint32(at(40), dsdtAddr, true); // DSDT (32-bit)
  t[at(108)] = CMOS_CENTURY;
  v.setUint16(at(109), IAPC_BOOT_ARCH.VGA_NOT_PRESENT, true);
  v.setUint32(
    at(112),
    FADT_FLAGS.WBINVD | FADT_FLAGS.PWR_BUTTON | FADT_FLAGS.SLP_BUTTON | FADT_FLAGS.HW_REDUCED_ACPI,
    true,
  );
  t[at(131)] = 0; // FADT minor version
  v.setBigUint64(at(140), BigInt(dsdtAddr), true); // X_DSDT
  ioByteRegister(v, at(244), PORTS.ACPI_SLEEP); // SLEEP_CONTROL_REG
  ioByteRegister(v, at(256), PORTS.ACPI_SLEEP + 1); // SLEEP_STATUS_REG
  t.set(ascii("VMTOOL", 8), at(268)); // hypervisor vendor identity
  return sdt("FACP", 6, t);
}

/** MADT entry types (5.2.12). */
const MADT = { LOCAL_APIC: 0, IO_APIC: 1, SOURCE_OVERRIDE: 2, LOCAL_APIC_NMI: 4 } as const;
/** MPS INTI flags: polarity active high (01), trigger edge (01). */
const INTI_EDGE_HIGH = 0x0005;

/** MADT revision 5 (5.2.12): local APICs, the IOAPIC, the ISA override, LINT1 = NMI. */
export function madt(cpus: number): Uint8Array {
  const parts: number[][] = [];
  for (let i = 0; i < cpus; i++) parts.push([MADT.LOCAL_APIC, 8, i, i, 0x01, 0, 0, 0]); // enabled
  const ioapicId = cpus; // the first id after the processors'
  parts.push([MADT.IO_APIC, 12, ioapicId, 0, ...le32(LAYOUT.IOAPIC), ...le32(0)]);
  parts.push([MADT.SOURCE_OVERRIDE, 10, 0, 0, ...le32(0), ...le16(INTI_EDGE_HIGH)]); // bus ISA, IRQ 0 -> GSI 0
  parts.push([MADT.LOCAL_APIC_NMI, 6, 0xff, ...le16(INTI_EDGE_HIGH), 1]); // every processor, LINT1
  const head = [...le32(LAYOUT.LAPIC), ...le32(0)]; // no PC-AT 8259s for the OS to use
  return sdt("APIC", 5, Uint8Array.from([...head, ...parts.flat()]));
}

function le16(n: number): number[] {
  return [n & 0xff, (n >>> 8) & 0xff];
}
function le32(n: number): number[] {
  return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];
}

const EDGE_HIGH = { edge: true, activeLow: false, shared: false } as const;

/** The DSDT's AML: \_SB.COM1, \_SB.RTC, \_SB.Vnnn for each virtio-mmio transport, \_S5_. */
export function dsdtAml(m: PlatformMachine): Uint8Array {
  const com1 = device("COM1", [
    name("_HID", eisaId("PNP0501")),
    name("_UID", integer(0)),
    name(
      "_CRS",
      resourceTemplate([ioPorts(PORTS.COM1, COM1_PORTS), extendedInterrupt([IRQS.COM1], EDGE_HIGH)]),
    ),
  ]);
  const rtc = device("RTC", [
    name("_HID", eisaId("PNP0B00")),
    name("_UID", integer(0)),
    name("_CRS", resourceTemplate([ioPorts(CMOS_PORT, 2), extendedInterrupt([CMOS_IRQ], EDGE_HIGH)])),
  ]);
  const virtio = m.virtio.map((d, i) =>
    device(`V${i.toString(16).toUpperCase().padStart(3, "0")}`, [
      name("_HID", string("LNRO0005")),
      name("_UID", integer(i)),
      name("_CRS", resourceTemplate([memory32Fixed(d.base, d.size), extendedInterrupt([d.irq], EDGE_HIGH)])),
    ]),
  );
  return concat([
    scope("\\_SB", [com1, rtc, ...virtio]),
    name("_S5", pkg([integer(S5_SLEEP_TYPE), integer(0), integer(0), integer(0)])),
  ]);
}

/** DSDT revision 2 (64-bit integers). */
export function dsdt(m: PlatformMachine): Uint8Array {
  return sdt("DSDT", 2, dsdtAml(m));
}
