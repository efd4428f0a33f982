// The platform tables of a Linux guest, in the BIOS area the e820 map reserves (0xE0000-0xFFFFF, which Linux
// scans for both): the ACPI tables in its first 64 KiB (the RSDP at its start, where the kernel finds it by its
// scan or through boot_params.acpi_rsdp_addr / hvm_start_info.rsdp_paddr), the MP tables in the last 64 KiB
// (the floating pointer at 0xF0000, inside the range the kernel scans for it). Built before any VM exists, so
// a machine the tables cannot describe is one line (exit 2); written into guest RAM at load.
import { hex } from "../../../format.js";
import type { GuestMemory } from "../../../memory/guest-memory.js";
import { LoadOptionError } from "../../errors.js";
import { BIOS_TABLES_BASE, BIOS_TABLES_END } from "../e820.js";
import { dsdt, fadt, madt, rsdp, xsdt, RSDP_SIZE, type PlatformMachine } from "./acpi.js";
import { mpConfigTable, mpFloatingPointer, MP_FLOATING_SIZE } from "./mptable.js";

export type { PlatformMachine } from "./acpi.js";

/** Where the RSDP is: what the loaders hand the kernel (zero page acpi_rsdp_addr, PVH rsdp_paddr). */
export const RSDP_ADDR = BIOS_TABLES_BASE;
export const ACPI_AREA = { base: BIOS_TABLES_BASE, end: 0xf_0000 } as const;
export const MP_AREA = { base: 0xf_0000, end: BIOS_TABLES_END } as const;
/**
 * The most vCPUs the tables describe: MADT processor entries and MP processor entries carry 8-bit APIC ids, the
 * IOAPIC takes the id after the last vCPU's, and 0xFF means "all".
 */
export const MAX_TABLE_CPUS = 254;
const ALIGN = 16;

/** The tables to write: pieces of guest memory, and the RSDP's address. */
export interface PlatformTables {
  rsdp: number;
  pieces: { gpa: number; bytes: Uint8Array }[];
}

function align(n: number): number {
  return Math.ceil(n / ALIGN) * ALIGN;
}

function describe(m: PlatformMachine): string {
  return `${m.cpus} vCPU${m.cpus === 1 ? "" : "s"} and ${m.virtio.length} virtio device${m.virtio.length === 1 ? "" : "s"}`;
}

/** Lay out a run of tables from `base`, 16-byte aligned; refuses to pass `end`. */
function layOut(
  tables: readonly Uint8Array[],
  area: { base: number; end: number },
  what: string,
  m: PlatformMachine,
) {
  const gpas: number[] = [];
  let at = area.base;
  for (const t of tables) {
    gpas.push(at);
    at = align(at + t.length);
  }
  if (at > area.end)
    throw new LoadOptionError(
      `the ${what} for ${describe(m)} need ${at - area.base} bytes, more than their ${area.end - area.base} ` +
        `at ${hex(area.base)}..${hex(area.end - 1)}`,
    );
  return gpas;
}

/** The ACPI and MP tables for machine `m`; throws LoadOptionError (one line) for a machine they cannot hold. */
export function buildPlatformTables(m: PlatformMachine): PlatformTables {
  if (!Number.isInteger(m.cpus) || m.cpus < 1 || m.cpus > MAX_TABLE_CPUS)
    throw new LoadOptionError(
      `--cpus ${m.cpus}: the ACPI and MP tables describe 1 to ${MAX_TABLE_CPUS} vCPUs (8-bit APIC ids)`,
    );
  // ACPI: the RSDP first (its place is fixed), then the tables, each placed before the one that points at it.
  const dsdtBytes = dsdt(m);
  const madtBytes = madt(m.cpus);
  const sizes = [new Uint8Array(RSDP_SIZE), xsdt([0, 0]), fadt(0), madtBytes, dsdtBytes];
  const [rsdpAt, xsdtAt, fadtAt, madtAt, dsdtAt] = layOut(sizes, ACPI_AREA, "ACPI tables", m);
  const acpi = [
    { gpa: rsdpAt, bytes: rsdp(xsdtAt) },
    { gpa: xsdtAt, bytes: xsdt([fadtAt, madtAt]) },
    { gpa: fadtAt, bytes: fadt(dsdtAt) },
    { gpa: madtAt, bytes: madtBytes },
    { gpa: dsdtAt, bytes: dsdtBytes },
  ];
  const config = mpConfigTable(m.cpus);
  const [floatAt, configAt] = layOut([new Uint8Array(MP_FLOATING_SIZE), config], MP_AREA, "MP tables", m);
  return {
    rsdp: rsdpAt,
    pieces: [...acpi, { gpa: floatAt, bytes: mpFloatingPointer(configAt) }, { gpa: configAt, bytes: config }],
  };
}

/** Write tables built by buildPlatformTables into guest RAM (the whole area cleared first); returns the RSDP's address. */
export function applyPlatformTables(mem: GuestMemory, t: PlatformTables): number {
  mem.fill(BIOS_TABLES_BASE, BIOS_TABLES_END - BIOS_TABLES_BASE, 0);
  for (const p of t.pieces) mem.write(p.gpa, p.bytes);
  return t.rsdp;
}

/**
 * The one call a Linux loader needs: build the ACPI and MP tables for machine `m`, write them into guest RAM,
 * and return the RSDP's guest-physical address (always RSDP_ADDR). Throws LoadOptionError, writing nothing, for
 * a machine the tables cannot describe; loaders that check before any VM exists call buildPlatformTables first.
 */
export function writePlatformTables(mem: GuestMemory, m: PlatformMachine): number {
  return applyPlatformTables(mem, buildPlatformTables(m));
}
