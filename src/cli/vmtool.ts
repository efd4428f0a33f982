#!/usr/bin/env node
// The `vmtool` command as installed (package.json "bin": scripts/bundle.mjs bundles this file). Before the
// command line interface is even loaded, `vmtool run` starts its vCPU thread: a new thread's start-up is the
// longest part of a short run and overlaps everything after it (docs/run.md, "Start-up"). This file and what
// it imports statically stay tiny for that reason; the CLI itself is main.ts.
import "../vmm/startup-marks.js";
import { startEarlyVcpuThread } from "../vmm/early-thread.js";

startEarlyVcpuThread(process.argv);
void import("./main.js");
