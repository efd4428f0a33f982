// `vmtool run --kernel` booting Debian's stock kernel with a busybox initramfs built here, to init, where the
// backend runs guest ring 0 in hardware (kvm_amd, kvm_intel; in CI under the kvm_amd harness, test/svm/).
// The init prints what the guest sees (its command line, RAM, the RTC's time) and ends the run the way the
// test asks: a write of 5 to vmtool's exit port 0xF4 through /dev/port (status (5 << 1) | 1 = 11), or a reboot
// through the i8042's reset line (reboot=k, status 14). Not `halt -f`: docs/linux.md, "How a run ends".
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CLI } from "../helpers/paths.js";
import { spawn } from "node:child_process";
import { busyboxInitramfs, debianKernel, kvmBackend } from "./helpers.js";

const backend = kvmBackend();
const skip =
  backend === "kvm_pvm" || backend === undefined
    ? `a stock kernel cannot boot on ${backend ?? "a host without KVM"} (docs/linux.md); it runs under the kvm_amd harness`
    : undefined;

/**
 * Only stops a hung boot, inside the 300 s the kvm_amd harness gives this file (inner-tests.ts). A quiet boot
 * makes ~300-1,300 exits; its time is the nested software CPU's: 85-100 s with the machine's load average at 6,
 * more than 100 s at 14.
 */
const BOOT_TIMEOUT_MS = 270_000;

const INIT = `
mount -t proc proc /proc
mount -t sysfs sys /sys
echo "INIT-CMDLINE: $(cat /proc/cmdline)"
echo "INIT-MEM: $(grep MemTotal /proc/meminfo)"
echo "INIT-CPUS: $(grep -c ^processor /proc/cpuinfo)"
echo "INIT-RTC: $(cat /sys/class/rtc/rtc0/since_epoch 2>/dev/null || echo none)"
case "$(cat /proc/cmdline)" in
  *vmtool.end=reboot*) reboot -f ;;
  *) printf '\\005' | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null ;;
esac
echo "INIT-END: still running"
`;

let dir: string;
let kernel: string;
let initrd: string;
before(() => {
  if (skip) return;
  dir = mkdtempSync(join(tmpdir(), "vmtool-linux-"));
  kernel = debianKernel();
  initrd = join(dir, "initrd.cpio");
  writeFileSync(initrd, busyboxInitramfs(INIT));
});
after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Run vmtool; a boot that does not end in time gets SIGTERM (vmtool then prints its --stats), then SIGKILL. */
async function boot(cmdline: string, ...extra: string[]) {
  const t0 = Date.now() / 1000;
  const args = [
    CLI,
    "run",
    "--kernel",
    kernel,
    "--initrd",
    initrd,
    "--cmdline",
    cmdline,
    "--stats",
    ...extra,
  ];
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
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
  const tail = (s: string) => (s.length > 6000 ? `...${s.slice(-6000)}` : s);
  // The end of what the guest and vmtool printed, as test output (the kvm_amd harness shows its last lines).
  const lines = `${stdout}\n${stderr}`.split(/\r?\n/).filter((l) => l !== "");
  for (const l of lines.slice(-28)) console.log(`boot: ${l}`);
  console.log(`boot: status ${status}, ${(t1 - t0).toFixed(1)} s`);
  return {
    status,
    stdout,
    stderr,
    t0,
    t1,
    all: `${tail(stdout)}\n--- stderr ---\n${tail(stderr)}`,
  };
}

function field(out: string, key: string): string | undefined {
  return new RegExp(`^${key}: (.*?)\\r?$`, "m").exec(out)?.[1];
}

test(
  "bzImage: Debian's kernel reaches init, which sees its command line, RAM and RTC, and ends the run through the exit port (status 11)",
  { skip },
  async () => {
    const cmdline = "console=ttyS0 quiet pci=off panic=-1 vmtool.test=hello";
    const r = await boot(cmdline, "--mem", "256M");
    assert.match(
      r.stderr,
      /^vmtool: Linux 6\.\d+\.\d+\S*, bzImage, 256 MiB, 1 vCPU, initrd \d+\.\d MB$/m,
      r.all,
    );
    assert.equal(field(r.stdout, "INIT-CMDLINE"), cmdline, r.all);
    const memKb = Number(/(\d+) kB/.exec(field(r.stdout, "INIT-MEM") ?? "")?.[1]);
    assert.ok(memKb > 180 * 1024 && memKb <= 256 * 1024, `MemTotal ${memKb} kB of 256 MiB\n${r.all}`);
    assert.equal(field(r.stdout, "INIT-CPUS"), "1", r.all);
    // The RTC reads the host's clock: its time lies within the run (a second of rounding either side).
    const rtc = Number(field(r.stdout, "INIT-RTC"));
    assert.ok(
      rtc >= Math.floor(r.t0) - 1 && rtc <= r.t1 + 1,
      `RTC ${field(r.stdout, "INIT-RTC")} outside [${r.t0}, ${r.t1}]\n${r.all}`,
    );
    // init's write of 5 to port 0xF4 (Linux's /dev/port: one outb) ends the run: (5 << 1) | 1.
    assert.equal(r.status, 11, r.all);
    assert.equal(field(r.stdout, "INIT-END"), undefined, r.all);
  },
);

test(
  "bzImage: console=ttyS0 is added when the command line names no console; reboot=k ends the run with status 14",
  { skip },
  async () => {
    const r = await boot("quiet pci=off reboot=k vmtool.end=reboot");
    assert.equal(
      field(r.stdout, "INIT-CMDLINE"),
      "quiet pci=off reboot=k vmtool.end=reboot console=ttyS0",
      r.all,
    );
    assert.match(r.stderr, /, 256 MiB, /, `--mem defaults to 256 MiB with --kernel\n${r.all}`);
    assert.equal(r.status, 14, r.all);
  },
);
