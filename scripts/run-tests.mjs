// Runs the compiled test files (dist/test/**/*.test.js) with Node's own test runner.
// `npm test -- virtio uart` runs only the files whose path contains one of the words.
// VMTOOL_DIST=other-dir runs the tests compiled into another output folder (tsc --outDir other-dir).
import { readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { spawnSync } from "node:child_process";

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
const r = spawnSync(process.execPath, ["--test", ...files], { stdio: "inherit" });
process.exit(r.status ?? 1);
