// `vmtool introspect`: a KVMI client for a running VM (vmtool's own, or any VMM that speaks the kvmi-v7
// dialect): facts, pause and resume, registers, memory, page walks, a RAM dump, events. The actions are in
// src/cli/introspect/actions.ts, loaded only when a subcommand runs.
import type { Command } from "commander";
import { withConnection, type ConnectOptions } from "../introspect/connect.js";

type Actions = typeof import("../introspect/actions.js");

/** Run an action with the errors the VMM's answers stand for, and Ctrl-C before anything was done. */
async function run(fn: (a: Actions) => Promise<void>): Promise<void> {
  const actions = await import("../introspect/actions.js");
  const { Cancelled, explain } = await import("../introspect/errors.js");
  try {
    await fn(actions);
  } catch (err) {
    if (err instanceof Cancelled) {
      process.exitCode = err.signal === "SIGINT" ? 130 : 143;
      return;
    }
    throw explain(err);
  }
}

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

const WHERE =
  "\nWhere the VMM is: --socket PATH connects to `vmtool run --introspect listen:PATH`; --listen PATH waits there\n" +
  "for `vmtool run --introspect connect:PATH` (or any VMM that connects to a KVMI tool, as QEMU does).\n" +
  "Exit status: 0 done, 2 bad input (an option, an address the VMM refuses), 6 the VMM cannot do it,\n" +
  "10 the output could not be written, 12 the VMM went away, stopped answering or broke the protocol.";

export function register(program: Command): void {
  const intro = program
    .command("introspect")
    .description(
      "introspect a running VM over KVMI (the kvmi-v7 dialect of libkvmi and LibVMI): facts, pause and resume, " +
        "registers, memory, page walks, a RAM dump, breakpoint/step/MSR/page-write events",
    )
    .addHelpText("after", WHERE);

  withConnection(
    intro
      .command("info")
      .description(
        "what the VM and its VMM are and can do: name, UUID, vCPUs (TSC), memory map, how RAM is read " +
          "(shared mapping or READ_PHYSICAL), every command and event with CHECK_COMMAND/CHECK_EVENT and why not",
      ),
  ).action((opts: ConnectOptions) => run((a) => a.infoAction(opts)));

  withConnection(
    intro
      .command("pause")
      .description(
        "pause the vCPUs (all, or --vcpu N), print where each stopped, and hold them until Ctrl-C, SIGTERM or " +
          "--for SECONDS; then resume them (a KVMI pause lasts as long as the connection that asked for it)",
      ),
  )
    .option("--vcpu <n>", "only this vCPU")
    .option("--for <seconds>", "hold this long, then resume")
    .action((opts: ConnectOptions & { vcpu?: string; for?: string }) => run((a) => a.pauseAction(opts)));

  withConnection(
    intro
      .command("resume")
      .description(
        "make sure every vCPU runs: pause them all, answer CONTINUE to any event a vCPU was left waiting in, " +
          "then let them all go",
      ),
  ).action((opts: ConnectOptions) => run((a) => a.resumeAction(opts)));

  withConnection(
    intro
      .command("regs")
      .description(
        "registers of the vCPUs (all, or --vcpu N), paused for the read: mode, general registers, flags, " +
          "segments with their hidden base/limit/attributes, descriptor tables, control registers, MSRs",
      ),
  )
    .option("--vcpu <n>", "only this vCPU")
    .action((opts: ConnectOptions & { vcpu?: string }) => run((a) => a.regsAction(opts)));

  withConnection(
    intro
      .command("read")
      .description(
        "read guest memory: LEN bytes at a guest-physical address (or, with --virt, a virtual one through a " +
          "paused vCPU's paging) as a hexdump, or raw into --out FILE",
      )
      .argument("<address>", "GPA (or GVA with --virt): decimal or 0x hex")
      .argument("<len>", "bytes (K/M/G suffixes; at most 1 MiB as a hexdump, 1 GiB with --out)"),
  )
    .option("--virt", "the address is virtual, translated through --vcpu's page tables")
    .option("--vcpu <n>", "with --virt: whose paging (default 0)")
    .option("--out <file>", "write the raw bytes to this file (created or truncated)")
    .action(
      (addr: string, len: string, opts: ConnectOptions & { virt?: boolean; vcpu?: string; out?: string }) =>
        run((a) => a.readAction(addr, len, opts)),
    );

  withConnection(
    intro
      .command("write")
      .description("write guest memory at a physical (or, with --virt, virtual) address: hex bytes or --file")
      .argument("<address>", "GPA (or GVA with --virt)")
      .argument("[bytes]", 'hexadecimal bytes, for example "90 90 cc"'),
  )
    .option("--file <file>", "write this file's bytes (at most 16 MiB)")
    .option("--virt", "the address is virtual, translated through --vcpu's page tables")
    .option("--vcpu <n>", "with --virt: whose paging (default 0)")
    .action(
      (
        addr: string,
        bytes: string | undefined,
        opts: ConnectOptions & { virt?: boolean; vcpu?: string; file?: string },
      ) => run((a) => a.writeAction(addr, bytes, opts)),
    );

  withConnection(
    intro
      .command("translate")
      .description(
        "translate a guest-virtual address through a paused vCPU's paging, level by level (vmtool's " +
          "VMTOOL_TRANSLATE_EXPLAINED; only the result from other VMMs)",
      )
      .argument("<gva>", "the virtual address"),
  )
    .option("--vcpu <n>", "whose paging (default 0)")
    .action((gva: string, opts: ConnectOptions & { vcpu?: string }) =>
      run((a) => a.translateAction(gva, opts)),
    );

  withConnection(
    intro
      .command("dump")
      .description(
        "write all guest RAM to FILE, each range at its guest-physical offset (a raw physical image), with the " +
          "vCPUs paused unless --live; progress on a terminal; says whether the shared mapping or READ_PHYSICAL was used",
      )
      .argument("<file>", "the image file (created or truncated)"),
  )
    .option("--live", "do not pause the vCPUs (the image may then be inconsistent)")
    .option("--no-mapping", "read with READ_PHYSICAL even when the VMM offers its RAM mapping")
    .action((file: string, opts: ConnectOptions & { live?: boolean; mapping?: boolean }) =>
      run((a) => a.dumpAction(file, opts)),
    );

  withConnection(
    intro
      .command("events")
      .description(
        "enable events and print each as a line (or a JSON line with --json), answering as the options say: " +
          "breakpoints at addresses or ELF symbols, single steps, MSR writes, writes to protected pages",
      ),
  )
    .option(
      "--break <where>",
      "a breakpoint at a virtual address or, with --elf, a symbol[+offset] (repeatable)",
      collect,
    )
    .option("--elf <file>", "the guest's ELF executable, whose symbols --break may name")
    .option("--once", "remove a breakpoint when it is hit (default: step over it and keep it)")
    .option("--singlestep", "report every instruction of the vCPUs (all, or --vcpu N)")
    .option("--vcpu <n>", "with --singlestep: only this vCPU")
    .option("--msr <msr>", "report writes to this MSR (repeatable)", collect)
    .option(
      "--msr-value <msr=value>",
      "report writes to MSR and make them write VALUE instead (repeatable)",
      collect,
    )
    .option(
      "--write-protect <gpa[:len]>",
      "report writes to these guest-physical pages (repeatable)",
      collect,
    )
    .option(
      "--pf-action <action>",
      "answer page writes: continue (the write happens) or retry (unprotect, redo)",
      "continue",
    )
    .option("--action <action>", "answer other events: continue, retry or crash", "continue")
    .option("--count <n>", "stop after this many events")
    .option("--for <seconds>", "stop after this long")
    .addHelpText(
      "after",
      "\nOn its end (Ctrl-C, --count, --for) it puts the VM back: original bytes under the breakpoints, events\n" +
        "disabled, pages writable, vCPUs running. Ctrl-C is a normal end (status 0).",
    )
    .action((opts: import("../introspect/actions.js").EventsOptions) => run((a) => a.eventsAction(opts)));
}
