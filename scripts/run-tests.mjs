// Runs the compiled test files (dist/test/**/*.test.js) with Node's own test runner.
// `npm test -- virtio uart` runs only the files whose path contains one of the words.
// VMTOOL_DIST=other-dir runs the tests compiled into another output folder (tsc --outDir other-dir).
// A test (and a test file) without its own timeout gets VMTOOL_TEST_TIMEOUT seconds (1800: the kvm_amd harness
// runs for minutes); a file's process exits when its tests end even if a test left a handle open; the whole run
// is stopped after VMTOOL_SUITE_TIMEOUT seconds (2700),
// and whatever the tests started (guests, QEMU, gdb) is killed with them: the runner has its own process group.
import { readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { spawn } from "node:child_process";

function walk(dir, out = []) {
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p, out);
    else if (name.endsWith(".test.js")) out.push(p);
  }
  return out;
}

const filters = process.argv.slice(2);
const testDir = join(process.env.VMTOOL_DIST || "dist", "test");
const files = walk(testDir).filter(
  (f) => filters.length === 0 || filters.some((w) => relative(testDir, f).includes(w)),
);
if (files.length === 0) {
  console.error(`run-tests: no test file matches ${filters.join(" ") || "dist/test/**/*.test.js"}`);
  process.exit(1);
}
const testTimeout = Number(process.env.VMTOOL_TEST_TIMEOUT || 1800) * 1000;
const suiteTimeout = Number(process.env.VMTOOL_SUITE_TIMEOUT || 2700) * 1000;
const started = Date.now();
const child = spawn(
  process.execPath,
  ["--test", "--test-force-exit", `--test-timeout=${testTimeout}`, ...files],
  { stdio: "inherit", detached: true },
);
const killGroup = () => {
  try {
    process.kill(-child.pid, "SIGKILL");
  } catch {
    // The group is already gone.
  }
};
const watchdog = setTimeout(() => {
  console.error(`run-tests: the tests did not end within ${suiteTimeout / 1000} s; stopping them`);
  killGroup();
}, suiteTimeout);
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"])
  process.on(sig, () => {
    killGroup();
    process.exit(128 + (sig === "SIGINT" ? 2 : sig === "SIGTERM" ? 15 : 1));
  });
child.on("exit", (code) => {
  clearTimeout(watchdog);
  killGroup(); // What a test started and left running.
  console.error(`run-tests: ${files.length} files in ${Math.round((Date.now() - started) / 1000)} s`);
  process.exit(code ?? 1);
});
