// `vmtool stat` on a real terminal (tmux, a pseudo-terminal): the test reads the screen and sends the keys a
// kvm_stat user would (x, v, p, f, e, b, s, h, r, q, o, g), with real VMs under it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { CLI } from "../helpers/paths.js";
import { busyGuest, ioThenSleepGuest, runArgs } from "./guests.js";
import { startVm, stat, waitFor } from "./helpers.js";

const hasTmux = spawnSync("tmux", ["-V"]).status === 0;

function tmuxSession(t: { after(fn: () => void): void }, command: string) {
  const sock = `vmtool-stat-${process.pid}-${Math.random().toString(36).slice(2)}`;
  const tmux = (...args: string[]) => execFileSync("tmux", ["-L", sock, ...args], { encoding: "utf8" });
  tmux("-f", "/dev/null", "new-session", "-d", "-x", "100", "-y", "45", "-s", "w", command);
  t.after(() => spawnSync("tmux", ["-L", sock, "kill-server"]));
  const screen = () => tmux("capture-pane", "-p", "-t", "w");
  const keys = (...k: string[]) => tmux("send-keys", "-t", "w", ...k);
  const waitScreen = (re: RegExp, what: string) =>
    waitFor(
      `the screen to show ${what} (${re})`,
      () => (re.test(screen()) ? screen() : undefined),
      30_000,
    ).catch((e: unknown) => assert.fail(`${(e as Error).message}\n${screen()}`));
  return { screen, keys, waitScreen };
}

/** The Total column of an event's row. */
const totalOf = (s: string, name: string) =>
  Number(new RegExp(`^ +${name.replace(/[()]/g, "\\$&")} +(\\d+)`, "m").exec(s)?.[1] ?? NaN);

test("the live screen and its keys", { skip: !hasTmux && "tmux is not installed" }, async (t) => {
  const vm = startVm(t, runArgs(busyGuest(), "--cpus", "2"));
  const pid = String(vm.pid);
  await waitFor("the VM", () =>
    stat(["-1", "-p", pid, "-f", "vmtool"]).stdout.includes("vmtool_exits") ? true : undefined,
  );
  const { screen, keys, waitScreen } = tmuxSession(
    t,
    `'${process.execPath}' '${CLI}' stat -s 0.5 --source stats,vmtool; echo "EXIT=$?"; sleep 60`,
  );
  let s = await waitScreen(/^ vmtool_exits +\d+/m, "the first frame");
  assert.match(s, /^kvm statistics - summary/);
  assert.match(s, /^ Event {35,}Total %Total CurAvg\/s$/m);
  assert.match(s, /^ KVM statistics \(binary stats fds, debugfs\)$/m);
  assert.match(s, /^ exits +\d+ +\d+\.\d +\d+$/m);
  assert.match(s, /^ Total +\d+ +\d+$/m);
  assert.match(s, /h: help$/m);
  assert.doesNotMatch(s, /vmtool_exits\(IO\)/, "child events hidden until x");

  keys("x");
  s = await waitScreen(/^ {3}vmtool_exits\(IO\) +\d+ +50\.0/m, "child events under their parent, half each");
  assert.match(s, /^ {5}vmtool_io\(0x80,out\) +\d+/m);
  keys("v");
  s = await waitScreen(new RegExp(`^ {3}(${pid}/)?vcpu0 +\\d+ +100\\.0`, "m"), "each vCPU under its event");
  keys("v");

  // p: the guest list, then a pid.
  keys("p");
  s = await waitScreen(/Guest or pid \[ENTER exits\]:/, "the guest prompt");
  assert.match(s, new RegExp(`^ +${pid}  node$`, "m"));
  keys(pid, "Enter");
  s = await waitScreen(new RegExp(`^kvm statistics - pid ${pid} \\(node\\)`), "the guest's own view");

  // f: a regex; only matching events (and the parents of matching children) stay.
  keys("f");
  await waitScreen(/New regex/, "the regex prompt");
  keys("vmtool_exits\\(M", "Enter");
  s = await waitScreen(/regex filter: vmtool_exits\\\(M/, "the filter");
  await waitScreen(/^ {3}vmtool_exits\(MMIO\)/m, "the matching child");
  s = screen();
  assert.doesNotMatch(s, /^ +(exits|insn_emulation|vmtool_exits\(IO\)) /m, "nothing else");
  assert.match(s, /^ vmtool_exits +\d+/m, "its parent stays");

  // e on the selected row (the child, one down): its `vmtool explain` entry.
  keys("j", "e");
  s = await waitScreen(/vmtool explain exit MMIO --table kvm/, "the explanation");
  assert.match(s, /KVM_EXIT_\* \(kvm_run\.exit_reason\) 6 \(0x6\): MMIO/);
  keys("z");
  await waitScreen(/^ {3}vmtool_exits\(MMIO\)/m, "back from the explanation");

  // r: totals count again from now.
  const before = totalOf(screen(), "vmtool_exits");
  keys("r");
  await waitFor(
    "smaller totals",
    () => (totalOf(screen(), "vmtool_exits") < before ? true : undefined),
    10_000,
  );

  // c, then b: every guest, one row each.
  keys("c");
  await waitScreen(/^kvm statistics - summary/, "filters cleared");
  keys("b");
  s = await waitScreen(new RegExp(`^ node \\[${pid}\\] +\\d+`, "m"), "the guest's row");
  assert.match(s, /^ Guest Name +Total/m);
  keys("b");

  // s: a delay out of range is refused in place; a good one is taken.
  keys("s");
  await waitScreen(/Change delay from 0\.5s/, "the delay prompt");
  keys("30", "Enter");
  await waitScreen(/delay: 30 is outside 0\.1\.\.25\.5 seconds/, "the refusal");
  keys("1", "Enter");
  await waitScreen(/every 1s · h: help/, "the new delay");

  keys("h");
  await waitScreen(/^Interactive commands reference/, "the help");
  keys("z");
  await waitScreen(/^kvm statistics - summary/, "back");

  // The watched guest goes away: with -p, kvm_stat's "Guest is DEAD".
  keys("p");
  await waitScreen(/Guest or pid/, "the guest prompt");
  keys(pid, "Enter");
  await waitScreen(new RegExp(`^kvm statistics - pid ${pid}`), "the guest's view");
  vm.kill("SIGTERM");
  await waitScreen(/Guest is DEAD/, "the dead guest");

  keys("q");
  s = await waitScreen(/EXIT=\d+/, "the exit status");
  assert.match(s, /EXIT=0/);
  assert.doesNotMatch(s, /kvm statistics/, "the alternate screen is gone");
});

test(
  "the screen's units (seconds, yes/no, a histogram's count and bars), o's sort by Total, g by name",
  { skip: !hasTmux && "tmux is not installed" },
  async (t) => {
    // 20,000 port exits, then asleep: its IO row has the larger total, its INTR row (a few wake-ups a second)
    // the only rate; INTR's total would need thousands of seconds to catch up.
    const vm = startVm(t, runArgs(ioThenSleepGuest(20_000)));
    const pid = String(vm.pid);
    await waitFor("the guest asleep for a second", () => {
      const r = stat(["-1", "-i", "-p", pid, "-f", "halt_wait_ns$|vmtool_exits\\(IO\\)$"]);
      const ns = /^halt_wait_ns +(\d+) +(\d+)$/m.exec(r.stdout);
      const io = /^vmtool_exits\(IO\) +(\d+) +\d+$/m.exec(r.stdout);
      return ns && Number(ns[1]) > 1e9 && io?.[1] === "20000" ? true : undefined;
    });
    // -1 keeps its columns apart when a number is wider than kvm_stat's 10 characters (nanoseconds are).
    const one = stat(["-1", "-i", "-p", pid, "-f", "halt_wait_ns$"]);
    assert.match(one.stdout, /^halt_wait_ns +\d{10,} +\d+\n$/);
    const { screen, keys, waitScreen } = tmuxSession(
      t,
      `'${process.execPath}' '${CLI}' stat -i -s 0.5 -p ${pid} --source stats,vmtool; echo "EXIT=$?"; sleep 60`,
    );
    // halt_wait_ns in seconds (a rate of seconds per second: the share of time asleep), blocking yes/no, the
    // histogram's row a count of waits with its bars and their range beneath.
    let s = await waitScreen(/^ halt_wait_ns +\d+(\.\d+)?s +\d+(\.\d+)?m?s\/s$/m, "halt_wait_ns in seconds");
    s = await waitScreen(/^ blocking +yes$/m, "blocking as yes");
    s = await waitScreen(/^ halt_wait_hist +\d+ +\d+$/m, "the histogram's count, in no unit");
    const lines = s.split("\n");
    const hist = lines.findIndex((l) => /^ halt_wait_hist /.test(l));
    assert.match(
      lines[hist + 1],
      /^ {3}[ ▁▂▃▄▅▆▇█]*[▁▂▃▄▅▆▇█] {2}\d+(\.\d+)?[mµn]?s\.\.(\d+(\.\d+)?[mµn]?s|∞)$/u,
      s,
    );

    // o: sorted by CurAvg/s (INTR moves, IO does not), then by Total (IO's 20,000 first).
    keys("x");
    const order = (sc: string) => {
      const io = sc.search(/^ {3}vmtool_exits\(IO\) +20000 /m);
      const intr = sc.search(/^ {3}vmtool_exits\(INTR\) +\d+ +[\d.]+ +\d+$/m);
      return io >= 0 && intr >= 0 ? (intr < io ? "INTR first" : "IO first") : undefined;
    };
    await waitFor(
      "INTR above IO (by CurAvg/s)",
      () => (order(screen()) === "INTR first" ? true : undefined),
      30_000,
    ).catch((e: unknown) => assert.fail(`${(e as Error).message}\n${screen()}`));
    keys("o");
    await waitFor(
      "IO above INTR (by Total)",
      () => (order(screen()) === "IO first" ? true : undefined),
      30_000,
    ).catch((e: unknown) => assert.fail(`${(e as Error).message}\n${screen()}`));
    keys("o");
    await waitFor(
      "INTR above IO again",
      () => (order(screen()) === "INTR first" ? true : undefined),
      30_000,
    ).catch((e: unknown) => assert.fail(`${(e as Error).message}\n${screen()}`));

    // g: a guest by name; one that no VM has is refused in place, with the running guests named.
    keys("g");
    await waitScreen(/Guest or pid \[ENTER exits\]:/, "the guest prompt");
    assert.match(screen(), new RegExp(`^ +${pid}  node$`, "m"));
    keys("no-such-guest", "Enter");
    s = await waitScreen(/-g no-such-guest: no VM of that name \(running: /, "the refusal");
    keys("Enter");
    await waitScreen(/^kvm statistics - summary/, "every guest (ENTER alone)");

    keys("q");
    s = await waitScreen(/EXIT=\d+/, "the exit status");
    assert.match(s, /EXIT=0/);
  },
);
