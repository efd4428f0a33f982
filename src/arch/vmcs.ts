// VMCS field encodings (Intel SDM Vol. 3D, Appendix B, "Field Encoding in VMCS"): the 32-bit value given to
// VMREAD/VMWRITE says how the field is accessed, which of the four types it is and how wide it is.
import { vmcsFields, type VmcsFieldEntry } from "./tables.js";

export const VMCS_TYPES = ["control", "VM-exit information", "guest state", "host state"] as const;
export const VMCS_WIDTHS = ["16-bit", "64-bit", "32-bit", "natural width"] as const;

export interface VmcsEncoding {
  encoding: number;
  access: "full" | "high";
  index: number;
  type: (typeof VMCS_TYPES)[number];
  width: (typeof VMCS_WIDTHS)[number];
  /** Bits that must be 0 (12 and 15-31) are set: VMREAD/VMWRITE would fail with VM-instruction error 12. */
  reservedBitsSet: boolean;
}

export function decodeVmcsEncoding(encoding: number): VmcsEncoding {
  return {
    encoding,
    access: (encoding & 1) === 1 ? "high" : "full",
    index: (encoding >>> 1) & 0x1ff,
    type: VMCS_TYPES[(encoding >>> 10) & 3],
    width: VMCS_WIDTHS[(encoding >>> 13) & 3],
    reservedBitsSet: (encoding & 0xffff9000) !== 0,
  };
}

/** The named field for an encoding; a high access (bit 0 = 1) names the 64-bit field it is the top half of. */
export function findVmcsField(encoding: number): VmcsFieldEntry | undefined {
  const base = (encoding & 1) === 1 && ((encoding >>> 13) & 3) === 1 ? encoding - 1 : encoding;
  return vmcsFields().entries.find((f) => f.encoding === base);
}

/** Find a field by name, with or without the kernel's spelling details (case, GUEST_/HOST_ kept). */
export function findVmcsFieldByName(name: string): VmcsFieldEntry | undefined {
  const want = name.toUpperCase().replace(/[-\s]/g, "_");
  return vmcsFields().entries.find((f) => f.name === want);
}

/** The type an encoding must have for a field of each group (the six groups map onto the four types). */
export const GROUP_TYPE: Readonly<Record<string, (typeof VMCS_TYPES)[number]>> = {
  "vm-execution-control": "control",
  "vm-exit-control": "control",
  "vm-entry-control": "control",
  "vm-exit-information": "VM-exit information",
  "guest-state": "guest state",
  "host-state": "host state",
};
