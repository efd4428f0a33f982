// `vmtool vcpus`: which vCPUs were seen on which host CPU, from the vmtool module's debugfs tree or KVM's own.
import type { Command } from "commander";
import { parseIntOption } from "../errors.js";

export interface VcpusOptions {
  source: string;
  debugfs?: string;
  mount?: boolean;
  json?: boolean;
  sysregs?: boolean;
  sample: string;
}

/** The options that say where the vCPUs are read from, shared by `vcpus` and `watch`. */
export function withDebugfsSource(cmd: Command): Command {
  return cmd
    .option(
      "--source <source>",
      "vmtool (the module's tree), kvm (KVM's debugfs), or auto: the module if loaded",
      "auto",
    )
    .option("--debugfs <path>", "another debugfs mount point, or a copied tree (default /sys/kernel/debug)")
    .option("--mount", "mount debugfs at /sys/kernel/debug first when it is not (root only)");
}

export function register(program: Command): void {
  withDebugfsSource(
    program
      .command("vcpus")
      .description(
        "Snapshot of the vCPUs seen on each host CPU, with last-seen time and age: from the vmtool module's " +
          "debugfs tree (<debugfs>/vmtool) or, on any KVM host, from KVM's debugfs and /proc",
      ),
  )
    .option("--sysregs", "module only: also show each CPU's control registers (cpu-NNN/sysregs)")
    .option("--sample <ms>", "kvm only: watch the vCPU threads this long to see which are running", "200")
    .option("--json", "print the snapshot as JSON")
    .addHelpText(
      "after",
      "\nExamples:\n  sudo vmtool vcpus                      the module's tree, else KVM's\n" +
        "  sudo vmtool vcpus --source kvm --json  every KVM VM on this host, by process\n" +
        "  vmtool vcpus --debugfs ./copied-tree   a tree copied from another machine",
    )
    .action(async (opts: VcpusOptions) => {
      const { runVcpus } = await import("./observer-actions.js");
      const sampleMs = Number(parseIntOption(opts.sample, "--sample", { min: 0n, max: 60000n }));
      await runVcpus({ ...opts, sampleMs });
    });
}
