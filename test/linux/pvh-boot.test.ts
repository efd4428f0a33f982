// `vmtool run --kernel vmlinux` booting Debian's stock kernel through PVH (the vmlinux extracted here from the
// bzImage the tests fetch) to a busybox init, where the backend runs guest ring 0 in hardware (kvm_amd,
// kvm_intel; in CI under the kvm_amd harness, test/svm/). The same checks as the bzImage boot
// (test/linux/boot.test.ts): the guest's command line, RAM, CPU count and RTC time as init sees them, and the run
// ended by init through the exit port (status 11).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  bootVmtool,
  busyboxInitramfs,
  debianKernel,
  initField as field,
  stockKernelSkip,
} from "./helpers.js";
import { extractVmlinux } from "./pvh-vmlinux.js";

const skip = stockKernelSkip();

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

test(
  "PVH: Debian's vmlinux reaches init, which sees its command line, RAM and RTC, and ends the run through the exit port (status 11)",
  { skip },
  async () => {
    const cmdline = "console=ttyS0 quiet pci=off panic=-1 vmtool.test=pvh";
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
    const { status, stdout, stderr, t0, t1, all } = await bootVmtool(args, BOOT_TIMEOUT_MS);

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
