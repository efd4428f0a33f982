// Every way the observer can fail to find or read its tree ends with one clear line and the documented status.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CLI } from "../helpers/paths.js";

const MOUNT_HINT = "mount -t debugfs none /sys/kernel/debug";

function run(cmd: string, args: string[]) {
  const r = spawnSync(cmd, args, { encoding: "utf8", timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
const vmtool = (...args: string[]) => run(process.execPath, [CLI, ...args]);
/** Run in a private mount namespace, after `setup` (shell) has changed its mounts: the host's stay as they are. */
const inMountNs = (setup: string, cmd: string) =>
  run("unshare", ["-m", "--propagation", "private", "sh", "-c", `${setup}; ${cmd}`]);
const cli = (args: string) => `'${process.execPath}' '${CLI}' ${args}`;

function oneError(r: { status: number | null; stderr: string }, status: number, pattern: RegExp): void {
  const lines = r.stderr.trim().split("\n");
  assert.equal(lines.length, 1, `expected one line, got:\n${r.stderr}`);
  assert.match(lines[0], /^vmtool: error: /);
  assert.match(lines[0], pattern);
  assert.equal(r.status, status, r.stderr);
}

test("bad options and paths: exit 2 with one line", (t) => {
  const dir = mkdtempSync(join(tmpdir(), "vmtool-observer-err-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, "file"), "x");
  for (const cmd of ["vcpus", "watch"]) {
    oneError(vmtool(cmd, "--debugfs", join(dir, "nope")), 2, /--debugfs .*nope: no such directory/);
    oneError(vmtool(cmd, "--debugfs", join(dir, "file")), 2, /not a directory/);
    oneError(
      vmtool(cmd, "--source", "xen", "--debugfs", dir),
      2,
      /--source: 'xen' is not one of vmtool, kvm, auto/,
    );
  }
  oneError(vmtool("watch", "--interval", "0"), 2, /--interval: 0 is outside/);
  oneError(vmtool("watch", "--interval", "soon"), 2, /--interval: 'soon' is not a number/);
  oneError(vmtool("watch", "--stale", "x1"), 2, /--stale: 'x1' is not a number/);
  oneError(vmtool("watch", "--count", "0"), 2, /--count: 0 is below the minimum/);
  oneError(vmtool("vcpus", "--sample", "-5"), 2, /--sample/);
});

test("module not loaded: exit 6, suggests the KVM source; no KVM either: says so", (t) => {
  const dir = mkdtempSync(join(tmpdir(), "vmtool-observer-err-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, "kvm"));
  oneError(
    vmtool("vcpus", "--source", "vmtool", "--debugfs", dir),
    6,
    /vmtool module is not loaded.*--source kvm/,
  );
  oneError(vmtool("watch", "--source", "vmtool", "--debugfs", dir), 6, /vmtool module is not loaded/);
  rmSync(join(dir, "kvm"), { recursive: true });
  oneError(vmtool("vcpus", "--source", "kvm", "--debugfs", dir), 6, /no KVM debugfs at .*kvm/);
  oneError(vmtool("vcpus", "--debugfs", dir), 6, /neither the vmtool module .* nor KVM/);
  // An empty KVM tree is not an error: no VM is running.
  mkdirSync(join(dir, "kvm"));
  const r = vmtool("vcpus", "--debugfs", dir, "--sample", "0");
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^no VM is running$/m);
});

test("debugfs not mounted: exit 6 naming the mount command; --mount mounts it (in a private mount namespace)", () => {
  const unmount = "umount /sys/kernel/debug 2>/dev/null; true";
  oneError(
    inMountNs(unmount, cli("vcpus")),
    6,
    new RegExp(
      `debugfs is not mounted at /sys/kernel/debug: mount it with '${MOUNT_HINT}' as root, or run with --mount`,
    ),
  );
  oneError(inMountNs(unmount, cli("watch --json")), 6, /debugfs is not mounted/);
  const r = inMountNs(unmount, cli("vcpus --mount --source kvm --sample 0 --json"));
  assert.equal(r.status, 0, r.stderr);
  assert.equal((JSON.parse(r.stdout) as { root: string }).root, "/sys/kernel/debug/kvm");
  // --mount as an ordinary user: refused with the reason.
  oneError(
    inMountNs(unmount, `setpriv --reuid=65534 --regid=65534 --clear-groups ${cli("vcpus --mount")}`),
    6,
    /--mount needs root/,
  );
});

test("permission denied (debugfs is root-only): exit 6 saying so", () => {
  const mount = `mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug`;
  const asNobody = (args: string) => `setpriv --reuid=65534 --regid=65534 --clear-groups ${cli(args)}`;
  oneError(
    inMountNs(mount, asNobody("vcpus")),
    6,
    /permission denied reading \/sys\/kernel\/debug: debugfs is readable by root only/,
  );
  oneError(inMountNs(mount, asNobody("watch --json")), 6, /permission denied/);
});
