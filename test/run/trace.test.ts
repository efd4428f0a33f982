// --trace numbers the exits it shows one after another: the kicks the main thread makes to check whether a
// sleeping guest halted for good are not shown, and take no number.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";
import { CLI } from "../helpers/paths.js";
import { guests } from "../helpers/guests.js";

/** How many of the process's threads sleep (state S) right now. */
function sleepingThreads(pid: number): number {
  let n = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "latin1");
      if (stat.charAt(stat.lastIndexOf(")") + 2) === "S") n++;
    } catch {
      // the thread ended
    }
  }
  return n;
}

test(
  "--trace: sequence numbers without gaps, though halt checks kicked the vCPU while it slept",
  { timeout: 60_000 },
  async (t) => {
    // serial-echo sleeps in HLT (interrupts on) until a key arrives: the main thread sees its vCPU thread
    // asleep and kicks it to check whether it halted for good, again and again, while nothing is traced.
    const p = spawn(process.execPath, [CLI, "run", "--trace", "--stats", "--no-raw", guests().serialEcho]);
    t.after(() => p.kill("SIGKILL"));
    let out = "";
    let err = "";
    p.stdout.on("data", (b: Buffer) => (out += b.toString()));
    p.stderr.on("data", (b: Buffer) => (err += b.toString()));
    while (!out.includes("ready")) await new Promise((r) => setTimeout(r, 20));
    // Let several halt checks happen: the vCPU thread must be seen asleep on many looks in a row.
    for (let asleep = 0; asleep < 20;) {
      asleep = sleepingThreads(p.pid!) > 0 ? asleep + 1 : 0;
      await new Promise((r) => setTimeout(r, 20));
    }
    p.stdin.end("ab\x04"); // two bytes echoed, then EOT: the guest ends (exit port 0: status 1)
    const status = await new Promise((resolve) => p.on("exit", resolve));
    assert.equal(status, 1, err);
    const seqs = [...err.matchAll(/^#(\d+) /gm)].map((m) => Number(m[1]));
    assert.ok(seqs.length > 10, err);
    seqs.forEach((n, i) => assert.equal(n, i + 1, `exit line ${i + 1} is numbered #${n}`));
    const intr = /INTR\s*│\s*(\d+)/.exec(err);
    assert.ok(intr && Number(intr[1]) >= 2, `the halt-check kicks happened: ${intr?.[1]} INTR exits`);
  },
);
