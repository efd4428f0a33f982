#!/usr/bin/env node
// The `vmtool` command: parses the command line and hands each subcommand to its module.
// Subcommand modules (commands/*.ts) only declare options; the heavy layers load lazily inside the action,
// so `vmtool --help` and start-up stay fast.
import "../vmm/startup-marks.js"; // first: its mark says when the static imports were loaded
import { Command, CommanderError } from "commander";
import { commands } from "./commands/index.js";
import { reportError } from "./action.js";
import { ExitCode } from "./exit-codes.js";

// `vmtool run` starts its vCPU thread before anything else: see src/vmm/early-thread.ts.
if (process.argv[2] === "run") (await import("../vmm/early-thread.js")).startEarlyVcpuThread(process.argv);

const program = new Command("vmtool")
  .description(
    "Learn, explore and introspect hardware virtualization on Linux: what the CPU and KVM can do, " +
      "which vCPUs run where, and a small VMM on /dev/kvm to watch a guest exit by exit.",
  )
  .version("0.1.0")
  .showHelpAfterError("(run with --help for usage)")
  .exitOverride();

for (const register of commands) register(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    // Commander already printed the message (or the help text).
    const ok =
      err.code === "commander.helpDisplayed" ||
      err.code === "commander.version" ||
      err.code === "commander.help";
    process.exitCode = ok ? ExitCode.OK : ExitCode.USAGE;
  } else {
    process.exitCode = reportError(err);
  }
}
