// The commands of the host, arch and observer layers write through the CLI's standard-output writer: a full
// disk (/dev/full) ends them with one line and status 10 (OUTPUT_FAILED), a closed pipe with 141.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, openSync, closeSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CLI, ROOT } from "../helpers/paths.js";
import { ExitCode } from "../../src/cli/exit-codes.js";
import { writeModuleTree } from "../observer/fake-module-tree.js";

const tree = mkdtempSync(join(tmpdir(), "vmtool-stdout-full-"));
test.after(() => rmSync(tree, { recursive: true, force: true }));
writeModuleTree(join(tree, "vmtool"), {
  cpus: 2,
  vcpus: 2,
  cpusPerVcpu: 1,
  now: Math.floor(Date.now() / 1000),
});

const COMMANDS: string[][] = [
  ["host"],
  ["host", "--json"],
  ["vmx", "--msr-file", join(ROOT, "test", "arch", "fixtures", "intel-ivy-bridge.msr")],
  ["vmx", "--json", "--msr-file", join(ROOT, "test", "arch", "fixtures", "intel-ivy-bridge.msr")],
  ["explain", "exit", "12"],
  ["explain", "msr", "0x480", "0xda040000000004", "--json"],
  ["vcpus", "--debugfs", tree],
  ["vcpus", "--json", "--debugfs", tree],
  ["watch", "--count", "1", "--debugfs", tree],
];

test("standard output on a full disk: one error line, status 10", () => {
  for (const args of COMMANDS) {
    const full = openSync("/dev/full", "w");
    try {
      const r = spawnSync(process.execPath, [CLI, ...args], {
        encoding: "utf8",
        stdio: ["ignore", full, "pipe"],
        timeout: 60_000,
      });
      assert.equal(r.status, ExitCode.OUTPUT_FAILED, `${args.join(" ")}: ${r.stderr}`);
      assert.equal(r.stderr, "vmtool: error: cannot write to standard output (ENOSPC)\n", args.join(" "));
    } finally {
      closeSync(full);
    }
  }
});
