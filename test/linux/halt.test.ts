// A Linux guest's timer tick, which its `sleep` and `halt -f` wait on, where the backend runs guest ring 0 in
// hardware (kvm_amd, kvm_intel; in CI under the kvm_amd harness, test/svm/). Linux finds its local APIC timer
// only through ACPI (MADT) or MP tables; on a machine with neither it drives its tick with the PIT (clock event
// device "pit", IRQ 0 through the 8259), which a vmtool machine has only with --pit: then no tick ever comes,
// and what waits for time (init's `sleep 1`, `halt -f`) waits forever in an idle HLT (docs/linux.md, "The
// timer tick"). The init reports the clock event device and the tick counts; with no tick it ends the run
// through the exit port instead of sleeping; with a tick it sleeps and halts, which must end the run (status 0).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bootVmtool, busyboxInitramfs, debianKernel, stockKernelSkip } from "./helpers.js";
import { extractVmlinux } from "./pvh-vmlinux.js";

const skip = stockKernelSkip();

/** Only stops a hung boot, inside the time the kvm_amd harness gives this file (inner-tests.ts). */
const BOOT_TIMEOUT_MS = 300_000;

// No tick: both counts still 0 after the whole boot. Then sleeping would hang: end the run through port 0xF4.
const INIT = `
mount -t proc proc /proc
mount -t sysfs sys /sys
echo "INIT-CLOCKEVENT: $(cat /sys/devices/system/clockevents/clockevent0/current_device)"
grep -E '^ *(0|LOC):' /proc/interrupts | while read name count rest; do echo "INIT-TICKS $name $count"; done
if grep -qE '^ *(0|LOC): +[1-9]' /proc/interrupts; then
  sleep 1
  echo "INIT-SLEPT"
  halt -f
else
  printf '\\005' | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
fi
echo "INIT-END: still running"
`;

let dir: string;
let vmlinux: string;
let initrd: string;
before(() => {
  if (skip) return;
  dir = mkdtempSync(join(tmpdir(), "vmtool-halt-"));
  vmlinux = extractVmlinux(debianKernel(), dir);
  initrd = join(dir, "initrd.cpio");
  writeFileSync(initrd, busyboxInitramfs(INIT));
});
after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test(
  "Linux's timer tick: none without ACPI, MP tables or a PIT (clock event pit, no IRQ 0 or local timer interrupt); with one, sleep returns and halt -f ends the run (status 0)",
  { skip },
  async () => {
    const cmdline = "console=ttyS0 quiet pci=off";
    const args = ["run", "--kernel", vmlinux, "--initrd", initrd, "--cmdline", cmdline, "--stats"];
    const { status, stdout, all } = await bootVmtool(args, BOOT_TIMEOUT_MS);
    const clockevent = /^INIT-CLOCKEVENT: (\S+)\r?$/m.exec(stdout)?.[1];
    const ticks = [...stdout.matchAll(/^INIT-TICKS (\S+): (\d+)\r?$/gm)].map((m) => [m[1], Number(m[2])]);
    assert.ok(clockevent, all);
    // LOC always; IRQ 0 only while the 8259 routes it (without an IOAPIC from the tables).
    assert.ok(
      ticks.some(([name]) => name === "LOC"),
      `the LOC row of /proc/interrupts\n${all}`,
    );
    if (ticks.every(([, n]) => n === 0)) {
      // A machine without ACPI or MP tables and without a PIT (vmtool before it had the tables).
      assert.equal(
        clockevent,
        "pit",
        `no tick although the kernel's clock event device is ${clockevent}\n${all}`,
      );
      assert.equal(status, 11, all);
    } else {
      assert.match(stdout, /^INIT-SLEPT\r?$/m, `init's sleep 1 did not return\n${all}`);
      assert.match(stdout, /reboot: System halted/, all);
      assert.equal(status, 0, all);
    }
    assert.doesNotMatch(stdout, /INIT-END/, all);
  },
);
