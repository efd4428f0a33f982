// The sleep control and status registers of a hardware-reduced ACPI platform (ACPI 6.5, 4.8.3.7-8), one byte
// each at the ports the FADT names: how a Linux guest powers off. The kernel writes SLP_TYP (bits 4-2, the
// value of \_S5_ in the DSDT) with SLP_EN (bit 5) to the control register; S5 (soft off) ends the run. Other
// sleep types are not offered (the DSDT names only \_S5_), so a write of one is ignored and the kernel, which
// waits for WAK_STS in the status register, would wait: it reads 0, as on a machine that never wakes.
// Writes of 1 to WAK_STS (bit 7, write-1-to-clear) are accepted and change nothing.
import type { AccessSize, PioDevice } from "./types.js";

/** Sleep control register bits (the FADT's SLEEP_CONTROL_REG). */
export const SLP_TYP_SHIFT = 2;
export const SLP_TYP_MASK = 0x1c;
export const SLP_EN = 0x20;
/** The sleep type vmtool's \_S5_ names (src/loader/linux/tables/acpi.ts writes the same number). */
export const S5_SLEEP_TYPE = 5;

/** Thrown by the device when the guest enters S5: the run loop ends the run ("poweroff"). */
export class GuestPowerOffRequest extends Error {
  constructor() {
    super("the guest powered off (ACPI S5)");
    this.name = "GuestPowerOffRequest";
  }
}

export class AcpiSleep implements PioDevice {
  readonly name = "acpi-sleep (S5 power-off)";

  /** Registered with size 2: offset 0 is the control register, offset 1 the status register. */
  pioRead(_offset: number, _size: AccessSize): number {
    return 0;
  }

  pioWrite(offset: number, _size: AccessSize, value: number): void {
    if (offset !== 0) return;
    if ((value & SLP_EN) !== 0 && (value & SLP_TYP_MASK) >> SLP_TYP_SHIFT === S5_SLEEP_TYPE)
      throw new GuestPowerOffRequest();
  }
}
