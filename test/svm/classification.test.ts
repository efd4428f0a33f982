// Every test file is classified for the kvm_amd harness (kvm-amd.test.ts): run inside the VM (INNER_TESTS) or
// not, with the reason (NOT_INSIDE). Kept apart from the harness so that it runs without booting the VM.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { ROOT } from "../helpers/paths.js";
import { INNER_TESTS, NOT_INSIDE } from "./inner-tests.js";

test("every test file is either run inside or has a reason not to be", () => {
  const all: string[] = [];
  const walk = (d: string) => {
    for (const n of readdirSync(d)) {
      const p = join(d, n);
      if (statSync(p).isDirectory()) walk(p);
      else if (n.endsWith(".test.ts")) all.push(relative(ROOT, p));
    }
  };
  walk(join(ROOT, "test"));
  const inside = INNER_TESTS.map((x) => x.file);
  const outside = Object.keys(NOT_INSIDE);
  assert.deepEqual(
    all.filter((f) => !inside.includes(f) && !outside.includes(f)),
    [],
    "test files in neither INNER_TESTS nor NOT_INSIDE (test/svm/inner-tests.ts): add each, with its reason",
  );
  assert.deepEqual(
    [...inside, ...outside].filter((f) => !all.includes(f)),
    [],
    "listed in test/svm/inner-tests.ts, but no such test file",
  );
  assert.deepEqual(
    inside.filter((f) => outside.includes(f)),
    [],
    "in both INNER_TESTS and NOT_INSIDE",
  );
});
