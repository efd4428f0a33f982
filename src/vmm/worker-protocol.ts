// What the main thread hands a vCPU worker, what the worker says back, and the exit-hook seam.
import type { RegionDescriptor, GuestMemory } from "../memory/guest-memory.js";
import type { Vcpu, VcpuDescriptor } from "../vm/vcpu.js";
import type { MmioBus, PioBus } from "../devices/bus.js";
import type { StatsSummary } from "./exit-stats.js";
import type { RunEnd } from "./run-end.js";
import type { LiveCountersDescriptor } from "./live-counters.js";

/** Given when the worker is created (before the VM exists). */
export interface VcpuWorkerData {
  /** The control block (vcpu-control.ts). */
  control: SharedArrayBuffer;
  trace: boolean;
  stats: boolean;
  /**
   * Modules (URLs) loaded in the vCPU thread, each with a default export `(ctx) => ExitHook`: a hook sees every
   * exit in the thread that handles it. A hook must not keep `ctx` (its guest memory views above all) past the
   * run: guest RAM is unmapped once the run ends (runMachine waits for threads with hooks to end first).
   */
  hookModules: string[];
}

/** The first message to the worker: the vCPU and guest RAM to run, once the VM exists. */
export interface VcpuStart {
  vcpu: VcpuDescriptor;
  memory: RegionDescriptor[];
  irqchip: boolean;
  /** How many vCPUs the VM has (halt detection differs with more than one). */
  cpuCount: number;
  /** The debug block of this vCPU (debug-block.ts), shared with the VM-control core. */
  debug: SharedArrayBuffer;
  /** Guest RAM's size and the bitmap of its protected pages (memory-slots.ts). */
  ram: { size: number; bits: SharedArrayBuffer };
  /**
   * The PC platform devices a Linux guest probes (the CMOS RTC at 0x70 over this shared state, the i8042's
   * reset line at 0x60/0x64, the ACPI sleep registers at 0x600), on each vCPU's own bus; absent for vmtool's own guests.
   */
  platform?: { cmosState: SharedArrayBuffer };
  /**
   * COM1 served by this thread itself (a machine with one vCPU and no virtio device: no I/O worker to start or
   * to wake for each access): the VM's fd for its interrupt line (absent without the in-kernel irqchip), and the
   * ring standard input arrives in (REQ.INPUT says bytes wait there). Absent: COM1 is the I/O worker's.
   */
  com1?: { vmFd?: number; stdinQueue: SharedArrayBuffer };
  /** The I/O worker: request slots, doorbell eventfd, and the ranges whose accesses are forwarded to it. */
  io: {
    buffer: SharedArrayBuffer;
    doorbell: number;
    pio: { name: string; base: number; size: number }[];
    mmio: { name: string; base: number; size: number }[];
  };
  /** This vCPU's block of the run's live exit counters (live-counters.ts), when the run is published. */
  counters?: LiveCountersDescriptor;
}

export type WorkerMessage =
  | { type: "loaded" } // its modules (koffi among them) are loaded: from now on terminate() is safe
  /** The vCPU parked itself: `kind` is the StopKind (debug-block.ts) of why. */
  | { type: "paused"; kind: number }
  | { type: "io-wanted" } // an access to a device of the I/O worker, which has not been started yet
  | { type: "com1-used" } // the guest touched the COM1 of this thread for the first time: standard input is wanted
  | { type: "done"; end: RunEnd; stats?: StatsSummary };

/** What an exit hook sees. The vCPU may be inspected (registers, memory) from inside the hook. */
export interface ExitEvent {
  seq: number;
  reason: number;
  reasonName: string;
}

/** "stop" ends the run (RunEnd "stopped"), "pause" parks the vCPU in the paused state; anything else goes on. */
// A hook written in JavaScript that returns nothing returns undefined; its TypeScript type says void.
// eslint-disable-next-line @typescript-eslint/no-invalid-void-type
export type ExitHookVerdict = "stop" | "pause" | void | undefined;
export type ExitHook = (exit: ExitEvent) => ExitHookVerdict;

export interface HookContext {
  vcpu: Vcpu;
  memory: GuestMemory;
  pio: PioBus;
  mmio: MmioBus;
  /** Print a line on standard error, in order with the guest's output. */
  out: (line: string) => void;
}
