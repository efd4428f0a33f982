// `vmtool run [FILE]`: boot a guest image on KVM and run it until it halts, exits through the exit port, faults
// or is interrupted. Options are checked here, before any VM exists (bad ones: one line, exit 2); the loader
// and the VMM are imported lazily so that `--help` and bad options cost nothing.
import { Command, Option } from "commander";
import { fileURLToPath } from "node:url";
import { basename } from "node:path";
import { UsageError, parseIntOption } from "../errors.js";
import { writeStderr } from "../action.js";
import { statusForRun } from "../exit-status.js";
import { ExitCode } from "../exit-codes.js";
import { LAYOUT } from "../../vm/machine-layout.js";

/** The built-in demo guest (shipped prebuilt), from this file's place in any output folder. */
export const DEMO_GUEST = fileURLToPath(new URL("../../../../guest/prebuilt/demo.elf", import.meta.url));

interface RunOptions {
  mem?: string;
  kernel?: string;
  initrd?: string;
  load?: string;
  entry?: string;
  mode?: "real" | "protected" | "long";
  cmdline: string;
  trace?: boolean;
  stats?: boolean;
  json?: boolean;
  cpus: string;
  rng?: boolean;
  console?: boolean;
  disk: string[];
  pit?: boolean;
  raw?: boolean;
  gdb?: string;
  s?: boolean;
  gdbWait?: boolean;
  gdbArch?: string;
  introspect?: string;
  name?: string;
  introspectTimeout: string;
  introspectOnTimeout: "continue" | "stop";
}

/** `acpi=off` on a Linux command line: the kernel then ignores the ACPI tables (and finds the vCPUs in the MP table). */
const ACPI_OFF = /(^|\s)acpi=off(\s|$)/;

/** The most vCPUs `vmtool run` starts (also bounded by the host's KVM_CAP_MAX_VCPUS). */
export const MAX_CPUS = 64;

const MiB = 1024 * 1024;
/** Guest RAM with --kernel when --mem is not given: a distribution kernel needs ~64 MiB for itself alone. */
export const LINUX_DEFAULT_RAM = 256 * MiB;

export function register(program: Command): void {
  program
    .command("run")
    .summary("run a guest image (flat binary, ELF32/ELF64, Multiboot) on KVM")
    .description(
      "Run a guest on /dev/kvm with vmtool's own small VMM: one vCPU (or --cpus), the debug console (port 0xE9) and a " +
        "16550A UART (COM1, 0x3F8, IRQ 4) on standard output/input, the exit port 0xF4, and virtio-mmio devices " +
        "(--rng, --console, --disk) from 0xD0000000 on IRQs 5, 6, 7...\n" +
        "The format comes from the file: Multiboot v1 (protected mode, EAX=0x2BADB002, EBX=info), ELF32 " +
        "(protected mode), ELF64 (long mode), else a flat binary placed with --load/--entry/--mode. Without FILE, " +
        "the built-in demo guest runs.\n" +
        "On a terminal, standard input is raw (keys go to the guest as typed, Ctrl-C included): Ctrl-A x ends " +
        "the run, Ctrl-A h lists the other keys.\n" +
        "Exit status: 0 the guest halted with interrupts off or powered off (ACPI S5), (V<<1)|1 the guest wrote V to port 0xF4, 2 bad " +
        "usage or image, 4 guest fault (register dump on stderr), 6 host cannot run VMs, 8 vmtool's bug, 10 the " +
        "guest's output could not be written, 12 the introspection tool did not answer (--introspect-on-timeout stop), 14 the guest reset the machine (i8042), 16 gdb killed the guest (--gdb, docs/gdb.md), 129/130/131/143 SIGHUP/SIGINT (or Ctrl-A x)/SIGQUIT/SIGTERM, " +
        "141 standard output closed by its reader.",
    )
    .argument("[file]", "guest image (default: the built-in demo guest)")
    .option(
      "--mem <size>",
      `guest RAM, e.g. 64M or 1G (${LAYOUT.MIN_RAM / MiB} MiB .. ${LAYOUT.MAX_RAM / MiB} MiB; default ` +
        `${LAYOUT.DEFAULT_RAM / MiB}M, ${LINUX_DEFAULT_RAM / MiB}M with --kernel)`,
    )
    .option(
      "--kernel <file>",
      "boot a Linux kernel (bzImage through the 64-bit boot protocol, or an uncompressed vmlinux through PVH) " +
        "instead of FILE, with ACPI and MP tables and the PC devices it probes (CMOS RTC, i8042 reset line, ACPI " +
        "power-off); console=ttyS0 is added when --cmdline names no console (docs/linux.md)",
    )
    .option("--initrd <file>", "with --kernel: the initial RAM disk (initramfs) handed to the kernel")
    .option(
      "--load <addr>",
      "flat binaries: guest physical load address (default 0x7c00 real, 0x100000 otherwise)",
    )
    .option("--entry <addr>", "flat binaries: entry address (default: the load address)")
    .addOption(
      new Option("--mode <mode>", "flat binaries: CPU mode at entry (default real)").choices([
        "real",
        "protected",
        "long",
      ]),
    )
    .option("--cmdline <text>", "command line handed to the guest (machine description, Multiboot)", "")
    .option(
      "--trace",
      "print one line per VM exit on stderr (sequence, reason, port/address, size, data, RIP)",
    )
    .option("--stats", "at the end, print exits by reason and by port/address with counts and times (stderr)")
    .option("--json", "with --stats: the statistics as JSON (implies --stats)")
    .option(
      "--cpus <n>",
      `number of vCPUs, 1..${MAX_CPUS}: vCPU 0 starts the guest, the others wait for INIT-SIPI-SIPI from it`,
      "1",
    )
    .option(
      "--pit",
      "add the i8254 PIT (in-kernel, ports 0x40-0x43, IRQ 0); off by default: no vmtool device needs it and " +
        "its teardown adds 15-20 ms to every run",
    )
    .option("--rng", "add a virtio-rng device (virtio-mmio, entropy from the host)")
    .option("--console", "add a virtio-console on standard input/output (COM1 then gets no input)")
    .option(
      "--no-raw",
      "keep a terminal on standard input in its usual (cooked) mode: line editing and echo by the terminal, " +
        "Ctrl-C ends vmtool",
    )
    .option(
      "--introspect <where>",
      "a KVMI introspection socket: connect:PATH (a tool listens there; vmtool connects before the guest " +
        "starts), listen:PATH (vmtool listens, mode 0600; tools connect while the guest runs)",
    )
    .option("--name <name>", "the VM's name for introspection tools (default: the image's file name)")
    .option("--introspect-timeout <seconds>", "how long a vCPU waits for the tool's reply to an event", "15")
    .addOption(
      new Option("--introspect-on-timeout <what>", "when that time passes: the vCPU goes on, or the VM stops")
        .choices(["continue", "stop"])
        .default("continue"),
    )
    .option(
      "--disk <file[,ro]>",
      "add a virtio-blk device backed by FILE (',ro': read-only); repeat for more disks",
      (v: string, acc: string[]) => [...acc, v],
      [] as string[],
    )
    // The GDB remote stub (docs/gdb.md).
    .option(
      "--gdb <dev>",
      "serve gdb's remote protocol on DEV: tcp::PORT (127.0.0.1), tcp:HOST:PORT, or unix:PATH (mode 0600)",
    )
    .option("-s", "short for --gdb tcp::1234")
    .option("--gdb-wait", "with --gdb: stop before the guest's first instruction until gdb continues it")
    .addOption(
      new Option(
        "--gdb-arch <arch>",
        "with --gdb: the register layout gdb gets (default: from the vCPU's mode when gdb connects)",
      ).choices(["i8086", "i386", "i386:x86-64"]),
    )
    .action(async (file: string | undefined, o: RunOptions) => {
      const status = await runCommand(file, o);
      await exitNow(status);
    });
}

async function runCommand(file: string | undefined, o: RunOptions): Promise<number> {
  // The VM is created as soon as the options it depends on are checked: the kernel's teardown of a VM with an
  // in-kernel irqchip waits until ~15-20 ms after the irqchip was made (docs/run.md, "Start-up"), which a
  // guest that ends at once would otherwise pay at its end. Everything else is checked before any guest code
  // runs; a bad option or image closes the VM again and exits with status 2.
  if (o.kernel !== undefined) {
    if (file !== undefined)
      throw new UsageError(`--kernel ${o.kernel} and a guest image ${file}: give one of them`);
    const flat = (["load", "entry", "mode"] as const).filter((k) => o[k] !== undefined);
    if (flat.length > 0)
      throw new UsageError(
        `--${flat[0]} applies to flat binaries, not to --kernel (the kernel says where it goes)`,
      );
  } else if (o.initrd !== undefined) throw new UsageError("--initrd needs --kernel");
  const mem = o.mem ?? `${(o.kernel !== undefined ? LINUX_DEFAULT_RAM : LAYOUT.DEFAULT_RAM) / MiB}M`;
  const memSize = Number(
    parseIntOption(mem, "--mem", { min: BigInt(LAYOUT.MIN_RAM), max: BigInt(LAYOUT.MAX_RAM) }),
  );
  if (memSize % 4096 !== 0) throw new UsageError(`--mem: ${mem} is not a multiple of 4 KiB`);
  const cpus = Number(parseIntOption(o.cpus, "--cpus", { min: 1n, max: BigInt(MAX_CPUS) }));
  const gdb = await gdbOptions(o);
  const { Vm } = await import("../../vm/vm.js");
  const { startupMark } = await import("../../vmm/startup-marks.js");
  startupMark("KVM bindings loaded");
  // An introspection tool may map guest RAM (VMTOOL_GET_RAM_MAPPING): then it is a memfd.
  const vm = Vm.create({ memSize, pit: o.pit ?? false, sharedRam: o.introspect !== undefined });
  startupMark("VM created");
  try {
    return await runWithVm(vm, memSize, cpus, file, o, gdb);
  } finally {
    vm.close(); // runMachine has closed it already unless the run never started
  }
}

async function runWithVm(
  vm: import("../../vm/vm.js").Vm,
  memSize: number,
  cpus: number,
  file: string | undefined,
  o: RunOptions,
  gdb: import("../../gdb/attach.js").GdbRunOptions | undefined,
): Promise<number> {
  const disks = o.disk.map(parseDisk);
  const { planVirtio, MAX_VIRTIO_DEVICES } = await import("../../devices/virtio/placement.js");
  const count = planVirtio({ rng: o.rng, console: o.console, disks }).length;
  if (count > MAX_VIRTIO_DEVICES)
    throw new UsageError(`${count} virtio devices: at most ${MAX_VIRTIO_DEVICES}`);
  // Each disk is opened and locked here, before any guest code runs (a missing, unreadable, too small or locked
  // file is one line, exit 2; all are open at once, so one image given twice is refused too), and stays open,
  // locked, for the whole run: the I/O worker serves these very descriptors.
  const opened: import("../../backends/block-file.js").FileBlockBackend[] = [];
  try {
    if (disks.length > 0) {
      const { FileBlockBackend } = await import("../../backends/block-file.js");
      for (const d of disks) opened.push(FileBlockBackend.open(d.path, d.readOnly));
    }
    return await runGuest(
      vm,
      memSize,
      cpus,
      file,
      o,
      disks.map((d, i) => ({ ...d, opened: opened[i].descriptor() })),
      gdb,
    );
  } finally {
    for (const b of opened) b.close();
  }
}

async function runGuest(
  vm: import("../../vm/vm.js").Vm,
  memSize: number,
  cpus: number,
  file: string | undefined,
  o: RunOptions,
  disks: { path: string; readOnly: boolean; opened: unknown }[],
  gdbOpts: import("../../gdb/attach.js").GdbRunOptions | undefined,
): Promise<number> {
  const { planVirtio, linuxCmdline } = await import("../../devices/virtio/placement.js");
  const virtio = planVirtio({ rng: o.rng, console: o.console, disks });
  const linuxWords =
    o.kernel !== undefined ? (await import("../../loader/linux/index.js")).linuxCmdline : undefined;
  const userCmdline = linuxWords ? linuxWords(o.cmdline) : o.cmdline;
  // A Linux kernel finds the virtio-mmio devices in the DSDT; the virtio_mmio.device= words (which a kernel
  // with CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES would register a second time) only when ACPI is off.
  const virtioWords = linuxWords === undefined || ACPI_OFF.test(o.cmdline) ? linuxCmdline(virtio) : "";
  const cmdline = [userCmdline, virtioWords].filter((p) => p !== "").join(" ");
  const addr = (v: string | undefined, what: string) =>
    v === undefined ? undefined : Number(parseIntOption(v, what, { max: 0xffff_ffffn }));
  const load = addr(o.load, "--load");
  const entry = addr(o.entry, "--entry");
  const stats = o.stats || o.json;
  const path = file ?? DEMO_GUEST;
  const introspectTimeout = Number(
    parseIntOption(o.introspectTimeout, "--introspect-timeout", { min: 1n, max: 3600n }),
  );

  // A vCPU thread was started before the options were parsed (or starts now, before the heavy modules
  // load): its start-up overlaps the rest. A run that needs none runs its vCPU on this thread (below).
  const { takeVcpuThread, hasEarlyVcpuThread } = await import("../../vmm/early-thread.js");
  const { startupMark } = await import("../../vmm/startup-marks.js");
  startupMark("options checked");
  const threadOpts = { trace: o.trace ?? false, stats: stats ?? false };
  // One vCPU that nothing may park, COM1 on its own bus: its loop runs on the main thread, with no worker
  // (main-thread-vcpu.ts), unless a thread was started early anyway (early-thread.ts guesses from raw words).
  const onMain = cpus === 1 && virtio.length === 0 && o.introspect === undefined && gdbOpts === undefined;
  const thread =
    onMain && !hasEarlyVcpuThread()
      ? (await import("../../vmm/main-thread-vcpu.js")).mainThreadVcpu(threadOpts)
      : takeVcpuThread(threadOpts);
  let loader: typeof import("../../loader/index.js");
  let plan: import("../../loader/index.js").LoadPlan;
  let linux: typeof import("../../loader/linux/index.js") | undefined;
  let linuxPlan: import("../../loader/linux/index.js").LinuxPlan | undefined;
  let tables: import("../../loader/linux/index.js").PlatformTables | undefined;
  try {
    loader = await import("../../loader/index.js");
    loader.checkCmdline(o.cmdline);
    checkWholeCmdline(o.cmdline, cmdline, (await import("../../loader/boot-info.js")).CMDLINE_MAX);
    if (o.kernel !== undefined) {
      linux = await import("../../loader/linux/index.js");
      // The ACPI and MP tables, built (and so checked) before any VM runs; written at load.
      tables = linux.buildPlatformTables({
        cpus,
        virtio: virtio.map(({ base, size, irq }) => ({ base, size, irq })),
      });
      linuxPlan = linux.planLinux(o.kernel, {
        memSize,
        cmdline,
        initrdPath: o.initrd,
        acpiRsdp: tables.rsdp,
      });
      plan = {
        format: "flat",
        mode: linuxPlan.format === "pvh" ? "protected" : "long",
        entry: linuxPlan.entry,
        segments: [],
        describe: linuxPlan.describe,
      };
    } else plan = loader.planLoad(path, { memSize, load, entry, mode: o.mode });
    startupMark("image read and checked");
  } catch (e) {
    await thread.cancel();
    throw e;
  }
  let gdb: import("../../gdb/attach.js").GdbAttachment | undefined;
  if (gdbOpts) {
    try {
      const { GdbAttachment } = await import("../../gdb/attach.js");
      gdb = await GdbAttachment.listen(gdbOpts, (line) => writeStderr(`vmtool: ${line}\n`));
    } catch (e) {
      await thread.cancel();
      throw e;
    }
    gdb.holdBeforeStart(thread.control);
  }
  const { runMachine } = await import("../../vmm/machine.js");
  startupMark("VM layer loaded");
  if (o.trace) writeStderr(`vmtool: ${plan.describe}\n`);

  const { cpuDevices, PIT_DEVICE } = await import("../../loader/boot-info.js"); // already loaded by the loader's index
  const devices = [
    ...loader.STANDARD_DEVICES,
    ...cpuDevices(cpus),
    ...(o.pit ? [PIT_DEVICE] : []),
    ...virtio.map((d) => ({
      kind: "virtio-mmio" as const,
      name: d.name,
      space: "mmio" as const,
      base: d.base,
      size: d.size,
      irq: d.irq,
      deviceId: d.deviceId,
    })),
  ];
  // Introspection: in connect mode the tool is reached (and the handshake done) before the guest starts.
  let introspection: import("../../introspect/index.js").Introspection | undefined;
  if (o.introspect !== undefined) {
    const intro = await import("../../introspect/index.js");
    try {
      introspection = await intro.Introspection.prepare({
        endpoint: intro.parseEndpoint(o.introspect),
        name: o.name ?? (file === undefined ? "demo" : basename(file)),
        replyTimeoutMs: introspectTimeout * 1000,
        onTimeout: o.introspectOnTimeout,
        log: (line) => writeStderr(`vmtool: ${line}\n`),
      });
    } catch (e) {
      await thread.cancel();
      throw e;
    }
  }
  const result = await runMachine({
    vm,
    memSize,
    thread,
    trace: o.trace,
    stats,
    cpus,
    virtio,
    stdinToConsole: o.console ?? false,
    pit: o.pit ?? false,
    platform: linuxPlan !== undefined,
    raw: o.raw ?? true,
    // The process exits as soon as the run is over: threads that said they stopped are not waited for.
    join: false,
    // At most one of gdb and introspection (gdbOptions refuses both at once): each drives the vCPUs' debug state.
    onStart: (m) => {
      // Once the vCPUs run (and signals end the run cleanly): what boots, on what machine.
      if (linuxPlan) writeStderr(`vmtool: ${linuxSummary(linuxPlan, memSize, cpus, virtio)}\n`);
      if (gdb) gdb.onStart(m);
      else introspection?.attach(m);
    },
    onPaused: gdb ? (m) => gdb.onPaused(m) : introspection ? (m) => introspection.onPaused(m) : undefined,
    onEnding: introspection ? () => introspection.finish() : undefined,
    load: (mem) => {
      if (linux && linuxPlan) {
        if (tables) linux.applyPlatformTables(mem, tables);
        startupMark("platform tables written");
        return linux.applyLinuxPlan(mem, linuxPlan);
      }
      // The VM was made for this run and no guest code has run yet: its RAM still reads as zero.
      loader.applyPlan(mem, plan, { freshRam: true });
      const bootInfo = loader.writeBootInfo(mem, { memSize, cpus, devices, cmdline, plan });
      const multibootInfo = plan.multiboot
        ? loader.writeMultibootInfo(mem, { memSize, cmdline, plan })
        : undefined;
      return { mode: plan.mode, entry: plan.entry, bootInfo, multibootInfo };
    },
  });

  const { end } = result;
  let status = statusForRun(end);
  if (gdb) {
    if (gdb.killed) status = ExitCode.GDB_KILLED;
    await gdb.finish(status);
  }
  if (end.kind === "internal") writeStderr(`vmtool: internal error: ${end.reason}\n`);
  else if (end.kind === "signal" || end.kind === "escape") writeStderr(`vmtool: ${end.reason}\n`);
  else if (end.kind === "output-failed") writeStderr(`vmtool: error: ${end.reason}\n`);
  else if (end.kind === "fault" && /emulation failure/.test(end.reason))
    writeStderr(
      "vmtool: KVM's instruction emulator cannot run that instruction; a KVM that emulates guest ring 0 " +
        '(kvm_pvm) cannot run a stock Linux kernel at all: docs/linux.md, "Where it runs"\n',
    );
  else if (end.kind === "exit-port" && o.trace) writeStderr(`vmtool: ${exitPortLine(end.value, status)}\n`);
  else if (o.trace && end.kind !== "fault" && end.kind !== "output-closed")
    writeStderr(`vmtool: ${end.reason}\n`);
  if (stats && result.stats) {
    const report = await import("../../vmm/stats-report.js");
    if (o.json)
      writeStderr(
        JSON.stringify(report.statsJson(result.stats, { ...result, status, reason: end.reason })) + "\n",
      );
    else writeStderr(report.formatStatsTable(result.stats) + report.formatIoLine(result));
  }
  return status;
}

/** The one line `vmtool run --kernel` starts with: what boots, on what machine. */
function linuxSummary(
  plan: import("../../loader/linux/index.js").LinuxPlan,
  memSize: number,
  cpus: number,
  virtio: readonly { type: string; name: string; path?: string }[],
): string {
  const version = plan.kernelVersion?.split(" ")[0];
  const parts = [
    `Linux${version ? ` ${version}` : ""}, ${plan.format === "pvh" ? "PVH" : "bzImage"}`,
    memSize % MiB === 0 ? `${memSize / MiB} MiB` : `${memSize} bytes`,
    `${cpus} vCPU${cpus > 1 ? "s" : ""}`,
  ];
  if (plan.initrd) parts.push(`initrd ${(plan.initrd.size / 1e6).toFixed(1)} MB`);
  let disk = 0;
  for (const d of virtio)
    parts.push(
      d.type === "blk"
        ? `virtio-blk vd${String.fromCharCode(0x61 + disk++)}${d.path ? ` (${basename(d.path)})` : ""}`
        : `virtio-${d.type}`,
    );
  return parts.join(", ");
}

/** The guest's command line is the user's plus vmtool's virtio words: when only the sum is too long, say so. */
function checkWholeCmdline(user: string, whole: string, max: number): void {
  const userBytes = Buffer.byteLength(user);
  const wholeBytes = Buffer.byteLength(whole);
  if (wholeBytes <= max) return;
  throw new UsageError(
    `--cmdline: ${userBytes} bytes, plus the ${wholeBytes - userBytes} vmtool appends for the virtio devices ` +
      `(${whole.slice(user.length).trim()}), is more than ${max} bytes`,
  );
}

/** What a write of `value` to the exit port made of the status, for --trace. */
function exitPortLine(value: number, status: number): string {
  const full = value * 2 + 1; // the unclipped (V << 1) | 1
  return full === status
    ? `the guest wrote ${value} to the exit port: exit status ${status}`
    : `the guest wrote 0x${value.toString(16)} to the exit port: (V << 1) | 1 = 0x${full.toString(16)}, ` +
        `of which the OS keeps 8 bits: exit status ${status}`;
}

/**
 * End the process once a run is over. Node's own exit would first join every worker thread's isolate teardown
 * and dispose of V8, ~10 ms of a short run here (docs/run.md, "Start-up"), for nothing: the VM is closed, the
 * threads have said they stopped, and everything vmtool and the guest wrote went out through writeSync. The
 * 'exit' listeners still run (they restore the terminal), as with process.exit(). Node started with options
 * of its own (--cpu-prof, --inspect, ...) exits normally: those write their results during Node's teardown.
 */
async function exitNow(status: number): Promise<void> {
  process.exitCode = status;
  if (process.execArgv.length > 0) return;
  const libc = await import("../../kvm/libc.js");
  process.emit("exit", status);
  libc._exit(status);
}

/** The --gdb options, checked before any VM exists (undefined: no stub). */
async function gdbOptions(o: RunOptions): Promise<import("../../gdb/attach.js").GdbRunOptions | undefined> {
  if (o.gdb !== undefined && o.s) throw new UsageError("-s is --gdb tcp::1234: give one of -s and --gdb");
  const spec = o.gdb ?? (o.s ? "tcp::1234" : undefined);
  if (spec !== undefined && o.introspect !== undefined)
    throw new UsageError("--gdb and --introspect both drive the vCPUs' debug state: give one of them");
  if (spec === undefined) {
    if (o.gdbWait) throw new UsageError("--gdb-wait needs --gdb (or -s)");
    if (o.gdbArch) throw new UsageError("--gdb-arch needs --gdb (or -s)");
    return undefined;
  }
  const { parseGdbEndpoint } = await import("../../gdb/server.js");
  return {
    endpoint: parseGdbEndpoint(spec),
    wait: o.gdbWait ?? false,
    arch: o.gdbArch as import("../../gdb/registers.js").GdbArch | undefined,
  };
}

/** `--disk FILE[,ro]`: the file, read-only when it ends in ",ro" (",rw" is accepted too). */
function parseDisk(v: string): { path: string; readOnly: boolean } {
  let path = v;
  let readOnly = false;
  if (v.endsWith(",ro")) {
    path = v.slice(0, -3);
    readOnly = true;
  } else if (v.endsWith(",rw")) path = v.slice(0, -3);
  if (path === "") throw new UsageError(`--disk ${v}: no file name`);
  return { path, readOnly };
}
