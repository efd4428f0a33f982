// `vmtool run --kernel` booting Debian's stock kernel with a busybox initramfs built here, to init, where the
// backend runs guest ring 0 in hardware (kvm_amd, kvm_intel; in CI under the kvm_amd harness, test/svm/).
// The init prints what the guest sees (its command line, RAM, the RTC's time) and ends the run the way the
// test asks: a write of 5 to vmtool's exit port 0xF4 through /dev/port (status (5 << 1) | 1 = 11), or a reboot
// through the i8042's reset line (reboot=k, status 14). Not `halt -f`: docs/linux.md, "How a run ends".
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  VIRTIO_MODULES,
  bootVmtool,
  busyboxInitramfs,
  debianKernel,
  initField as field,
  stockKernelSkip,
  virtioModules,
} from "./helpers.js";

const skip = stockKernelSkip();

/**
 * Only stops a hung boot, inside the 360 s the kvm_amd harness gives this file (inner-tests.ts). A quiet boot
 * makes ~300-1,300 exits; its time is the nested software CPU's: 85-100 s with the machine's load average at 6,
 * more than 100 s at 14.
 */
const BOOT_TIMEOUT_MS = 330_000;

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

/** What the guest writes at byte 512 of the disk, and what the host wrote at byte 1024 before the run. */
const GUEST_PATTERN = "GUEST-WROTE-THIS";
const HOST_PATTERN = "HOST-WROTE-THIS!";

/**
 * The init of the ACPI boot: Debian's virtio modules loaded (their devices come from the DSDT), then what the
 * guest sees: its CPUs (from the MADT), the virtio device ids, the disk (a write read back past the page cache,
 * and the host's bytes), the entropy device, the virtio console; then `poweroff -f` (ACPI S5).
 */
const ACPI_INIT = `
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in ${VIRTIO_MODULES.map((m) => m.split("/").at(-1)).join(" ")}; do
  insmod /lib/modules/$m.ko || echo "INIT-INSMOD-FAILED: $m"
done
echo "INIT-CMDLINE: $(cat /proc/cmdline)"
echo "INIT-CPUS: $(grep -c ^processor /proc/cpuinfo)"
echo "INIT-RTC: $(cat /sys/class/rtc/rtc0/since_epoch 2>/dev/null || echo none)"
echo "INIT-RTC-LOG: $(dmesg | grep -i -E 'rtc|cmos' | tr '\\n' '|')"
echo "INIT-VIRTIO: $(cat /sys/bus/virtio/devices/*/device | sort | tr '\\n' ' ')"
printf '${GUEST_PATTERN}' | dd of=/dev/vda bs=512 seek=1 conv=fsync 2>/dev/null
echo 3 > /proc/sys/vm/drop_caches
echo "INIT-DISK-BACK: $(dd if=/dev/vda bs=16 skip=32 count=1 2>/dev/null)"
echo "INIT-DISK-HOST: $(dd if=/dev/vda bs=16 skip=64 count=1 2>/dev/null)"
echo "INIT-RNG-DEVICE: $(cat /sys/class/misc/hw_random/rng_current 2>/dev/null)"
echo "INIT-RNG: $(dd if=/dev/hwrng bs=16 count=1 2>/dev/null | od -An -tx1 | tr -d ' \\n')"
printf 'INIT-HVC: hello on hvc0' > /dev/hvc0
poweroff -f
echo "INIT-END: still running"
`;

let dir: string;
let kernel: string;
let initrd: string;
let acpiInitrd: string;
before(() => {
  if (skip) return;
  dir = mkdtempSync(join(tmpdir(), "vmtool-linux-"));
  kernel = debianKernel();
  initrd = join(dir, "initrd.cpio");
  writeFileSync(initrd, busyboxInitramfs(INIT));
  acpiInitrd = join(dir, "initrd-acpi.cpio");
  writeFileSync(acpiInitrd, busyboxInitramfs(ACPI_INIT, virtioModules(kernel)));
});
after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Boot the plain initrd (bootVmtool: SIGTERM, then SIGKILL, for a boot that does not end in time). */
function boot(cmdline: string, ...extra: string[]) {
  return bootWith(initrd, cmdline, ...extra);
}

function bootWith(initrdFile: string, cmdline: string, ...extra: string[]) {
  const args = ["run", "--kernel", kernel, "--initrd", initrdFile, "--cmdline", cmdline, "--stats", ...extra];
  return bootVmtool(args, BOOT_TIMEOUT_MS);
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

test(
  "bzImage with ACPI: Debian's kernel finds 2 vCPUs, virtio-rng, -console and -blk (read, written, seen by the host) through the tables, and poweroff -f ends the run with status 0",
  { skip },
  async () => {
    const disk = join(dir, "disk.img");
    const image = Buffer.alloc(1 << 20);
    image.write(HOST_PATTERN, 1024, "latin1");
    writeFileSync(disk, image);
    // cpu_init_udelay=10000: the MP spec's delay between INIT and STARTUP, which Linux skips on this CPU model
    // and a STARTUP sent at once after INIT is lost under nested KVM in TCG (docs/svm.md).
    const cmdline = "console=ttyS0 quiet pci=off cpu_init_udelay=10000 vmtool.test=acpi";
    const r = await bootWith(
      acpiInitrd,
      cmdline,
      ...["--json", "--cpus", "2", "--rng", "--console", "--disk", disk],
    );
    // hvc0's text reaches standard output whole (one write of no newline: one virtio-console buffer), anywhere
    // among COM1's bytes, whose line it may cut in two: the serial console's lines are read with it taken out.
    const hvc = "INIT-HVC: hello on hvc0";
    const serial = r.stdout.replace(hvc, "");
    const stats = JSON.parse(r.stderr.split("\n").findLast((l) => l.startsWith("{")) ?? "{}") as {
      status?: number;
      reason?: string;
      exits?: number;
      byReason?: { key: string; count: number }[];
      byAddress?: { key: string; count: number }[];
    };
    const seen = [
      ...serial.split(/\r?\n/).filter((l) => /INIT-|reboot:|Kernel panic|BUG|Oops|WARNING/.test(l)),
      `status ${r.status}: ${stats.reason}`,
    ].join("\n");
    console.log(
      `boot: ${stats.exits} exits; by reason: ${stats.byReason?.map((x) => `${x.key} ${x.count}`).join(", ")}`,
    );
    console.log(
      `boot: by address: ${stats.byAddress
        ?.slice(0, 16)
        .map((x) => `${x.key} ${x.count}`)
        .join(", ")}`,
    );
    for (const l of seen.split("\n")) console.log(`boot: seen: ${l}`);
    const say = (what: string) => `${what}\n${seen}`;
    assert.match(
      r.stderr,
      /^vmtool: Linux 6\.\d+\.\d+\S*, bzImage, 256 MiB, 2 vCPUs, initrd \d+\.\d MB, virtio-rng, virtio-console, virtio-blk vda \(disk\.img\)$/m,
      say("the start line"),
    );
    // No virtio_mmio.device= words: the DSDT describes the devices.
    assert.equal(field(serial, "INIT-CMDLINE"), cmdline, say("the command line"));
    assert.equal(serial.match(/INIT-INSMOD-FAILED: .*/g), null, say("insmod"));
    assert.equal(field(serial, "INIT-CPUS"), "2", say("CPUs"));
    const rtc = Number(field(serial, "INIT-RTC"));
    assert.ok(rtc >= Math.floor(r.t0) - 1 && rtc <= r.t1 + 1, say(`RTC ${rtc} outside [${r.t0}, ${r.t1}]`));
    // Device ids: 2 block, 3 console, 4 entropy.
    assert.equal(field(serial, "INIT-VIRTIO")?.trim(), "0x0002 0x0003 0x0004", say("virtio devices"));
    assert.equal(field(serial, "INIT-DISK-BACK"), GUEST_PATTERN, say("the disk's bytes read back"));
    assert.equal(field(serial, "INIT-DISK-HOST"), HOST_PATTERN, say("the host's bytes on the disk"));
    assert.match(field(serial, "INIT-RNG-DEVICE") ?? "", /^virtio_rng/, say("the hwrng device"));
    const rng = field(serial, "INIT-RNG") ?? "";
    assert.match(rng, /^[0-9a-f]{32}$/, say("16 bytes from /dev/hwrng"));
    assert.notEqual(rng, "0".repeat(32), say("16 bytes from /dev/hwrng"));
    assert.ok(r.stdout.includes(hvc), say("the text written to /dev/hvc0"));
    // The kernel's power-off reached the FADT's sleep control register: S5 ends the run with status 0.
    assert.equal(field(serial, "INIT-END"), undefined, say("init went on after poweroff -f"));
    assert.equal(stats.reason, "the guest powered off (ACPI S5)", say("how the run ended"));
    assert.equal(r.status, 0, say("the exit status"));
    assert.equal(stats.status, 0, say("the exit status --json reports"));
    const after = readFileSync(disk);
    assert.equal(after.subarray(512, 512 + GUEST_PATTERN.length).toString("latin1"), GUEST_PATTERN);
    assert.equal(after.subarray(1024, 1024 + HOST_PATTERN.length).toString("latin1"), HOST_PATTERN);
  },
);

test(
  "bzImage with acpi=off: the kernel finds 2 vCPUs in the MP table, and the virtio_mmio.device= words on its command line",
  { skip },
  async () => {
    const cmdline = "console=ttyS0 quiet pci=off acpi=off cpu_init_udelay=10000 vmtool.test=mptable";
    const r = await boot(cmdline, "--cpus", "2", "--rng");
    assert.equal(field(r.stdout, "INIT-CMDLINE"), `${cmdline} virtio_mmio.device=0x200@0xd0000000:5`, r.all);
    assert.equal(field(r.stdout, "INIT-CPUS"), "2", r.all);
    assert.equal(r.status, 11, r.all);
  },
);
