// The socket `vmtool run --introspect listen:PATH` listens on: private from its creation, never another
// kind of file replaced, and the process's umask left as it was whether listening worked or not; one tool at a
// time; a bad timeout refused before anything runs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createConnection, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { listenOn } from "../../src/introspect/connection.js";
import { IntrospectionError } from "../../src/introspect/errors.js";
import { CLI } from "../helpers/paths.js";
import { guests } from "../helpers/guests.js";
import { guest } from "./peer.js";

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

test("a bad --introspect-timeout: one line and status 2, before any guest runs", () => {
  for (const bad of ["abc", "0", "3601"]) {
    const r = spawnSync(
      process.execPath,
      [CLI, "run", "--introspect", "listen:/nonexistent/s", "--introspect-timeout", bad, guests().halt],
      { encoding: "utf8", timeout: 60_000 },
    );
    assert.equal(r.status, 2, `${bad}: ${r.stderr}`);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    assert.match(r.stderr, /--introspect-timeout/);
  }
});

test(
  "listen mode: a second tool that connects during the first one's handshake is refused",
  { timeout: 60_000 },
  async () => {
    const dir = mkdtempSync(join(tmpdir(), "vmtool-listen-"));
    const sock = join(dir, "s");
    const child = spawn(
      process.execPath,
      [CLI, "run", "--introspect", `listen:${sock}`, ...guest("1: pause\n jmp 1b")],
      {
        stdio: ["ignore", "ignore", "pipe"],
      },
    );
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    try {
      for (let i = 0; i < 300 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
      // Both connect before either answers the handshake: one gets it, the other is closed.
      const open = () =>
        new Promise<{ s: Socket; data: Buffer[]; closed: Promise<void> }>((resolve) => {
          const s = createConnection(sock);
          const data: Buffer[] = [];
          const closed = new Promise<void>((r) => s.on("close", () => r()));
          s.on("data", (d: Buffer) => data.push(d));
          s.on("error", () => {});
          s.on("connect", () => resolve({ s, data, closed }));
        });
      const [a, b] = await Promise.all([open(), open()]);
      const kept = await Promise.race([a.closed.then(() => b), b.closed.then(() => a)]);
      const refused = kept === a ? b : a;
      assert.equal(Buffer.concat(refused.data).length, 0, "the refused tool got no handshake");
      for (let i = 0; i < 200 && Buffer.concat(kept.data).length < 96; i++)
        await new Promise((r) => setTimeout(r, 50));
      assert.equal(Buffer.concat(kept.data).length, 96, "the other got the 96-byte handshake");
      const refusal = /a second tool connected while one is attached: refused/;
      for (let i = 0; i < 200 && !refusal.test(stderr); i++) await new Promise((r) => setTimeout(r, 50));
      assert.match(stderr, refusal);
      kept.s.destroy();
    } finally {
      child.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
