// The server's safety and its bounds, against a real `vmtool serve`: the browser headers, read-only routes, no
// path outside its assets, a huge header, a body, a foreign Host, 200 idle connections, the access token, the
// SSE stream's framing and resumption, and a clean stop on SIGTERM that closes every connection.
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect, type Socket } from "node:net";
import { request } from "node:http";
import { chmodSync, mkdtempSync, readdirSync, readlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { CLI } from "../helpers/paths.js";
import { get, startServe } from "./helpers.js";
import { waitFor } from "../stats/helpers.js";

/** Raw bytes to the server, what comes back until it closes (or `ms`). */
function raw(port: number, data: string, ms = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(port, "127.0.0.1");
    let out = "";
    s.on("data", (d: Buffer) => (out += d.toString()));
    s.on("error", reject);
    s.on("close", () => resolve(out));
    s.setTimeout(ms, () => s.destroy());
    s.write(data);
  });
}

test("headers, read-only routes, traversal, huge header, body, Host check", async (t) => {
  const srv = await startServe(t);
  const page = await get(`${srv.url}/`);
  assert.equal(page.status, 200);
  assert.equal(page.headers["content-type"], "text/html; charset=utf-8");
  const csp = String(page.headers["content-security-policy"]);
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /script-src 'self'(;|$)/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|\*/);
  assert.equal(page.headers["x-content-type-options"], "nosniff");
  assert.equal(page.headers["access-control-allow-origin"], undefined);
  const cors = await get(`${srv.url}/metrics`, { Origin: "http://evil.example" });
  assert.equal(cors.headers["access-control-allow-origin"], undefined);
  assert.equal(cors.headers["x-content-type-options"], "nosniff");
  for (const path of ["/assets/app.js", "/assets/uPlot.iife.min.js", "/assets/app.css"]) {
    const r = await get(srv.url + path, { "Accept-Encoding": "gzip" });
    assert.equal(r.status, 200, path);
    assert.equal(r.headers["content-encoding"], "gzip", path);
  }
  // No file is looked up by path: traversal, directories, encoded dots, the package's own files.
  for (const target of [
    "/../etc/passwd",
    "/../../../../etc/passwd",
    "/assets/../../package.json",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/assets/",
    "/assets",
    "/web/app.js",
    "//etc/passwd",
  ]) {
    const r = await raw(srv.port, `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
    assert.match(r, /^HTTP\/1\.1 404 /, `${target}: ${r.slice(0, 80)}`);
    assert.doesNotMatch(r, /root:/);
  }
  for (const method of ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"]) {
    const r = await get(`${srv.url}/metrics`, {}, method);
    assert.equal(r.status, 405, method);
    assert.equal(r.headers.allow, "GET, HEAD");
  }
  const body = await raw(
    srv.port,
    "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
  );
  assert.match(body, /^HTTP\/1\.1 413 /);
  const huge = await raw(
    srv.port,
    `GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ${"a".repeat(64 * 1024)}\r\n\r\n`,
  );
  assert.match(huge, /^HTTP\/1\.1 431 /);
  // DNS rebinding: a page of another name that resolves to 127.0.0.1 is refused.
  const rebound = await get(`${srv.url}/metrics`, { Host: "evil.example:80" });
  assert.equal(rebound.status, 403);
  assert.equal((await get(`${srv.url}/metrics`, { Host: `localhost:${srv.port}` })).status, 200);
  assert.equal((await get(`${srv.url}/metrics`)).status, 200, "the server is still up");
});

test("200 idle connections: bounded, and a new client is still served at once", async (t) => {
  const srv = await startServe(t);
  const idle: Socket[] = [];
  t.after(() => idle.forEach((s) => s.destroy()));
  let closedByServer = 0;
  for (let i = 0; i < 200; i++) {
    const s = connect(srv.port, "127.0.0.1");
    s.on("error", () => {});
    s.on("close", () => closedByServer++);
    idle.push(s);
    await new Promise<void>((r) => s.once("connect", () => r()));
  }
  const r = await get(`${srv.url}/metrics`);
  assert.equal(r.status, 200);
  // At most 64 kept: the server closed the oldest idle ones to make room (long before their header timeout).
  const sockets = readdirSync(`/proc/${srv.child.pid}/fd`).filter((fd) => {
    try {
      return readlinkSync(`/proc/${srv.child.pid}/fd/${fd}`).startsWith("socket:");
    } catch {
      return false;
    }
  }).length;
  assert.ok(sockets <= 64 + 2, `the server holds ${sockets} sockets`);
  await waitFor("the client side seeing the evicted ones closed", () =>
    closedByServer >= 200 - 64 ? true : undefined,
  );
  // A slowloris client (headers never finished) does not hold up another's request either.
  const slow = connect(srv.port, "127.0.0.1");
  slow.on("error", () => {});
  idle.push(slow);
  slow.write("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ");
  assert.equal((await get(`${srv.url}/`)).status, 200);
});

test("with --token-file: 401 without the token, 200 with Bearer or the page's cookie; bad token files refused", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "vmtool-serve-"));
  const file = join(dir, "token");
  const token = "s3cret-token-0123456789";
  writeFileSync(file, token + "\n", { mode: 0o600 });
  const srv = await startServe(t, ["--token-file", file]);
  assert.equal((await get(`${srv.url}/metrics`)).status, 401);
  assert.equal(
    (await get(`${srv.url}/metrics`, { Authorization: "Bearer wrong-token-0123456789" })).status,
    401,
  );
  assert.equal((await get(`${srv.url}/metrics`, { Authorization: `Bearer ${token}` })).status, 200);
  assert.equal((await get(`${srv.url}/events`)).status, 401);
  const first = await get(`${srv.url}/?token=${token}`);
  assert.equal(first.status, 303);
  const cookie = String(first.headers["set-cookie"]).split(";")[0];
  assert.match(String(first.headers["set-cookie"]), /HttpOnly; SameSite=Strict/);
  assert.equal((await get(`${srv.url}/`, { Cookie: cookie })).status, 200);
  assert.equal((await get(`${srv.url}/?token=nope-nope-nope-nope`)).status, 401);

  const serve = (...args: string[]) =>
    spawnSync(process.execPath, [CLI, "serve", ...args], { encoding: "utf8", timeout: 30_000 });
  const cases: Array<[string[], RegExp]> = [
    [["--listen", "0.0.0.0:0"], /needs --token-file/],
    [["--listen", "nonsense"], /not HOST:PORT/],
    [["--listen", "127.0.0.1:70000"], /outside 0\.\.65535/],
    [["--interval", "0"], /--interval/],
    [["--token-file", join(dir, "missing")], /cannot be opened/],
    [["--source", "bogus"], /--source/],
  ];
  const open = join(dir, "open");
  writeFileSync(open, token);
  chmodSync(open, 0o644);
  cases.push([["--token-file", open], /readable by others/]);
  const short = join(dir, "short");
  writeFileSync(short, "abc", { mode: 0o600 });
  cases.push([["--token-file", short], /at least 16/]);
  cases.push([["--listen", `127.0.0.1:${srv.port}`], /in use/]);
  for (const [args, message] of cases) {
    const r = serve(...args);
    assert.equal(r.status, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, message);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  }
});

interface SseEvent {
  id?: string;
  event?: string;
  data: string;
}

/** Reads an SSE stream into events (and counts comment lines). */
function sse(url: string, headers: Record<string, string> = {}) {
  const events: SseEvent[] = [];
  let comments = 0;
  let retry: number | undefined;
  let status = 0;
  let type = "";
  const req = request(url, { headers, agent: false }, (res) => {
    status = res.statusCode ?? 0;
    type = String(res.headers["content-type"]);
    let buf = "";
    res.on("data", (d: Buffer) => {
      buf += d.toString();
      for (let end = buf.indexOf("\n\n"); end >= 0; end = buf.indexOf("\n\n")) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        const ev: SseEvent = { data: "" };
        let any = false;
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) comments++;
          else if (line.startsWith("retry: ")) retry = Number(line.slice(7));
          else if (line.startsWith("id: ")) ev.id = line.slice(4);
          else if (line.startsWith("event: ")) ev.event = line.slice(7);
          else if (line.startsWith("data: ")) {
            ev.data += line.slice(6);
            any = true;
          } else if (line !== "") throw new Error(`bad SSE line '${line}'`);
        }
        if (any) events.push(ev);
      }
    });
  });
  req.end();
  return {
    events,
    info: () => ({ status, type, comments, retry }),
    close: () => req.destroy(),
  };
}

test("SSE: one stream, host then frames with increasing ids, heartbeats, resumption from Last-Event-ID", async (t) => {
  const srv = await startServe(t, ["--interval", "0.2", "--heartbeat", "0.3"]);
  const a = sse(`${srv.url}/events`);
  t.after(a.close);
  await waitFor("five frames", () =>
    a.events.filter((e) => e.event === "frame").length >= 5 ? true : undefined,
  );
  const info = a.info();
  assert.equal(info.status, 200);
  assert.equal(info.type, "text/event-stream; charset=utf-8");
  assert.equal(info.retry, 2000);
  await waitFor("a heartbeat comment", () => (a.info().comments > 0 ? true : undefined));
  assert.equal(a.events[0].event, "host");
  assert.equal(a.events[0].id, undefined);
  const host = JSON.parse(a.events[0].data);
  assert.ok(typeof host.verdict === "string" && Array.isArray(host.checks));
  const frames = a.events.filter((e) => e.event === "frame");
  const ids = frames.map((e) => Number(e.id));
  for (let i = 1; i < ids.length; i++) assert.equal(ids[i], ids[i - 1] + 1);
  for (const f of frames) {
    const d = JSON.parse(f.data);
    assert.equal(d.id, Number(f.id));
    assert.ok(Array.isArray(d.vms));
  }
  // Reconnecting with Last-Event-ID gets what came after that id, first.
  const lastSeen = ids[2];
  const b = sse(`${srv.url}/events`, { "Last-Event-ID": String(lastSeen) });
  t.after(b.close);
  await waitFor("the resumed stream's frames", () =>
    b.events.filter((e) => e.event === "frame").length >= 3 ? true : undefined,
  );
  const resumed = b.events.filter((e) => e.event === "frame").map((e) => Number(e.id));
  assert.equal(resumed[0], lastSeen + 1);
  for (let i = 1; i < resumed.length; i++) assert.equal(resumed[i], resumed[i - 1] + 1);
  a.close();
  b.close();
});

test("SIGTERM: every connection closed, the server ends with status 0", async (t) => {
  const srv = await startServe(t, ["--interval", "0.2"]);
  const stream = sse(`${srv.url}/events`);
  await waitFor("a frame", () => (stream.events.some((e) => e.event === "frame") ? true : undefined));
  const idle = connect(srv.port, "127.0.0.1");
  idle.on("error", () => {});
  const closed = new Promise<void>((r) => idle.on("close", () => r()));
  await new Promise<void>((r) => idle.once("connect", () => r()));
  const t0 = Date.now();
  srv.child.kill("SIGTERM");
  assert.equal(await srv.ended, 0);
  await closed;
  t.diagnostic(`SIGTERM to exit: ${Date.now() - t0} ms`);
});
