// Nothing the guest posted is lost at the end of a run: a disk write that KVM accepted (its ioeventfd fired)
// while the I/O worker was busy with another is served before the VM closes, whether the guest then halts for
// good or writes the exit port.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, openSync, readSync, closeSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CLI } from "../helpers/paths.js";
import { buildSdkGuest } from "../helpers/sdk-guest.js";

const RUNS = 5;

function firstSector(path: string): Uint8Array {
  const fd = openSync(path, "r");
  try {
    const b = new Uint8Array(512);
    readSync(fd, b, 0, 512, 0);
    return b;
  } finally {
    closeSync(fd);
  }
}

const expected = Uint8Array.from({ length: 512 }, (_, i) => (0xa5 ^ i) & 0xff);

for (const how of ["halt", "exit"] as const) {
  test(`a disk write posted just before the guest ends (${how}) is on the disk: ${RUNS} runs of ${RUNS}`, () => {
    const elf = buildSdkGuest("guest/tests/lost-write.c");
    const dir = mkdtempSync(join(tmpdir(), "vmtool-lost-write-"));
    try {
      for (let i = 0; i < RUNS; i++) {
        const a = join(dir, "a.img");
        const b = join(dir, "b.img");
        writeFileSync(a, new Uint8Array(32 << 20));
        writeFileSync(b, new Uint8Array(1 << 20));
        const args = ["run", "--mem", "64M", "--disk", a, "--disk", b];
        if (how === "exit") args.push("--cmdline", "exit");
        const r = spawnSync(process.execPath, [CLI, ...args, elf], {
          encoding: "utf8",
          input: "",
          timeout: 60_000,
        });
        assert.match(r.stdout, /lost-write: posted/, r.stderr);
        assert.equal(r.status, how === "halt" ? 0 : (5 << 1) | 1, r.stderr);
        assert.deepEqual(firstSector(b), expected, `run ${i + 1}: the second disk's write is missing`);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
