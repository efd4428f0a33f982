// The socket `vmtool run --introspect listen:PATH` listens on: private from its creation, never another
// kind of file replaced, and the process's umask left as it was whether listening worked or not.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { listenOn } from "../../src/introspect/connection.js";
import { IntrospectionError } from "../../src/introspect/errors.js";

async function withDir(fn: (dir: string) => Promise<void> | void): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "vmtool-listen-"));
  try {
    await fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The process's umask, as the kernel reports it (reading it with umask() would set it). */
function umask(): number {
  return parseInt(/^Umask:\s+([0-7]+)$/m.exec(readFileSync("/proc/self/status", "utf8"))![1], 8);
}

test("the socket is mode 0600 and the umask is the caller's again", () =>
  withDir(async (dir) => {
    const before = umask();
    const server = await listenOn(join(dir, "s"), (s) => s.destroy());
    try {
      assert.equal(statSync(join(dir, "s")).mode & 0o777, 0o600);
      assert.equal(umask(), before);
    } finally {
      server.close();
    }
  }));

test("a path where no socket can be made: one error, and the umask is the caller's again", () =>
  withDir(async (dir) => {
    const before = umask();
    await assert.rejects(
      listenOn(join(dir, "no-such-dir", "s"), (s) => s.destroy()),
      (e: unknown) => {
        assert.ok(e instanceof IntrospectionError);
        assert.match(e.message, /^--introspect listen:.*no-such-dir\/s: listen E[A-Z]+/);
        return true;
      },
    );
    assert.equal(umask(), before);
  }));

test("a file that is not a socket is refused, not replaced", () =>
  withDir((dir) => {
    writeFileSync(join(dir, "f"), "keep");
    assert.throws(() => listenOn(join(dir, "f"), (s) => s.destroy()), /exists and is not a socket/);
    assert.equal(statSync(join(dir, "f")).size, 4);
  }));
