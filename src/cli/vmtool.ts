#!/usr/bin/env node
// The `vmtool` command as installed (package.json "bin": scripts/bundle.mjs bundles this file). Before the
// command line interface is even loaded, `vmtool run` starts its vCPU thread: a new thread's start-up is the
// longest part of a short run and overlaps everything after it (docs/run.md, "Start-up"). This file and what
// it imports statically stay tiny for that reason; the CLI itself is main.ts, bundled as cli.cjs and loaded
// with its code cache (src/vmm/code-cache.ts).
import { fileURLToPath } from "node:url";
import "../vmm/startup-marks.js";
import { startEarlyVcpuThread } from "../vmm/early-thread.js";
import { preferEagerCaches, requireBundle } from "../vmm/code-cache.js";

/** Set by scripts/bundle.mjs in the installed entry: the CLI bundle, relative to this file's compiled place. */
declare const VMTOOL_CLI_BUNDLE: string | undefined;

/**
 * Whether the CLI and the threads load their eager code caches: for a Linux boot (`run --kernel`), whose
 * first seconds run code that nothing else runs (loaders, ACPI tables, the AML writer), then compiled in
 * advance rather than on its first call. Under a slow CPU (the kvm_amd harness) that takes 0.1-0.9 s of CPU
 * off the start of a boot; every other command loads less with the usual caches (docs/run.md, "Start-up").
 */
function wantsEagerCache(argv: readonly string[]): boolean {
  const args = argv.slice(2);
  return args[0] === "run" && args.some((a) => a === "--kernel" || a.startsWith("--kernel="));
}

if (wantsEagerCache(process.argv)) preferEagerCaches();
startEarlyVcpuThread(process.argv);
if (typeof VMTOOL_CLI_BUNDLE === "string")
  requireBundle(fileURLToPath(new URL(VMTOOL_CLI_BUNDLE, import.meta.url)));
else void import("./main.js");
