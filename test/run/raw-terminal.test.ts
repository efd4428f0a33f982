// vmtool run on a real terminal (tmux gives it a pseudo-terminal; the test types keys and reads the screen):
// input is raw, so each key reaches the guest as typed and is shown once (by the guest's echo, not the
// terminal's), Ctrl-D reaches the guest, Ctrl-A x ends the run with 130, and the terminal's mode is restored
// however the run ends. --no-raw keeps the terminal cooked.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { CLI } from "../helpers/paths.js";
import { guests } from "../helpers/guests.js";

const hasTmux = spawnSync("tmux", ["-V"]).status === 0;
const skip = !hasTmux && "tmux is not installed";

function tmuxSession(t: { after(fn: () => void): void }, command: string) {
  const sock = `vmtool-raw-${process.pid}-${Math.random().toString(36).slice(2)}`;
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
  const keys = (...k: string[]) => tmux("send-keys", "-t", "w", ...k);
  return { waitFor, keys };
}

/** A shell line that prints the terminal's mode, runs vmtool, then prints its status and the mode again. */
function around(vmtoolArgs: string): string {
  return (
    `echo "BEFORE=$(stty -g)"; '${process.execPath}' '${CLI}' run ${vmtoolArgs}; ` +
    `echo "EXIT=$? AFTER=$(stty -g)"; sleep 60`
  );
}

function modes(screen: string): { before?: string; after?: string } {
  return {
    before: /BEFORE=(\S+)/.exec(screen)?.[1],
    after: /AFTER=(\S+)/.exec(screen.replace(/\n/g, ""))?.[1],
  };
}

test(
  "raw terminal: keys reach the guest as typed, shown once; Ctrl-D reaches it; the mode is restored",
  { skip },
  async (t) => {
    const { waitFor, keys } = tmuxSession(t, around(`'${guests().serialEcho}'`));
    await waitFor(/serial-echo: ready/, "the guest's prompt");
    keys("-l", "hi");
    let s = await waitFor(/ready \(EOT ends\)\s*\nhi/, "the echo");
    assert.doesNotMatch(s, /hihi/, "no local echo by the terminal");
    keys("C-d"); // EOT: the guest ends through the exit port (value 0, status 1)
    s = await waitFor(/EXIT=\d+/, "the exit status");
    assert.match(s, /serial-echo: 2 bytes echoed/);
    assert.match(s, /EXIT=1 /);
    const m = modes(s);
    assert.ok(m.before && m.after, s);
    assert.equal(m.after, m.before, "the terminal's mode is what it was");
  },
);

test(
  "raw terminal: Ctrl-C goes to the guest; Ctrl-A x ends the run with 130 and restores the mode",
  { skip },
  async (t) => {
    const { waitFor, keys } = tmuxSession(t, around(`'${guests().serialEcho}'`));
    await waitFor(/serial-echo: ready/, "the guest's prompt");
    keys("C-c"); // a byte for the guest now, not SIGINT
    keys("-l", "ok");
    await waitFor(/\nok/, "the echo after Ctrl-C");
    keys("C-a", "x");
    const s = await waitFor(/EXIT=\d+/, "the exit status");
    assert.match(s, /EXIT=130 /);
    const m = modes(s);
    assert.equal(m.after, m.before, "the terminal's mode is what it was");
  },
);

test(
  "--no-raw: the terminal stays cooked (line editing), Ctrl-C ends vmtool with 130",
  { skip },
  async (t) => {
    const { waitFor, keys } = tmuxSession(t, around(`--no-raw '${guests().serialEcho}'`));
    await waitFor(/serial-echo: ready/, "the guest's prompt");
    keys("-l", "ab");
    // Cooked: the terminal echoes what is typed, and the guest gets nothing before Enter.
    await waitFor(/ready \(EOT ends\)\s*\nab/, "the terminal's own echo");
    keys("Enter");
    await waitFor(/\nab\s*\nab/, "the guest's echo after Enter");
    keys("C-c");
    const s = await waitFor(/EXIT=\d+/, "the exit status");
    assert.match(s, /EXIT=130 /);
    const m = modes(s);
    assert.equal(m.after, m.before);
  },
);
