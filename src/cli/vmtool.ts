#!/usr/bin/env node
// The `vmtool` command as installed (package.json "bin": scripts/bundle.mjs bundles this file). Before the
// command line interface is even loaded, `vmtool run` starts its vCPU thread: a new thread's start-up is the
// longest part of a short run and overlaps everything after it (docs/run.md, "Start-up"). This file and what
// it imports statically stay tiny for that reason; the CLI itself is main.ts, bundled as cli.cjs and loaded
// with its code cache (src/vmm/code-cache.ts).
import { fileURLToPath } from "node:url";
import "../vmm/startup-marks.js";
import { startEarlyVcpuThread } from "../vmm/early-thread.js";
import { requireBundle } from "../vmm/code-cache.js";

/** Set by scripts/bundle.mjs in the installed entry: the CLI bundle, relative to this file's compiled place. */
declare const VMTOOL_CLI_BUNDLE: string | undefined;

startEarlyVcpuThread(process.argv);
if (typeof VMTOOL_CLI_BUNDLE === "string")
  requireBundle(fileURLToPath(new URL(VMTOOL_CLI_BUNDLE, import.meta.url)));
else void import("./main.js");
