// What a KVM backend looks like from user space, as one JSON object on stdout: its capabilities, the vCPU
// state right after KVM_CREATE_VCPU, the supported CPUID leaves that matter to a VMM, and the exits of the
// same tiny guests. kvm-amd.test.ts runs it on the host's backend and under kvm_amd and diffs the two
// (docs/svm.md records the differences). `node probe.js --exits N` also times N port-I/O exits.
import { Kvm } from "../../src/kvm/system.js";
import { KVM_CAP } from "../../src/kvm/caps.js";
import { exitReasonName } from "../../src/kvm/ioctls.js";
import { TinyVm, outLoop } from "./tiny-vm.js";

export interface Probe {
  caps: Record<string, number>;
  reset: Record<string, string>;
  cpuid: Record<string, string>;
  exits: Record<string, string[]>;
  timing?: { exits: number; nsPerExit: number };
}

const hex = (v: bigint | number) => "0x" + v.toString(16);

function resetState(): Record<string, string> {
  const vm = new TinyVm();
  try {
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(vm.getRegs())) out[k] = hex(v);
    const s = vm.getSregs();
    for (const [n, seg] of Object.entries(s.segs))
      out[n] =
        `sel=${hex(seg.selector)} base=${hex(seg.base)} limit=${hex(seg.limit)} type=${seg.type} ` +
        `p=${seg.present} dpl=${seg.dpl} db=${seg.db} s=${seg.s} l=${seg.l} g=${seg.g} unusable=${seg.unusable}`;
    out.gdt = `base=${hex(s.gdt.base)} limit=${hex(s.gdt.limit)}`;
    out.idt = `base=${hex(s.idt.base)} limit=${hex(s.idt.limit)}`;
    for (const k of ["cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apic_base"] as const) out[k] = hex(s[k]);
    return out;
  } finally {
    vm.close();
  }
}

function guestExits(): Record<string, string[]> {
  const run = (name: string, setup: (vm: TinyVm) => void): [string, string[]] => {
    const vm = new TinyVm();
    try {
      setup(vm);
      const exits = vm.runUntilStop(8).map((e) => {
        if (e.io) return `IO ${e.io.out ? "out" : "in"} ${hex(e.io.port)} ${hex(e.io.data)}`;
        if (e.mmio) return `MMIO ${e.mmio.write ? "write" : "read"} ${hex(e.mmio.addr)} ${hex(e.mmio.data)}`;
        if (e.hwReason !== undefined) return `${exitReasonName(e.reason)} ${hex(e.hwReason)}`;
        return exitReasonName(e.reason);
      });
      return [name, exits];
    } catch (err) {
      return [name, [`error: ${(err as Error).message}`]];
    } finally {
      vm.close();
    }
  };
  return Object.fromEntries([
    run("real-mode out loop", (vm) => {
      vm.ram.set(outLoop(16, 2, 0x80, 1), 0x1000);
      vm.enterRealMode(0x1000);
    }),
    run("long-mode out loop", (vm) => {
      vm.ram.set(outLoop(64, 2, 0x80, 1), 0x1000);
      vm.enterLongMode(0x1000);
    }),
    // The reset state itself: CS:IP = F000:FFF0 with no RAM there (2 MiB of RAM at 0).
    run("reset vector, no firmware", () => {}),
    // ud2 with an IDT of zeros (not-present gates): #UD cannot be delivered, #DF neither: a triple fault.
    run("long-mode triple fault", (vm) => {
      vm.ram.set([0x0f, 0x0b], 0x1000);
      vm.enterLongMode(0x1000);
    }),
    // A load from unbacked guest-physical memory: mov eax, [0x400000]; hlt.
    run("long-mode MMIO read", (vm) => {
      vm.ram.set([0x8b, 0x04, 0x25, 0x00, 0x00, 0x40, 0x00, 0xf4], 0x1000);
      vm.enterLongMode(0x1000);
    }),
    // IN from a port nobody handles.
    run("real-mode in", (vm) => {
      vm.ram.set([0xe4, 0x61, 0xf4], 0x1000); // in al, 0x61; hlt
      vm.enterRealMode(0x1000);
    }),
  ]);
}

function cpuidSummary(kvm: Kvm): Record<string, string> {
  const want: [number, number][] = [
    [0, 0],
    [1, 0],
    [7, 0],
    [0xd, 0],
    [0x80000000, 0],
    [0x80000001, 0],
    [0x8000000a, 0],
  ];
  const all = kvm.cpuid("supported");
  const out: Record<string, string> = { entries: String(all.length) };
  for (const [f, i] of want) {
    const e = all.find((x) => x.function === f && x.index === i);
    out[`${hex(f)}.${i}`] = e ? [e.eax, e.ebx, e.ecx, e.edx].map((v) => hex(v >>> 0)).join(" ") : "absent";
  }
  return out;
}

export function probe(timedExits = 0): Probe {
  const kvm = Kvm.open();
  const caps: Record<string, number> = {};
  let cpuid: Record<string, string>;
  try {
    for (const name of Object.keys(KVM_CAP)) caps[name] = kvm.checkExtension(name);
    cpuid = cpuidSummary(kvm);
  } finally {
    kvm.close();
  }
  const result: Probe = { caps, reset: resetState(), cpuid, exits: guestExits() };
  if (timedExits > 0) {
    const vm = new TinyVm();
    try {
      vm.ram.set(outLoop(64, timedExits, 0x80, 1), 0x1000);
      vm.enterLongMode(0x1000);
      const t0 = process.hrtime.bigint();
      let n = 0;
      while (vm.runOnce().io) n++;
      const ns = Number(process.hrtime.bigint() - t0);
      result.timing = { exits: n, nsPerExit: Math.round(ns / (n + 1)) };
    } finally {
      vm.close();
    }
  }
  return result;
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].replace(/^.*\//, "/"))) {
  const i = process.argv.indexOf("--exits");
  process.stdout.write(JSON.stringify(probe(i > 0 ? Number(process.argv[i + 1]) : 0)) + "\n");
}
