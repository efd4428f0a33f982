// The connection's start, both ways round: the VMM's 96-byte handshake first, the tool's 24-byte answer, then
// GET_VERSION as the tool's first command (id 2, no payload, seq 1), exactly as libkvmi does it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Socket } from "node:net";
import { statSync, writeFileSync, existsSync } from "node:fs";
import { execFileSync } from "node:child_process";
import {
  KvmiClient,
  KvmiClosedError,
  KvmiConnectError,
  KvmiHandshakeError,
  KvmiInternalError,
  KvmiUsageError,
} from "../../src/kvmi-client/index.js";
import {
  Peer,
  answerVersion,
  cat,
  handshake,
  hexBytes,
  le32,
  le64,
  reply,
  socketDir,
  vmmConnect,
  vmmHandshake,
  zeros,
} from "./peer.js";

const ANSWER = cat(hexBytes("18000000"), zeros(20)); // struct_size = 24, cookie_hash all zero

test("listen: the VMM connects, sends 96 bytes; the client answers 24, sends GET_VERSION, reads the name", async () => {
  const dir = socketDir();
  try {
    const path = dir.path("tool.sock");
    const clientP = KvmiClient.listen(path);
    const peer = await vmmConnect(path);
    const hs = handshake({
      name: "guest-one",
      startTime: 1712345678n,
      uuid: hexBytes("0123456789abcdef0123456789abcdef"),
    });
    assert.equal(hs.length, 96);
    assert.deepEqual(await vmmHandshake(peer, hs), ANSWER);
    const v = await peer.next();
    assert.deepEqual([v.id, v.size, v.seq], [2, 0, 1]);
    peer.send(reply(2, v.seq, cat(le32(1), zeros(4), hexBytes("0100000100000000")))); // spp, ve
    const client = await clientP;
    assert.equal(client.handshake.name, "guest-one");
    assert.equal(client.handshake.uuid, "01234567-89ab-cdef-0123-456789abcdef");
    assert.equal(client.handshake.startTime, 1712345678n);
    assert.equal(client.handshake.structSize, 96);
    assert.equal(client.version, 1);
    assert.deepEqual(client.features, { spp: true, vmfunc: false, eptp: false, ve: true });
    assert.equal(existsSync(path), false, "the socket file is removed once the VMM is connected");
    client.close();
    await peer.closedByClient();
  } finally {
    dir.remove();
  }
});

test("listen: the socket file is created with mode 0600 before any VMM connects", async () => {
  const dir = socketDir();
  try {
    const path = dir.path("tool.sock");
    const ac = new AbortController();
    const clientP = KvmiClient.listen(path, { signal: ac.signal });
    while (!existsSync(path)) await new Promise((r) => setTimeout(r, 5));
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.ok(statSync(path).isSocket());
    ac.abort();
    await assert.rejects(clientP, KvmiConnectError);
    assert.equal(existsSync(path), false);
  } finally {
    dir.remove();
  }
});

test("listen: a stale socket is replaced; a regular file or a live listener at the path is refused", async () => {
  const dir = socketDir();
  try {
    const live = dir.path("live.sock");
    const s = createServer();
    await new Promise<void>((r) => s.listen(live, r));
    await assert.rejects(
      KvmiClient.listen(live),
      (e: Error) => e instanceof KvmiUsageError && /already listening/.test(e.message),
    );
    s.close();
    // A stale socket, as a tool that ended without removing it leaves: bound by another process, which exits.
    const stale = dir.path("stale.sock");
    execFileSync("python3", [
      "-c",
      "import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])",
      stale,
    ]);
    assert.ok(statSync(stale).isSocket());
    const clientP = KvmiClient.listen(stale);
    const peer = await vmmConnect(stale);
    await vmmHandshake(peer);
    await answerVersion(peer);
    (await clientP).close();
    const file = dir.path("regular");
    writeFileSync(file, "keep me");
    await assert.rejects(
      KvmiClient.listen(file),
      (e: Error) => e instanceof KvmiUsageError && /not a socket/.test(e.message),
    );
    assert.equal(statSync(file).size, 7, "the file is left alone");
    await assert.rejects(KvmiClient.listen(dir.path("tool.sock"), { acceptTimeoutMs: 50 }), KvmiConnectError);
  } finally {
    dir.remove();
  }
});

/** A VMM that listens and a client that connects (`--introspect listen:PATH`). */
async function connectPair(): Promise<{ clientP: Promise<KvmiClient>; peer: Peer; remove: () => void }> {
  const dir = socketDir();
  const path = dir.path("vmm.sock");
  const server = createServer();
  await new Promise<void>((r) => server.listen(path, r));
  const accepted = new Promise<Socket>((r) => server.once("connection", r));
  const clientP = KvmiClient.connect(path, { replyTimeoutMs: 5000, handshakeTimeoutMs: 5000 });
  const peer = new Peer(await accepted);
  server.close();
  return { clientP, peer, remove: () => dir.remove() };
}

test("connect: the same handshake in the same direction (the VMM speaks first)", async () => {
  const { clientP, peer, remove } = await connectPair();
  try {
    assert.deepEqual(await vmmHandshake(peer), ANSWER);
    await answerVersion(peer);
    const client = await clientP;
    assert.equal(client.handshake.name, "test-vm");
    client.close();
  } finally {
    remove();
  }
});

test("a longer handshake (v12 QEMU's 104 bytes) is read whole, a 32-byte one gives an empty name", async () => {
  for (const [hs, name] of [
    [handshake({ extra: le64(0xfffff000n) }), "test-vm"],
    [handshake({ size: 32 }), ""],
  ] as const) {
    const { clientP, peer, remove } = await connectPair();
    try {
      assert.deepEqual(await vmmHandshake(peer, hs), ANSWER);
      const v = await answerVersion(peer);
      assert.equal(v.seq, 1, "the first byte after the handshake is GET_VERSION's");
      const client = await clientP;
      assert.equal(client.handshake.name, name);
      assert.equal(client.handshake.structSize, hs.length);
      client.close();
    } finally {
      remove();
    }
  }
});

test("a handshake size outside 32..65536, a truncated one, or a version below 1 is refused with one line", async () => {
  for (const size of [31, 0, 65537, 0xffffffff]) {
    const { clientP, peer, remove } = await connectPair();
    try {
      peer.send(cat(le32(size), zeros(92)));
      await assert.rejects(
        clientP,
        (e: Error) => e instanceof KvmiHandshakeError && e.message.includes(`${size} bytes`),
      );
    } finally {
      remove();
    }
  }
  {
    const { clientP, peer, remove } = await connectPair();
    try {
      peer.send(handshake().subarray(0, 50));
      peer.close();
      await assert.rejects(
        clientP,
        (e: Error) =>
          e instanceof KvmiClosedError && /middle of the handshake \(46 of 92 bytes\)/.test(e.message),
      );
    } finally {
      remove();
    }
  }
  {
    const { clientP, peer, remove } = await connectPair();
    try {
      await vmmHandshake(peer);
      await answerVersion(peer, 0);
      await assert.rejects(clientP, /version 0; at least 1/);
      await peer.closedByClient();
    } finally {
      remove();
    }
  }
});

test("connect: no socket, or nobody listening, is a KvmiConnectError; a regular file is bad input", async () => {
  const dir = socketDir();
  try {
    await assert.rejects(
      KvmiClient.connect(dir.path("none.sock")),
      (e: Error) => e instanceof KvmiConnectError && /no such socket/.test(e.message),
    );
    writeFileSync(dir.path("file"), "x");
    await assert.rejects(KvmiClient.connect(dir.path("file")), KvmiUsageError);
  } finally {
    dir.remove();
  }
});

test("the tool's cookie: the callback's 20 bytes in the answer; a callback that throws ends the connection, no hang", async () => {
  const dir = socketDir();
  try {
    const path = dir.path("tool.sock");
    const cookie = Buffer.from("0123456789abcdefghij");
    const clientP = KvmiClient.listen(path, {
      cookieHash: (hs) => (hs.name === "test-vm" ? cookie : undefined),
    });
    const peer = await vmmConnect(path);
    assert.deepEqual(await vmmHandshake(peer), cat(hexBytes("18000000"), cookie));
    await answerVersion(peer);
    (await clientP).close();
    const failing = KvmiClient.listen(path, {
      cookieHash: () => {
        throw new Error("no key");
      },
    });
    const peer2 = await vmmConnect(path);
    peer2.send(handshake());
    await assert.rejects(failing, (e: Error) => e instanceof KvmiInternalError && /no key/.test(e.message));
    await peer2.closedByClient();
  } finally {
    dir.remove();
  }
});
