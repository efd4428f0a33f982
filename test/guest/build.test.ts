// The guest SDK builds every example with plain gcc/binutils, reproducibly, and the shipped demo guest is
// what guest/Makefile's `prebuilt` target makes from examples/demo.c.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GUEST_IMAGES, PREBUILT_DEMO, guests } from "../helpers/guests.js";
import { ROOT } from "../helpers/paths.js";

test("every example image is built", () => {
  const g = guests();
  for (const [name, path] of Object.entries(g)) {
    assert.ok(statSync(path).size > 0, `${name} is empty`);
  }
  // The ELFs have the class their mode needs; flat images have no ELF header.
  const cls = (p: string) => readFileSync(p).subarray(0, 5);
  assert.deepEqual([...cls(g.helloLong)], [0x7f, 0x45, 0x4c, 0x46, 2]);
  assert.deepEqual([...cls(g.helloProtected)], [0x7f, 0x45, 0x4c, 0x46, 1]);
  assert.deepEqual([...cls(g.multiboot)], [0x7f, 0x45, 0x4c, 0x46, 1]);
  assert.deepEqual([...readFileSync(g.halt).subarray(0, 2)], [0xfa, 0xf4]);
});

function toolVersions(): string {
  const first = (cmd: string) => execFileSync(cmd, ["--version"], { encoding: "utf8" }).split("\n")[0];
  return `${first("gcc")}\n${first("ld")}`;
}

test("builds are reproducible, and the prebuilt demo is the demo built from source", (t) => {
  const dirs = [mkdtempSync(join(tmpdir(), "vmtool-guest-a-")), mkdtempSync(join(tmpdir(), "vmtool-guest-b-"))];
  try {
    for (const d of dirs) execFileSync("make", ["-s", "-C", join(ROOT, "guest"), `OUT=${d}`]);
    for (const file of Object.values(GUEST_IMAGES)) {
      assert.ok(
        readFileSync(join(dirs[0], file)).equals(readFileSync(join(dirs[1], file))),
        `${file} differs between two builds`,
      );
    }
    // The shipped binary records the toolchain it was built with; with the same toolchain it must match.
    const recorded = readFileSync(PREBUILT_DEMO + ".txt", "utf8");
    if (recorded.includes(toolVersions())) {
      assert.ok(
        readFileSync(PREBUILT_DEMO).equals(readFileSync(join(dirs[0], GUEST_IMAGES.demo))),
        "guest/prebuilt/demo.elf is stale: run `make -C guest prebuilt`",
      );
    } else {
      t.skip("not the toolchain the prebuilt demo was built with: only reproducibility checked");
    }
  } finally {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  }
});
