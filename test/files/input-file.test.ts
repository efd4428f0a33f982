// The one way vmtool opens a file a user names (src/files/input-file.ts), on real files of every kind: regular
// files, FIFOs, character devices, procfs files that report no size, a real block device, symlink loops.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { InputFile, readInputFile } from "../../src/files/input-file.js";
import { FileInputError } from "../../src/files/errors.js";
import { InputError } from "../../src/errors.js";
import { loopDevice } from "./loop-device.js";
import { DIST } from "../helpers/paths.js";

let dir: string;
before(() => (dir = mkdtempSync(join(tmpdir(), "vmtool-files-"))));
after(() => rmSync(dir, { recursive: true, force: true }));

/** `fn` must throw one FileInputError line: `<name>: <rule>` with the rule matching `rule`. */
function refuses(fn: () => unknown, name: string, rule: RegExp, problem?: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof FileInputError, `expected a FileInputError, got ${String(err)}`);
    assert.ok(err instanceof InputError);
    assert.ok(!err.message.includes("\n"), err.message);
    assert.ok(err.message.startsWith(`${name}: `), err.message);
    assert.match(err.rule, rule);
    if (problem) assert.equal(err.problem, problem);
    return true;
  });
}

test("a regular file: kind, size, whole content; the name in messages is the caller's", () => {
  const p = join(dir, "plain.bin");
  writeFileSync(p, Buffer.from("hello, guest"));
  const f = InputFile.open(p);
  try {
    assert.equal(f.kind, "regular file");
    assert.equal(f.size, 12);
    assert.ok(f.sizeKnown);
    assert.equal(Buffer.from(f.readAll(100, "the limit")).toString(), "hello, guest");
  } finally {
    f.close();
  }
  refuses(
    () => readInputFile(p, 11, "the 11-byte limit"),
    p,
    /^12 bytes: larger than the 11-byte limit$/,
    "too-large",
  );
  refuses(
    () => readInputFile(join(dir, "nope"), 1, "x", { name: "--thing nope" }),
    "--thing nope",
    /^no such file$/,
    "missing",
  );
});

test("a FIFO is refused at once (the open does not wait for a writer), in either direction", () => {
  const fifo = join(dir, "fifo");
  execFileSync("mkfifo", [fifo]);
  refuses(() => InputFile.open(fifo), fifo, /^is a FIFO, not a regular file$/, "kind");
  refuses(
    () => InputFile.open(fifo, { write: true, accept: ["regular file", "block device"] }),
    fifo,
    /^is a FIFO, not a regular file or block device$/,
  );
});

test("directories, character devices, symlinks to them, symlink loops, a path through a file", () => {
  const d = join(dir, "a-dir");
  mkdirSync(d);
  refuses(
    () => InputFile.open(d, { what: "a guest image" }),
    d,
    /^is a directory, not a guest image$/,
    "kind",
  );
  refuses(() => InputFile.open(d, { write: true }), d, /^is a directory$/, "kind");
  refuses(() => InputFile.open("/dev/zero"), "/dev/zero", /^is a character device, not a regular file$/);
  const link = join(dir, "zero-link");
  symlinkSync("/dev/zero", link);
  refuses(() => InputFile.open(link), link, /^is a character device, not a regular file$/);
  const loop = join(dir, "loop");
  symlinkSync(loop, loop);
  refuses(() => InputFile.open(loop), loop, /too many levels of symbolic links/);
  const file = join(dir, "file");
  writeFileSync(file, "x");
  refuses(
    () => InputFile.open(join(file, "x")),
    join(file, "x"),
    /no such file \(a part of the path is not a directory\)/,
  );
});

test("a kind the input refuses is judged by its path and never opened", () => {
  // /dev/tty opens only for a process with a controlling terminal (else ENXIO): in a new session without
  // one, a refusal that names the kind proves no open() was tried; an open would have said "no such device".
  const script = `
    const { InputFile } = await import(${JSON.stringify(join(DIST, "src/files/input-file.js"))});
    for (const kernelFile of [false, true])
      try { InputFile.open("/dev/tty", { kernelFile }); } catch (e) { console.log(e.rule); }`;
  const out = execFileSync("setsid", ["-w", process.execPath, "--input-type=module", "-e", script], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  });
  assert.deepEqual(out.trim().split("\n"), [
    "is a character device, not a regular file",
    "no such device (a device file with no device behind it, or a socket)",
  ]);
});

test("a character device where one is accepted is read with the cap: /dev/zero never fills memory", () => {
  refuses(
    () => readInputFile("/dev/zero", 100_000, "the cap", { accept: ["character device"] }),
    "/dev/zero",
    /^more than 100000 bytes: larger than the cap$/,
    "too-large",
  );
  const f = InputFile.open("/dev/zero", { accept: ["character device"] });
  try {
    assert.equal(f.size, undefined);
    const { bytes, more } = f.readHead(5000);
    assert.equal(bytes.length, 5000);
    assert.ok(more);
  } finally {
    f.close();
  }
});

test("a procfs file reports size 0 but has content: read up to the cap, refused beyond it", () => {
  const f = InputFile.open("/proc/self/status");
  try {
    assert.equal(f.size, 0);
    assert.equal(f.sizeKnown, false);
  } finally {
    f.close();
  }
  const text = Buffer.from(readInputFile("/proc/version", 1 << 20, "1 MiB")).toString();
  assert.equal(text, readFileSync("/proc/version", "utf8"));
  refuses(
    () => readInputFile("/proc/version", 10, "ten bytes"),
    "/proc/version",
    /^more than 10 bytes: larger than ten bytes$/,
  );
  // An empty regular file reads as empty: the caller says what that means for it.
  const empty = join(dir, "empty");
  writeFileSync(empty, "");
  assert.equal(readInputFile(empty, 10, "x").length, 0);
});

test("a file larger than the bound is refused by its size, before anything is read", () => {
  const big = join(dir, "big.img");
  writeFileSync(big, "");
  truncateSync(big, 5 * 2 ** 30); // sparse: no disk space, and a read of it would take seconds
  refuses(
    () => readInputFile(big, 1 << 20, "1 MiB"),
    big,
    /^5368709120 bytes: larger than 1 MiB$/,
    "too-large",
  );
  const f = InputFile.open(big);
  try {
    // Positions past 4 GiB are read (pread), and what is past the end reads as nothing.
    const tail = new Uint8Array(16);
    assert.equal(f.readAt(tail, 5 * 2 ** 30 - 8), 8);
  } finally {
    f.close();
  }
});

test("a block device is sized by seeking to its end (its fstat size is 0), and accepted only where asked", (t) => {
  const backing = join(dir, "blk.img");
  const content = Buffer.alloc(3 << 20);
  content.write("first sector", 0);
  content.write("last bytes", content.length - 10);
  writeFileSync(backing, content);
  const loop = loopDevice(backing);
  if (typeof loop === "string") return t.skip(loop);
  try {
    refuses(() => InputFile.open(loop.path), loop.path, /^is a block device, not a regular file$/);
    const f = InputFile.open(loop.path, { accept: ["regular file", "block device"] });
    try {
      assert.equal(f.kind, "block device");
      assert.equal(f.size, 3 << 20);
      const end = new Uint8Array(10);
      assert.equal(f.readAt(end, (3 << 20) - 10), 10);
      assert.equal(Buffer.from(end).toString(), "last bytes");
      refuses(() => f.readAll(1 << 20, "1 MiB"), loop.path, /^3145728 bytes: larger than 1 MiB$/);
    } finally {
      f.close();
    }
  } finally {
    loop.detach();
  }
});
