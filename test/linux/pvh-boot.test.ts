// `vmtool run --kernel vmlinux` booting Debian's stock kernel through PVH (the vmlinux extracted here from the
// bzImage the tests fetch) to a busybox init, where the backend runs guest ring 0 in hardware (kvm_amd,
// kvm_intel; in CI under the kvm_amd harness, test/svm/). The same checks as the bzImage boot
// (test/linux/boot.test.ts): the guest's command line, RAM, CPU count and RTC time as init sees them, and the run
// ended by init through the exit port (status 11).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CLI } from "../helpers/paths.js";
import { busyboxInitramfs, debianKernel, kvmBackend } from "./helpers.js";
import { extractVmlinux } from "./pvh-vmlinux.js";

const backend = kvmBackend();
const skip =
  backend === "kvm_pvm" || backend === undefined
    ? `a stock kernel cannot boot on ${backend ?? "a host without KVM"} (docs/linux.md); it runs under the kvm_amd harness`
    : undefined;

/** Only stops a hung boot, inside the time the kvm_amd harness gives this file (inner-tests.ts). */
const BOOT_TIMEOUT_MS = 270_000;

const INIT = `
mount -t proc proc /proc
mount -t sysfs sys /sys
echo "INIT-CMDLINE: $(cat /proc/cmdline)"
echo "INIT-MEM: $(grep MemTotal /proc/meminfo)"
echo "INIT-CPUS: $(grep -c ^processor /proc/cpuinfo)"
echo "INIT-RTC: $(cat /sys/class/rtc/rtc0/since_epoch 2>/dev/null || echo none)"
printf '\\005' | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
echo "INIT-END: still running"
`;

let dir: string;
let vmlinux: string;
let initrd: string;
before(() => {
  if (skip) return;
  dir = mkdtempSync(join(tmpdir(), "vmtool-pvh-boot-"));
  vmlinux = extractVmlinux(debianKernel(), dir);
  initrd = join(dir, "initrd.cpio");
  writeFileSync(initrd, busyboxInitramfs(INIT));
});
after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function field(out: string, key: string): string | undefined {
  return new RegExp(`^${key}: (.*?)\\r?$`, "m").exec(out)?.[1];
}

test(
  "PVH: Debian's vmlinux reaches init, which sees its command line, RAM and RTC, and ends the run through the exit port (status 11)",
  { skip },
  async () => {
    const cmdline = "console=ttyS0 quiet pci=off panic=-1 vmtool.test=pvh";
    const t0 = Date.now() / 1000;
    const args = [
      "run",
      "--kernel",
      vmlinux,
      "--initrd",
      initrd,
      "--cmdline",
      cmdline,
      "--mem",
      "256M",
      "--stats",
    ];
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (b: Buffer) => (stdout += b.toString("latin1")));
    child.stderr.on("data", (b: Buffer) => (stderr += b.toString("latin1")));
    const term = setTimeout(() => child.kill("SIGTERM"), BOOT_TIMEOUT_MS);
    const kill = setTimeout(() => child.kill("SIGKILL"), BOOT_TIMEOUT_MS + 5000);
    const status = await new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    const t1 = Date.now() / 1000;
    clearTimeout(term);
    clearTimeout(kill);
    const lines = `${stdout}\n${stderr}`.split(/\r?\n/).filter((l) => l !== "");
    for (const l of lines.slice(-28)) console.log(`boot: ${l}`);
    console.log(`boot: status ${status}, ${(t1 - t0).toFixed(1)} s`);
    const all = `${stdout.slice(-6000)}\n--- stderr ---\n${stderr.slice(-6000)}`;

    assert.match(stderr, /^vmtool: Linux 6\.\d+\.\d+\S*, PVH, 256 MiB, 1 vCPU, initrd \d+\.\d MB$/m, all);
    assert.equal(field(stdout, "INIT-CMDLINE"), cmdline, all);
    const memKb = Number(/(\d+) kB/.exec(field(stdout, "INIT-MEM") ?? "")?.[1]);
    assert.ok(memKb > 180 * 1024 && memKb <= 256 * 1024, `MemTotal ${memKb} kB of 256 MiB\n${all}`);
    assert.equal(field(stdout, "INIT-CPUS"), "1", all);
    const rtc = Number(field(stdout, "INIT-RTC"));
    assert.ok(
      rtc >= Math.floor(t0) - 1 && rtc <= t1 + 1,
      `RTC ${field(stdout, "INIT-RTC")} outside [${t0}, ${t1}]\n${all}`,
    );
    assert.equal(status, 11, all);
    assert.equal(field(stdout, "INIT-END"), undefined, all);
  },
);
