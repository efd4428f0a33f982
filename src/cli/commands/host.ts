// `vmtool host`: can this machine run VMs, and how well (kvm-ok / virt-host-validate style).
import type { Command } from "commander";
import { printJson, writeStdout } from "../action.js";
import { ExitCode } from "../exit-codes.js";

export function register(program: Command): void {
  program
    .command("host")
    .description(
      "can this machine run VMs: a verdict, then PASS/WARN/FAIL checks (CPU, VMX/SVM, firmware, hypervisor, " +
        "/dev/kvm, KVM module and parameters, API version, capabilities, supported CPUID, MSR lists)",
    )
    .option("--caps", "also list every KVM_CAP_* the headers know, with this kernel's value")
    .option(
      "--json",
      "print the whole report as JSON (verdict, checks, backends, caps, what could not be read)",
    )
    .addHelpText(
      "after",
      "\nWorks without root (it says what it could not read). Exit status 0 when VMs can run, 6 when not.",
    )
    .action(async (opts: { caps?: boolean; json?: boolean }) => {
      const { hostReport } = await import("../../host/checks.js");
      const r = hostReport();
      if (opts.json === true) printJson(r);
      else {
        const { hostText } = await import("../../host/host-text.js");
        writeStdout(hostText(r, opts.caps === true));
      }
      if (!r.canRunVms) process.exitCode = ExitCode.HOST_UNSUPPORTED;
    });
}
