// Whole-file OFD locks (src/files/lock.ts) on real files: the struct and constants checked against gcc on the
// installed headers, conflicts between two opens in one process and between two processes.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { once } from "node:events";
import * as libc from "../../src/kvm/libc.js";
import { InputFile } from "../../src/files/input-file.js";
import { lockFile } from "../../src/files/lock.js";
import { FileInUseError } from "../../src/files/errors.js";
import { DIST } from "../helpers/paths.js";

let dir: string;
let img: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), "vmtool-lock-"));
  img = join(dir, "d.img");
  writeFileSync(img, new Uint8Array(4096));
});
after(() => rmSync(dir, { recursive: true, force: true }));

test("struct flock and the F_OFD_* constants match gcc on <fcntl.h>", () => {
  const c = join(dir, "flock.c");
  writeFileSync(
    c,
    [
      "#define _GNU_SOURCE",
      "#include <fcntl.h>",
      "#include <stdio.h>",
      "#include <stddef.h>",
      "#include <unistd.h>",
      "int main(void) {",
      '  printf("%zu %zu %zu %zu %zu %zu\\n", sizeof(struct flock), offsetof(struct flock, l_type),',
      "    offsetof(struct flock, l_whence), offsetof(struct flock, l_start), offsetof(struct flock, l_len),",
      "    offsetof(struct flock, l_pid));",
      '  printf("%d %d %d %d %d %d %d\\n", F_OFD_GETLK, F_OFD_SETLK, F_RDLCK, F_WRLCK, F_UNLCK, SEEK_SET, SEEK_END);',
      "  return 0;",
      "}",
    ].join("\n"),
  );
  execFileSync("gcc", ["-o", join(dir, "flock"), c]);
  const out = execFileSync(join(dir, "flock"), { encoding: "utf8" });
  const F = libc.FLOCK;
  assert.equal(
    out,
    `${F.size} ${F.l_type} ${F.l_whence} ${F.l_start} ${F.l_len} ${F.l_pid}\n` +
      `${libc.F_OFD_GETLK} ${libc.F_OFD_SETLK} ${libc.F_RDLCK} ${libc.F_WRLCK} ${libc.F_UNLCK} ${libc.SEEK_SET} ${libc.SEEK_END}\n`,
  );
});

test("two opens in one process: writer/writer and writer/reader conflict, readers share, close releases", () => {
  const open = (write: boolean) => InputFile.open(img, { write, name: `--disk ${img}` });
  const w1 = open(true);
  assert.equal(lockFile(w1, "write"), true);
  const w2 = open(true);
  assert.throws(
    () => lockFile(w2, "write"),
    (e: unknown) =>
      e instanceof FileInUseError &&
      e.message === `--disk ${img}: in use by another vmtool or VMM (a write lock is held)`,
  );
  const r1 = open(false);
  assert.throws(() => lockFile(r1, "read"), /\(a write lock is held\)/);
  w1.close();
  assert.equal(lockFile(r1, "read"), true);
  const r2 = open(false);
  assert.equal(lockFile(r2, "read"), true, "two readers share the image");
  assert.throws(() => lockFile(w2, "write"), /in use by another vmtool or VMM \(a read lock is held\)/);
  r1.close();
  r2.close();
  assert.equal(lockFile(w2, "write"), true);
  w2.close();
});

test("another process's lock is seen, and goes away when that process dies", async () => {
  // A child that takes a write lock through the same code, says so, and waits to be killed.
  const script = `
    const { InputFile } = await import(${JSON.stringify(join(DIST, "src/files/input-file.js"))});
    const { lockFile } = await import(${JSON.stringify(join(DIST, "src/files/lock.js"))});
    lockFile(InputFile.open(${JSON.stringify(img)}, { write: true }), "write");
    process.stdout.write("locked\\n");
    setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  try {
    const [chunk] = (await once(child.stdout, "data")) as [Buffer];
    assert.equal(chunk.toString(), "locked\n");
    const f = InputFile.open(img);
    try {
      assert.throws(() => lockFile(f, "read"), /in use by another vmtool or VMM \(a write lock is held\)/);
      child.kill("SIGKILL");
      await once(child, "exit");
      assert.equal(lockFile(f, "read"), true);
    } finally {
      f.close();
    }
  } finally {
    child.kill("SIGKILL");
  }
});
