// gdb's `monitor ...` commands (qRcmd): what a person learning x86 wants to see that gdb's own commands do not
// show: the CPU mode, the system registers decoded, an address's translation, the exits the guest made, and
// stops at the next exit of a kind.
import type { VmControl } from "../debug/vm-control.js";
import type { CpuState, GdbArch } from "./registers.js";
import { CR0_FLAGS, CR4_FLAGS, EFER_FLAGS, cpuMode, segmentAttributes } from "./registers.js";
import { modeText } from "./stub.js";
import { hex } from "../format.js";
import { formatWalk } from "../debug/paging.js";
import { KVM_EXIT, exitReasonName } from "../kvm/ioctls.js";
import { EXIT_BREAK, EXIT_COUNT_SLOTS } from "../vmm/debug-block.js";

export interface MonitorContext {
  readonly control: VmControl;
  readonly currentVcpu: number;
  readonly arch: GdbArch;
  physMode: boolean;
  stepIrq: boolean;
  cpu(i: number): Promise<CpuState>;
}

const HELP = `vmtool monitor commands (gdb: monitor COMMAND):
  mode                    the CPU mode of each vCPU, and the register layout gdb was given
  regs sys                control registers, EFER, segment caches, GDTR/IDTR, LDTR/TR, debug registers, decoded
  translate ADDR          the walk of linear address ADDR through the current vCPU's page tables, level by level
  phys on|off             memory accesses (x, print, watch) by guest-physical address instead of linear
  sstep irq on|off        let interrupts be delivered during single steps (default off, as QEMU's NOIRQ)
  sstep                   the single-step settings
  exits                   the current vCPU's last exit and its exits counted by KVM exit reason
  break-on io PORT        stop after the next port access (IN or OUT) to PORT, by any vCPU
  break-on mmio ADDR      stop after the next MMIO access that covers guest-physical ADDR
  break-on exit REASON    stop at the next exit with that KVM exit reason (a name as vmtool explain exit
                          prints it, e.g. IO, MMIO, HLT, SHUTDOWN, or a number)
  break-on off            cancel
  help                    this list
`;

export async function runMonitorCommand(ctx: MonitorContext, line: string): Promise<string> {
  const words = line.split(/\s+/).filter((w) => w !== "");
  const [cmd, ...args] = words;
  try {
    switch (cmd) {
      case undefined:
      case "help":
        return HELP;
      case "mode":
        return await modeReport(ctx);
      case "regs":
        if (args[0] !== "sys") return "usage: monitor regs sys\n";
        return sysReport(await ctx.cpu(ctx.currentVcpu), ctx.currentVcpu);
      case "translate":
        return await translateReport(ctx, args);
      case "phys":
        if (args[0] === "on" || args[0] === "off") {
          ctx.physMode = args[0] === "on";
          return `memory accesses are now by ${ctx.physMode ? "guest-physical" : "linear (virtual)"} address\n`;
        }
        return `memory accesses are by ${ctx.physMode ? "guest-physical" : "linear (virtual)"} address (monitor phys on|off)\n`;
      case "sstep":
        if (args.length === 0)
          return `single steps: interrupts ${ctx.stepIrq ? "delivered" : "held off (KVM_GUESTDBG_BLOCKIRQ)"}\n`;
        if (args[0] === "irq" && (args[1] === "on" || args[1] === "off")) {
          ctx.stepIrq = args[1] === "on";
          return ctx.stepIrq
            ? "single steps: interrupts delivered. An interrupt taken during a step has the trap flag KVM steps " +
                "with in the EFLAGS it saves (why KVM_GUESTDBG_BLOCKIRQ exists): when its handler returns, the " +
                "guest takes a debug exception (#DB) of its own\n"
            : "single steps: interrupts held off\n";
        }
        return "usage: monitor sstep [irq on|off]\n";
      case "exits":
        return exitsReport(ctx);
      case "break-on":
        return breakOn(ctx, args);
      default:
        return `unknown monitor command '${cmd}' (monitor help lists them)\n`;
    }
  } catch (e) {
    return `error: ${(e as Error).message}\n`;
  }
}

async function modeReport(ctx: MonitorContext): Promise<string> {
  const lines: string[] = [];
  for (const v of ctx.control.vcpus) {
    if (!v.parked) {
      lines.push(`vCPU ${v.index}: ${v.stopped ? "ended" : "running"}`);
      continue;
    }
    const s = await ctx.cpu(v.index);
    const mode = cpuMode(s.sregs, s.regs.rflags);
    const paging =
      s.sregs.cr0 & 0x80000000n
        ? s.sregs.efer & 0x400n
          ? s.sregs.cr4 & 0x1000n
            ? "5-level paging"
            : "4-level paging"
          : s.sregs.cr4 & 0x20n
            ? "PAE paging"
            : "32-bit paging"
        : "paging off";
    const csBits = s.sregs.cs.l ? 64 : s.sregs.cs.db ? 32 : 16;
    lines.push(
      `vCPU ${v.index}: ${modeText(mode)}, ${paging}, CS ${csBits}-bit code, CPL ${s.sregs.cs.dpl & 3}, ` +
        `cs:ip ${hex(s.sregs.cs.selector, 4)}:${hex(s.regs.rip)} (linear ${hex(s.sregs.cs.base + s.regs.rip)})`,
    );
  }
  lines.push(`gdb's register layout: ${ctx.arch} (fixed when gdb connected)`);
  return lines.join("\n") + "\n";
}

function bits(v: bigint, names: readonly (readonly [string, number])[]): string {
  const on = names.filter(([, b]) => (v >> BigInt(b)) & 1n).map(([n]) => n);
  return on.length ? on.join(" ") : "-";
}

function sysReport(s: CpuState, i: number): string {
  const r = s.sregs;
  const out = [`vCPU ${i}`];
  out.push(
    `cr0  ${hex(r.cr0, 8)}  ${bits(r.cr0, CR0_FLAGS)}`,
    `cr2  ${hex(r.cr2, 8)}`,
    `cr3  ${hex(r.cr3, 8)}`,
    `cr4  ${hex(r.cr4, 8)}  ${bits(r.cr4, CR4_FLAGS)}`,
    `cr8  ${hex(r.cr8)}`,
    `efer ${hex(r.efer, 8)}  ${bits(r.efer, EFER_FLAGS)}`,
    `apic_base ${hex(r.apic_base)}`,
    "segment  selector  base               limit       attr   type S DPL P AVL L D/B G",
  );
  for (const n of ["cs", "ss", "ds", "es", "fs", "gs", "ldt", "tr"] as const) {
    const g = r[n];
    const attr = segmentAttributes(g);
    out.push(
      `${(n === "ldt" ? "ldtr" : n).padEnd(8)} ${hex(g.selector, 4).padEnd(9)} ${hex(g.base, 16)} ${hex(g.limit >>> 0, 8)}  ` +
        `${hex(attr, 5)} ${String(g.type).padStart(4)} ${g.s}   ${g.dpl} ${g.present}   ${g.avl} ${g.l}   ${g.db} ${g.g}` +
        (g.unusable ? "  (unusable)" : ""),
    );
  }
  out.push(
    `gdtr base ${hex(r.gdt.base, 16)} limit ${hex(r.gdt.limit, 4)}`,
    `idtr base ${hex(r.idt.base, 16)} limit ${hex(r.idt.limit, 4)}`,
    `dr0-3 ${s.dr.db.map((d) => hex(d)).join(" ")}  dr6 ${hex(s.dr.dr6)}  dr7 ${hex(s.dr.dr7)}`,
    `kernel_gs_base ${hex(s.kGsBase)}`,
  );
  return out.join("\n") + "\n";
}

async function translateReport(ctx: MonitorContext, args: string[]): Promise<string> {
  if (args.length !== 1 || !/^(0x)?[0-9a-fA-F]{1,16}$/.test(args[0]))
    return "usage: monitor translate ADDR\n";
  const linear = BigInt(args[0].startsWith("0x") ? args[0] : `0x${args[0]}`);
  const state = await ctx.control.pagingState(ctx.currentVcpu);
  const w = await ctx.control.walk(ctx.currentVcpu, linear);
  return formatWalk(w, state).join("\n") + "\n";
}

function exitsReport(ctx: MonitorContext): string {
  const { counts, last } = ctx.control.exitCounts(ctx.currentVcpu);
  const lines = [`vCPU ${ctx.currentVcpu}:`];
  if (!last) return `vCPU ${ctx.currentVcpu}: no exit yet\n`;
  const where =
    last.addr === undefined
      ? ""
      : last.reason === KVM_EXIT.IO
        ? ` port ${hex(last.addr, 4)} ${last.write ? "out" : "in"}`
        : ` ${hex(last.addr)} ${last.write ? "write" : "read"}`;
  lines.push(`  last exit: ${exitReasonName(last.reason)} (${last.reason})${where}`);
  const rows = [...counts].sort((a, b) => b[1] - a[1]);
  const total = rows.reduce((n, [, c]) => n + c, 0);
  lines.push(`  ${total} exits since the vCPU started:`);
  for (const [r, c] of rows) lines.push(`    ${exitReasonName(r).padEnd(16)} ${String(c).padStart(10)}`);
  return lines.join("\n") + "\n";
}

/** Parse a number as gdb users write it (0x.. hex, or decimal). */
function parseNumber(v: string | undefined): bigint | undefined {
  if (v === undefined || !/^(0x[0-9a-fA-F]{1,16}|[0-9]{1,20})$/.test(v)) return undefined;
  const n = BigInt(v);
  return n < 2n ** 64n ? n : undefined;
}

function breakOn(ctx: MonitorContext, args: string[]): string {
  const [what, value] = args;
  const usage = "usage: monitor break-on io PORT | mmio ADDR | exit REASON | off\n";
  if (what === "off" && args.length === 1) {
    ctx.control.breakOnExit(EXIT_BREAK.NONE);
    return "break-on: off\n";
  }
  if (args.length !== 2) return usage;
  if (what === "io") {
    const port = parseNumber(value);
    if (port === undefined || port > 0xffffn) return "break-on io: PORT is 0..0xffff\n";
    ctx.control.breakOnExit(EXIT_BREAK.IO, port);
    return `break-on: the next access to port ${hex(port, 4)} stops the VM (after the instruction; continue)\n`;
  }
  if (what === "mmio") {
    const addr = parseNumber(value);
    if (addr === undefined) return "break-on mmio: ADDR is a guest-physical address\n";
    ctx.control.breakOnExit(EXIT_BREAK.MMIO, addr);
    return `break-on: the next MMIO access covering ${hex(addr)} stops the VM (after the instruction; continue)\n`;
  }
  if (what === "exit") {
    const reason = exitReasonNumber(value);
    if (reason === undefined)
      return `break-on exit: '${value}' is not a KVM exit reason (vmtool explain exit NAME lists them)\n`;
    ctx.control.breakOnExit(EXIT_BREAK.REASON, BigInt(reason));
    return `break-on: the next ${exitReasonName(reason)} exit stops the VM (continue)\n`;
  }
  return usage;
}

/** A KVM exit reason by name (IO, kvm_exit_io, KVM_EXIT_IO) or number. */
function exitReasonNumber(v: string): number | undefined {
  const n = parseNumber(v);
  if (n !== undefined) return n < BigInt(EXIT_COUNT_SLOTS) ? Number(n) : undefined;
  const name = v.toUpperCase().replace(/^KVM_EXIT_/, "");
  return Object.prototype.hasOwnProperty.call(KVM_EXIT, name)
    ? KVM_EXIT[name as keyof typeof KVM_EXIT]
    : undefined;
}
