// The command line itself: help asked for is a success on standard output; help shown because something is
// missing, an unknown command or option, is bad usage (status 2) on standard error.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { CLI } from "../helpers/paths.js";

function vmtool(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: 30_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test("help asked for: status 0, on standard output", () => {
  for (const args of [["--help"], ["help"], ["help", "run"], ["run", "--help"], ["--version"]]) {
    const r = vmtool(...args);
    assert.equal(r.status, 0, args.join(" "));
    assert.notEqual(r.stdout, "", args.join(" "));
    assert.equal(r.stderr, "", args.join(" "));
  }
});

test("no command, a command missing what it needs, an unknown command or option: status 2 on standard error", () => {
  for (const [args, message] of [
    [[], /Usage: vmtool/],
    [["explain"], /Usage: vmtool explain/],
    [["help", "bogus"], /^vmtool: error: unknown command 'bogus'/],
    [["bogus"], /unknown command 'bogus'/],
    [["run", "--bogus"], /unknown option '--bogus'/],
  ] as const) {
    const r = vmtool(...args);
    assert.equal(r.status, 2, args.join(" "));
    assert.equal(r.stdout, "", args.join(" "));
    assert.match(r.stderr, message);
  }
});
