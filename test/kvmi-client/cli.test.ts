// `vmtool introspect` as a user runs it: bad input of every kind is one line and status 2 before anything is
// connected to; a VMM that is not there, never comes, or vanishes is one line and status 12; Ctrl-C while
// waiting for a VMM removes the socket and ends with 130. The VMM's end is the protocol fixture of peer.ts.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer, type Socket } from "node:net";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { CLI, ROOT } from "../helpers/paths.js";
import { join } from "node:path";
import { Peer, answerVersion, reply, socketDir, vmmConnect, vmmHandshake } from "./peer.js";
import { statusForError } from "../../src/cli/exit-status.js";
import { KvmiClosedError, KvmiProtocolError, KvmiTimeoutError } from "../../src/kvmi-client/index.js";
import { VmmCannotError, VmmRefusedError, explain } from "../../src/cli/introspect/errors.js";
import { KvmiCommandError } from "../../src/kvmi-client/errors.js";

interface Result {
  status: number | null;
  stdout: string;
  stderr: string;
}

function vmtool(
  args: string[],
  opts: { onSpawn?: (kill: (sig: NodeJS.Signals) => void) => void } = {},
): Promise<Result> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CLI, "introspect", ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    p.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    p.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    opts.onSpawn?.((sig) => p.kill(sig));
    p.on("close", (status) => resolve({ status, stdout, stderr }));
  });
}

/** One line on standard error, nothing on standard output, and this status. */
function oneLine(r: Result, status: number, re: RegExp): void {
  assert.equal(r.status, status, `status (stderr: ${r.stderr})`);
  assert.equal(r.stdout, "");
  const lines = r.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, `one line: ${r.stderr}`);
  assert.match(lines[0], /^vmtool: error: /);
  assert.match(lines[0], re);
}

test("bad input: one line, status 2, and nothing connected to (the socket does not even exist)", async () => {
  const dir = socketDir();
  try {
    const nowhere = ["--socket", dir.path("none.sock")];
    const notElf = dir.path("not.elf");
    writeFileSync(notElf, "hello");
    mkdirSync(dir.path("a-dir"));
    const demo = join(ROOT, "guest", "prebuilt", "demo.elf");
    const cases: [string[], RegExp][] = [
      [["info"], /say where the VMM is: --socket PATH .* or --listen PATH/],
      [["info", ...nowhere, "--listen", dir.path("x")], /say where the VMM is/],
      [["info", ...nowhere, "--timeout", "soon"], /--timeout: 'soon' is not a number of seconds/],
      [["read", "zz", "16", ...nowhere], /GPA: 'zz' is not a number/],
      [["read", "0x1000", "0", ...nowhere], /LEN: 0 is below the minimum 1/],
      [["read", "0x1000", "2M", ...nowhere], /LEN: 2M is above the maximum/],
      [["read", "0xffffffffffffffff", "16", ...nowhere, "--out", dir.path("o")], /wraps around/],
      [["read", "0", "16", ...nowhere, "--out", dir.path("a-dir")], /a-dir: not a regular file/],
      [["write", "0x1000", ...nowhere], /give the bytes to write/],
      [["write", "0x1000", "9", ...nowhere], /'9' is not a sequence of hexadecimal bytes/],
      [["write", "0x1000", "--file", dir.path("missing"), ...nowhere], /missing: no such file/],
      [["dump", dir.path("a-dir"), ...nowhere], /a-dir: not a regular file/],
      [["events", ...nowhere], /nothing to watch/],
      [["events", "--break", "main", ...nowhere], /a symbol needs --elf FILE/],
      [
        ["events", "--break", "main", "--elf", dir.path("missing"), ...nowhere],
        /--elf .*missing: no such file/,
      ],
      [["events", "--break", "main", "--elf", notElf, ...nowhere], /not an ELF file/],
      [["events", "--break", "no_such_fn", "--elf", demo, ...nowhere], /no symbol 'no_such_fn'/],
      [["events", "--break", "main+zz", "--elf", demo, ...nowhere], /neither an address nor a symbol/],
      [["events", "--msr-value", "0x10", ...nowhere], /give MSR=VALUE/],
      [["events", "--msr", "0x10", "--pf-action", "later", ...nowhere], /--pf-action: 'later' is not one of/],
      [["events", "--msr", "0x10", "--count", "0", ...nowhere], /--count: 0 is below the minimum 1/],
      [["events", "--write-protect", "0x1000:0", ...nowhere], /LEN: 0 is below the minimum 1/],
      [["pause", "--for", "-1", ...nowhere], /--for: '-1' is not a number of seconds/],
    ];
    for (const [args, re] of cases) oneLine(await vmtool(args), 2, re);
  } finally {
    dir.remove();
  }
});

test("no VMM: nobody at --socket, or none connecting to --listen in time: one line, status 12", async () => {
  const dir = socketDir();
  try {
    oneLine(
      await vmtool(["regs", "--socket", dir.path("none.sock")]),
      12,
      /no such socket \(is a vmtool run --introspect listen:/,
    );
    const path = dir.path("tool.sock");
    oneLine(
      await vmtool(["info", "--listen", path, "--wait", "0.3"]),
      12,
      /no VMM connected to .* within 0.3 s/,
    );
    assert.equal(existsSync(path), false, "the socket file is removed");
  } finally {
    dir.remove();
  }
});

test("Ctrl-C while waiting for a VMM: the socket is removed, status 130, nothing printed", async () => {
  const dir = socketDir();
  try {
    const path = dir.path("tool.sock");
    const r = await vmtool(["info", "--listen", path], {
      onSpawn: (kill) => {
        const poll = setInterval(() => {
          if (existsSync(path)) {
            clearInterval(poll);
            kill("SIGINT");
          }
        }, 10);
      },
    });
    assert.equal(r.status, 130, r.stderr);
    assert.equal(r.stderr, "");
    assert.equal(existsSync(path), false);
  } finally {
    dir.remove();
  }
});

test("a VMM that vanishes mid-command: one line, status 12", async () => {
  const dir = socketDir();
  try {
    // --listen: the fixture connects as a VMM, shakes hands, answers GET_VERSION, then closes on the next command.
    const path = dir.path("tool.sock");
    const run = vmtool(["regs", "--listen", path]);
    const peer = await vmmConnect(path);
    await vmmHandshake(peer);
    await answerVersion(peer);
    await peer.next();
    peer.destroy();
    oneLine(await run, 12, /the VMM closed the connection/);

    // --socket: the fixture listens as vmtool run --introspect listen:PATH does, and breaks the protocol.
    const vmmPath = dir.path("vmm.sock");
    const server = createServer();
    await new Promise<void>((r) => server.listen(vmmPath, r));
    const accepted = new Promise<Socket>((r) => server.once("connection", r));
    const run2 = vmtool(["info", "--socket", vmmPath]);
    const peer2 = new Peer(await accepted);
    server.close();
    await vmmHandshake(peer2);
    await answerVersion(peer2);
    const m = await peer2.next();
    peer2.send(reply(m.id, m.seq + 100));
    oneLine(await run2, 12, /the VMM broke the protocol: .*answers no command in flight/);
  } finally {
    dir.remove();
  }
});

test("statuses: what the VMM refuses is 2, what it cannot do is 6, a lost VMM is 12", () => {
  assert.equal(statusForError(explain(new KvmiCommandError(17, -22))), 2);
  assert.equal(statusForError(explain(new KvmiCommandError(17, -14))), 2);
  assert.ok(explain(new KvmiCommandError(63, -1000)) instanceof VmmCannotError);
  assert.equal(statusForError(explain(new KvmiCommandError(63, -1000))), 6);
  assert.equal(statusForError(explain(new KvmiCommandError(63, -95))), 6);
  assert.ok(explain(new KvmiCommandError(17, -22)) instanceof VmmRefusedError);
  assert.equal(statusForError(explain(new KvmiCommandError(7, -16))), 12);
  assert.equal(statusForError(new KvmiClosedError("x", true)), 12);
  assert.equal(statusForError(new KvmiProtocolError("x")), 12);
  assert.equal(statusForError(new KvmiTimeoutError("x")), 12);
});
