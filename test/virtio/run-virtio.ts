// Test runner (not a test): runs a guest image on a real KVM VM with virtio devices attached through the
// vCPU exit-hook seam, as `vmtool run` will once it has --disk/--virtio options. Usage:
//   node run-virtio.js IMAGE [rng] [console] [disk=PATH] [ro] [trace]
import { planLoad, applyPlan, writeBootInfo } from "../../src/loader/index.js";
import { runMachine } from "../../src/vmm/machine.js";
import { virtioHookUrl } from "../../src/devices/virtio/vcpu-hook.js";

const [image, ...flags] = process.argv.slice(2);
const has = (f: string) => flags.includes(f);
const disk = flags.find((f) => f.startsWith("disk="))?.slice(5);
const memSize = 16 * 1024 * 1024;
const plan = planLoad(image, { memSize });
const result = await runMachine({
  memSize,
  stdin: false,
  hookModules: [
    virtioHookUrl({ rng: has("rng"), console: has("console"), disk, ro: has("ro"), trace: has("trace") }),
  ],
  load: (mem) => {
    applyPlan(mem, plan);
    const bootInfo = writeBootInfo(mem, { memSize, cpus: 1, cmdline: "", plan });
    return { mode: plan.mode, entry: plan.entry, bootInfo };
  },
});
process.stderr.write(`run-virtio: ${result.status} ${result.reason}\n`);
process.exit(result.status);
