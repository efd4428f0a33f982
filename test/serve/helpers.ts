// What the `vmtool serve` tests share: the server in a child process on a free loopback port (read from its
// "listening on" line), HTTP requests to it, and a small guest with a known number of exits.
import { spawn, type ChildProcess } from "node:child_process";
import { request } from "node:http";
import { CLI } from "../helpers/paths.js";
import { countedGuest, runArgs } from "../stats/guests.js";
import { startVm, waitFor, type RunningVm } from "../stats/helpers.js";

export interface Served {
  child: ChildProcess;
  port: number;
  url: string;
  stderr: () => string;
  ended: Promise<number>;
}

type T = { after(fn: () => void | Promise<void>): void };

/** `vmtool serve --listen 127.0.0.1:0 ARGS`, killed when the test ends. */
export async function startServe(t: T, args: string[] = [], port = 0): Promise<Served> {
  const child = spawn(process.execPath, [CLI, "serve", "--listen", `127.0.0.1:${port}`, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let err = "";
  child.stderr.on("data", (d: Buffer) => (err += d.toString()));
  child.stdout.resume();
  const ended = new Promise<number>((r) => child.on("exit", (c, s) => r(c ?? (s === "SIGKILL" ? 137 : 143))));
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGKILL");
      await ended;
    }
  });
  const got = await waitFor("serve's listening line", () => {
    const m = /listening on http:\/\/127\.0\.0\.1:(\d+)\//.exec(err);
    if (m) return Number(m[1]);
    if (child.exitCode !== null) throw new Error(`vmtool serve exited ${child.exitCode}: ${err}`);
    return undefined;
  });
  return { child, port: got, url: `http://127.0.0.1:${got}`, stderr: () => err, ended };
}

export interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  text: string;
}

/** One request (a new connection each time), the whole reply. */
export function get(url: string, headers: Record<string, string> = {}, method = "GET"): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers, agent: false }, (res) => {
      const parts: Buffer[] = [];
      res.on("data", (d: Buffer) => parts.push(d));
      res.on("end", () => {
        const body = Buffer.concat(parts);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, text: body.toString() });
      });
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end();
  });
}

/** A VM that makes exactly `loops` × (1 port out to 0x80, 1 port in from 0x81, 1 MMIO read, 1 MMIO write). */
export function countedVm(t: T, loops: number): RunningVm {
  return startVm(t, runArgs(countedGuest(loops)));
}

/** Wait until the async `check` gives a value other than undefined (every 200 ms), at most `ms`. */
export async function until<T>(what: string, check: () => Promise<T | undefined>, ms = 60_000): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline)
      throw new Error(
        `timed out waiting for ${what}${last instanceof Error ? ` (last error: ${last.message})` : ""}`,
      );
    await new Promise((r) => setTimeout(r, 200));
  }
}
