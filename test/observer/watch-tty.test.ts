// `vmtool watch` on a real terminal: run inside tmux (a pseudo-terminal), the test reads the screen.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CLI } from "../helpers/paths.js";
import { cpuDir, timeFile, writeModuleTree } from "./fake-module-tree.js";

const hasTmux = spawnSync("tmux", ["-V"]).status === 0;

function tmuxSession(t: { after(fn: () => void): void }, command: string) {
  const sock = `vmtool-observer-${process.pid}-${Math.random().toString(36).slice(2)}`;
  const tmux = (...args: string[]) => execFileSync("tmux", ["-L", sock, ...args], { encoding: "utf8" });
  tmux("-f", "/dev/null", "new-session", "-d", "-x", "120", "-y", "30", "-s", "w", command);
  t.after(() => spawnSync("tmux", ["-L", sock, "kill-server"]));
  const screen = () => tmux("capture-pane", "-p", "-t", "w");
  const waitFor = async (re: RegExp, what: string): Promise<string> => {
    let last = "";
    for (let i = 0; i < 600; i++) {
      last = screen();
      if (re.test(last)) return last;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`screen never showed ${what} (${re}):\n${last}`);
  };
  return { tmux, screen, waitFor };
}

test(
  "watch on a terminal: live screen of host CPUs × vCPUs marked new, active, stale; q quits with a summary",
  { skip: !hasTmux && "tmux is not installed" },
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), "vmtool-observer-tty-"));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const root = join(dir, "vmtool");
    const now = Math.floor(Date.now() / 1000);
    writeModuleTree(root, { cpus: 4, vcpus: 0, cpusPerVcpu: 1, now });
    writeFileSync(join(cpuDir(root, 0), "373d8000"), timeFile(now - 3)); // seen on cpu-001 later: a move
    writeFileSync(join(cpuDir(root, 2), "c1853000"), timeFile(now - 600)); // long gone: stale from the start
    const { tmux, waitFor } = tmuxSession(
      t,
      `'${process.execPath}' '${CLI}' watch --debugfs '${root}' --interval 0.2 --stale 120; echo "EXIT=$?"; sleep 60`,
    );
    let s = await waitFor(/poll \d+/, "the first frame");
    assert.match(
      s,
      /^vmtool watch {2}\d{4}-\d\d-\d\d \d\d:\d\d:\d\d {2}poll \d+ {2}every 0\.2 s, stale after 120 s {2}vmtool module at \//m,
    );
    assert.match(s, /^cpu-000 +\*373d8000 \d+s$/m);
    assert.match(s, /^cpu-002 +\.c1853000 1\dm\d\ds$/m);
    assert.match(s, /^2 vCPUs: 0 new, 1 active, 1 stale, on 2 of 4 host CPUs/m);
    assert.doesNotMatch(s, /^cpu-001/m); // CPUs without vCPUs take no line

    // A vCPU appears on cpu-003 and the first one is also seen on cpu-001: both show up on the next frames.
    writeFileSync(join(cpuDir(root, 3), "deadb000"), timeFile(Math.floor(Date.now() / 1000)));
    writeFileSync(join(cpuDir(root, 1), "373d8000"), timeFile(Math.floor(Date.now() / 1000)));
    s = await waitFor(/^cpu-003 +\+deadb000 /m, "the new vCPU marked +");
    assert.match(s, /^cpu-001 +\*373d8000 /m);
    assert.match(s, /3 vCPUs: 1 new, 1 active, 1 stale/);

    tmux("send-keys", "-t", "w", "q");
    s = await waitFor(/EXIT=\d+/, "the exit status");
    assert.match(s, /EXIT=0/);
    assert.match(
      s,
      /^watched the vmtool module for [\d.]+ s \(\d+ polls\): 3 vCPUs seen on 4 host CPUs; events: 3 appeared, 1 moved/m,
    );
    assert.doesNotMatch(s, /^cpu-000/m, "the live screen is gone (alternate screen left)");
  },
);

test(
  "watch on a terminal: Ctrl-C exits cleanly with the summary, cursor and screen restored",
  { skip: !hasTmux && "tmux is not installed" },
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), "vmtool-observer-tty-"));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const root = join(dir, "vmtool");
    writeModuleTree(root, { cpus: 64, vcpus: 500, cpusPerVcpu: 4, now: Math.floor(Date.now() / 1000) });
    const { tmux, waitFor } = tmuxSession(
      t,
      `'${process.execPath}' '${CLI}' watch --debugfs '${root}' --interval 0.2 --stale 120; echo "EXIT=$?"; sleep 60`,
    );
    const s0 = await waitFor(/poll \d+/, "the first frame");
    // 64 CPUs with vCPUs on a 30-line terminal: the rest is summarised, lines are cut at the width.
    assert.match(s0, /^… \d+ more host CPUs$/m);
    for (const line of s0.split("\n")) assert.ok(line.length <= 120, line);
    tmux("send-keys", "-t", "w", "C-c");
    const s = await waitFor(/EXIT=\d+/, "the exit status");
    assert.match(s, /EXIT=0/);
    assert.match(s, /^watched the vmtool module .* 500 vCPUs seen on 64 host CPUs; events: 500 appeared/m);
  },
);
