// Attaches virtio-mmio devices to a vCPU thread's MMIO bus through the run loop's exit-hook seam
// (worker-protocol.ts: a module loaded in the vCPU thread with `(ctx) => ExitHook`), so they run without a
// change to the core. The devices are chosen by the module URL's query string:
//   ?rng=1&console=1&disk=/path/img&ro=1&trace=1
// They are placed at LAYOUT.MMIO_BASE, one MMIO_WINDOW_SIZE apart, in the order rng, console, blk, with
// interrupts VIRTIO_IRQS[i] on the in-kernel irqchip. This is the single-vCPU step of issue 6: device work
// runs on the vCPU thread that took the notify exit (no ioeventfd/irqfd/I/O worker yet, see docs/virtio.md).
import type { ExitHook, HookContext } from "../../vmm/worker-protocol.js";
import { LAYOUT } from "../../vm/machine-layout.js";
import { setIrqLine } from "../../vm/vm.js";
import { MMIO_WINDOW_SIZE } from "./constants.js";
import type { VirtioDevice } from "./device.js";
import { VirtioMmioTransport } from "./mmio-transport.js";
import { VirtioRng } from "./rng.js";
import { VirtioConsole } from "./console.js";
import { VirtioBlk } from "./blk.js";
import { FileBlockBackend } from "./blk-file-backend.js";

/** ISA interrupt lines for virtio devices (COM1 has 4; these are free on vmtool's PC). */
export const VIRTIO_IRQS = [5, 6, 7, 9, 10, 11] as const;

/** Where the i-th virtio device sits (for the machine description and the Linux command line). */
export function virtioSlot(i: number): { base: number; size: number; irq: number } {
  return { base: LAYOUT.MMIO_BASE + i * MMIO_WINDOW_SIZE, size: MMIO_WINDOW_SIZE, irq: VIRTIO_IRQS[i] };
}

/** Linux's own syntax for a device it cannot discover: `virtio_mmio.device=<size>@<base>:<irq>`. */
export function linuxCmdlineFor(count: number): string {
  const parts: string[] = [];
  for (let i = 0; i < count; i++) {
    const s = virtioSlot(i);
    parts.push(`virtio_mmio.device=0x${s.size.toString(16)}@0x${s.base.toString(16)}:${s.irq}`);
  }
  return parts.join(" ");
}

/** The hook module's URL for a set of devices (what `runMachine({ hookModules })` takes). */
export function virtioHookUrl(opts: {
  rng?: boolean;
  console?: boolean;
  disk?: string;
  ro?: boolean;
  trace?: boolean;
}): string {
  const u = new URL(import.meta.url);
  if (opts.rng) u.searchParams.set("rng", "1");
  if (opts.console) u.searchParams.set("console", "1");
  if (opts.disk) u.searchParams.set("disk", opts.disk);
  if (opts.ro) u.searchParams.set("ro", "1");
  if (opts.trace) u.searchParams.set("trace", "1");
  return u.href;
}

export default function attachVirtio(ctx: HookContext): ExitHook {
  const q = new URL(import.meta.url).searchParams;
  const trace = q.get("trace") === "1" ? (line: string) => ctx.out(`vmtool: ${line}`) : undefined;
  const devices: VirtioDevice[] = [];
  if (q.get("rng") === "1") devices.push(new VirtioRng());
  if (q.get("console") === "1") devices.push(new VirtioConsole((b) => process.stdout.write(b)));
  const disk = q.get("disk");
  if (disk) devices.push(new VirtioBlk(new FileBlockBackend(disk, q.get("ro") === "1")));
  const vmFd = ctx.vcpu.desc.vmFd;
  devices.forEach((device, i) => {
    const slot = virtioSlot(i);
    const t = new VirtioMmioTransport(device, {
      memory: ctx.memory,
      name: `${device.type}@0x${slot.base.toString(16)}`,
      trace,
      irq: {
        setLevel: (high) => {
          try {
            setIrqLine(vmFd, slot.irq, high);
          } catch {
            // no in-kernel irqchip: the guest polls the used ring instead
          }
        },
      },
    });
    ctx.mmio.register(slot.base, slot.size, t);
  });
  return () => undefined;
}
