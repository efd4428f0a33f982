// VMs come and go while `vmtool stat` watches: one that starts after stat did is found and counted from its
// start; one that ends is reported once as ended, and every copy of its stats fds is closed at once (a held
// copy would keep the kernel's VM, and its debugfs folder, alive after its VMM exited).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readdirSync, readlinkSync } from "node:fs";
import { CLI } from "../helpers/paths.js";
import { busyGuest, runArgs } from "./guests.js";
import { event, isRoot, startVm, waitFor, type JsonLine } from "./helpers.js";

const DEBUGFS_KVM = "/sys/kernel/debug/kvm";

function kvmLinks(pid: number): string[] {
  try {
    return readdirSync(`/proc/${pid}/fd`)
      .map((fd) => {
        try {
          return readlinkSync(`/proc/${pid}/fd/${fd}`);
        } catch {
          return "";
        }
      })
      .filter((l) => l.startsWith("anon_inode:kvm"));
  } catch {
    return [];
  }
}

const vmFolders = (pid: number) => {
  try {
    return readdirSync(DEBUGFS_KVM).filter((n) => n.startsWith(`${pid}-`));
  } catch {
    return [];
  }
};

test("a VM that starts after stat, then ends while watched: found, counted from its start, released at once", async (t) => {
  const watcher = spawn(
    process.execPath,
    [CLI, "stat", "--json", "-s", "0.2", "--count", "300", "--source", "stats,vmtool"],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  t.after(() => watcher.kill("SIGKILL"));
  const lines: JsonLine[] = [];
  let buf = "";
  watcher.stdout.on("data", (d: Buffer) => {
    buf += d.toString();
    for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
      lines.push(JSON.parse(buf.slice(0, nl)) as JsonLine);
      buf = buf.slice(nl + 1);
    }
  });
  await waitFor("stat's first line", () => (lines.length > 0 ? true : undefined));

  const vm = startVm(t, runArgs(busyGuest()));
  // The lines that show the VM, from its first sight until one in which it has made exits (it may be seen
  // before its first exit).
  const seen = await waitFor("the new VM in a line, with exits", () => {
    const withVm = lines.flatMap((l) =>
      l.vms.filter((x) => x.pid === vm.pid && event(x, "vmtool", "vmtool_exits")),
    );
    const upTo = withVm.findIndex((v) => event(v, "vmtool", "vmtool_exits(IO)")!.total > 0);
    return upTo >= 0 ? withVm.slice(0, upTo + 1) : undefined;
  });
  // Everything it counted happened after stat started: its total is the sum of the deltas since its first sight.
  const last = seen[seen.length - 1];
  for (const name of ["vmtool_exits", "vmtool_exits(IO)"]) {
    const sum = seen.reduce((n, v) => n + event(v, "vmtool", name)!.delta, 0);
    const total = event(last, "vmtool", name)!.total;
    assert.ok(total > 0 && total === sum, `${name}: total ${total}, deltas since first sight ${sum}`);
  }
  const kvmExits = seen.map((v) => event(v, "stats", "exits"));
  if (kvmExits.every((e) => e !== undefined))
    assert.equal(
      kvmExits[kvmExits.length - 1].total,
      kvmExits.reduce((n, e) => n + e.delta, 0),
    );
  await waitFor("stat holding copies of the run's stats fds", () =>
    kvmLinks(watcher.pid!).some((l) => l.startsWith("anon_inode:kvm-vcpu-stats")) ? true : undefined,
  );
  const folders = vmFolders(vm.pid);
  if (isRoot)
    assert.equal(folders.length, 1, `the VM's debugfs folder under ${DEBUGFS_KVM} (is debugfs mounted?)`);
  const linesBefore = lines.length;

  vm.kill("SIGTERM");
  await vm.ended;
  const ended = await waitFor("the VM reported as ended", () =>
    lines.slice(linesBefore).find((l) => l.vms.some((v) => v.pid === vm.pid && v.ended)),
  );
  const at = lines.indexOf(ended);
  // Released while stat goes on: the kernel's VM is gone, its debugfs folder with it (a copy of its stats fds
  // still held would keep both).
  if (folders.length === 1)
    await waitFor(
      "the VM's debugfs folder removed",
      () => (vmFolders(vm.pid).length === 0 ? true : undefined),
      5000,
    );
  await waitFor("two more lines", () => (lines.length > at + 2 ? true : undefined));
  assert.equal(watcher.exitCode, null, "stat still runs");
  assert.ok(
    lines.slice(at + 1).every((l) => !l.vms.some((v) => v.pid === vm.pid)),
    "reported as ended once, then no more",
  );
  // The summary keeps what the ended VM counted: its totals never go backwards.
  const totals = lines.slice(at - 1).map((l) => l.summary["vmtool_exits"]?.total ?? 0);
  for (let i = 1; i < totals.length; i++)
    assert.ok(totals[i] >= totals[i - 1], `summary totals ${totals.join(" ")}`);
  watcher.kill("SIGTERM");
  const status = await new Promise<number | null>((r) => watcher.on("exit", (c) => r(c)));
  assert.equal(status, 0, "SIGTERM ends stat cleanly");
});
