#!/usr/bin/env node
// The `vmtool` command: parses the command line and hands each subcommand to its module.
// Subcommand modules (commands/*.ts) only declare options; the heavy layers load lazily inside the action,
// so `vmtool --help` and start-up stay fast.
import "../vmm/startup-marks.js"; // first: its mark says when the static imports were loaded
import { Command, CommanderError } from "commander";
import { commands } from "./commands/index.js";
import { reportError, writeStderr, writeStdoutQuietly } from "./action.js";
import { ExitCode } from "./exit-codes.js";
import { startEarlyVcpuThread } from "../vmm/early-thread.js";

// `vmtool run` starts its vCPU thread before anything else (vmtool.ts, the installed entry, did it already):
// see src/vmm/early-thread.ts. No top-level await in this file: the installed command is a CommonJS bundle
// (scripts/bundle.mjs says why).
if (process.argv[2] === "run") startEarlyVcpuThread(process.argv);

const program = new Command("vmtool")
  .description(
    "Learn, explore and introspect hardware virtualization on Linux: what the CPU and KVM can do, " +
      "which vCPUs run where, and a small VMM on /dev/kvm to watch a guest exit by exit.",
  )
  .version("0.1.0")
  .showHelpAfterError("(run with --help for usage)")
  // Commander's own messages (errors, help) through writeSync: a closed or full stream never throws later.
  .configureOutput({ writeOut: writeStdoutQuietly, writeErr: writeStderr })
  .exitOverride();

// Only the subcommand asked for is declared (building all of them is ~5 ms of every run); anything else
// (--help, a typo that wants a suggestion) gets them all.
const asked = Object.hasOwn(commands, process.argv[2] ?? "") ? commands[process.argv[2]] : undefined;
for (const register of asked ? [asked] : Object.values(commands)) register(program);

const [verb, topic] = process.argv.slice(2);
if (verb === "help" && topic !== undefined && !Object.hasOwn(commands, topic)) {
  writeStderr(`vmtool: error: unknown command '${topic}' (vmtool --help lists them)\n`);
  process.exitCode = ExitCode.USAGE;
} else
  program.parseAsync(process.argv).catch((err: unknown) => {
    if (err instanceof CommanderError) {
      // Commander already printed the message (or the help text). Help asked for (--help, `help run`) is a
      // success; help shown because something was missing (`vmtool` alone, a command without its argument) is
      // bad usage.
      const ok =
        err.code === "commander.helpDisplayed" ||
        err.code === "commander.version" ||
        (err.code === "commander.help" && err.exitCode === 0);
      process.exitCode = ok ? ExitCode.OK : ExitCode.USAGE;
    } else {
      process.exitCode = reportError(err);
    }
  });
