// Which KVM backend runs the guests, for the guest-debug methods that differ (docs/introspection.md,
// "Backends"): on kvm_pvm guest ring-0 code runs in the host kernel's instruction emulator, which stops at a
// planted 0xF1 (ICEBP) or 0xCC with an emulation failure instead of a debug exit, and never fires DR7 data
// watchpoints; on VMX and SVM a planted 0xCC with KVM_GUESTDBG_USE_SW_BP comes back as a debug exit, and data
// watchpoints are real debug registers.
import { existsSync } from "node:fs";

export type Backend = "kvm_pvm" | "kvm_intel" | "kvm_amd" | "unknown";

export function detectBackend(sysModule = "/sys/module"): Backend {
  for (const b of ["kvm_pvm", "kvm_intel", "kvm_amd"] as const) if (existsSync(`${sysModule}/${b}`)) return b;
  return "unknown";
}

/** How software breakpoints and watchpoints are done on `backend`. */
export interface DebugMethods {
  /** The byte planted for a software breakpoint. */
  breakpointByte: number;
  /** Whether KVM reports a planted byte as a debug exit (USE_SW_BP), or as an emulation failure at it. */
  swBreakpointAsDebugExit: boolean;
  /** Whether DR7 data watchpoints fire; if not, watchpoints are read-only memory slots. */
  dataWatchpointsInDr7: boolean;
}

export function debugMethods(backend: Backend): DebugMethods {
  // kvm_pvm: 0xF1 stops the emulator in every mode (0xCC would be delivered through the IVT in real mode).
  if (backend === "kvm_pvm")
    return { breakpointByte: 0xf1, swBreakpointAsDebugExit: false, dataWatchpointsInDr7: false };
  return { breakpointByte: 0xcc, swBreakpointAsDebugExit: true, dataWatchpointsInDr7: true };
}
