// `vmtool vmx`: the VMX capability MSRs, decoded field by field (QEMU's vmxcap, and the MSRs it does not read).
import { Command, Option } from "commander";
import { printJson, writeStderr, writeStdout } from "../action.js";
import { parseIntOption } from "../errors.js";
import { ExitCode } from "../exit-codes.js";

export function register(program: Command): void {
  program
    .command("vmx")
    .description(
      "the VMX capability MSRs (IA32_VMX_BASIC ... IA32_VMX_EXIT_CTLS2, IA32_FEATURE_CONTROL) decoded field by field; " +
        "controls show no / yes / forced / default as vmxcap does",
    )
    .addOption(
      new Option(
        "--source <where>",
        "where to read the MSRs (default: the first that works, in this order)",
      ).choices(["module", "msr", "kvm", "file"]),
    )
    .option(
      "--msr-file <file>",
      'saved values: JSON {"0x480": "0x..."} or lines "0x480 0x..." (rdmsr -x output)',
    )
    .option("--cpu <n>", "CPU whose MSRs the msr driver reads", "0")
    .option(
      "--debugfs <dir>",
      "where debugfs is mounted (the module's files are in <dir>/vmtool)",
      "/sys/kernel/debug",
    )
    .option(
      "--json",
      "print JSON: {source, from, msrs, groups:[{name, msr, fields:[{name, bit|bits, value}]}]}",
    )
    .addHelpText(
      "after",
      "\nSources: module = the vmtool module's debugfs files; msr = /dev/cpu/N/msr (msr driver, root);\n" +
        "kvm = KVM's feature MSRs on /dev/kvm (what KVM offers a nested guest); file = --msr-file.\n" +
        "Exit status 6 when no source has VMX values (an AMD CPU, no VT-x, no root): the message says why for each.",
    )
    .action(
      async (opts: { source?: string; msrFile?: string; cpu: string; debugfs: string; json?: boolean }) => {
        const cpu = Number(parseIntOption(opts.cpu, "--cpu", { min: 0n, max: 8191n }));
        const { readVmxValues } = await import("../../host/vmx-source.js");
        const { NoVmxValues } = await import("../../host/errors.js");
        const text = await import("../../host/vmx-text.js");
        let values: import("../../host/vmx-source.js").VmxValues;
        try {
          values = readVmxValues({
            source: opts.source as "module" | "msr" | "kvm" | "file" | undefined,
            msrFile: opts.msrFile,
            cpu,
            debugfs: opts.debugfs,
          });
        } catch (err) {
          if (!(err instanceof NoVmxValues)) throw err;
          // Not an error of vmtool's: a clean "this host has no VMX" answer, as text or as JSON.
          const reason = text.noVmxReason(err);
          if (opts.json === true) printJson({ vmx: false, source: null, reason, tried: err.reasons });
          else writeStderr(`vmtool: ${reason}\n`);
          process.exitCode = ExitCode.HOST_UNSUPPORTED;
          return;
        }
        const { decodeAll } = await import("../../arch/vmx/decode.js");
        const groups = decodeAll(values.msrs);
        if (opts.json === true) printJson(text.vmxJson(values, groups));
        else writeStdout(`source: ${values.source} (${values.from})\n\n${text.groupsText(groups)}`);
      },
    );
}
