// Which test files run inside the kvm_amd VM (kvm-amd.test.ts), and why each other one does not.
// Inside there is Node, busybox, the compiled project, its runtime node_modules and DIST/guests (the guest
// images test/helpers/guests.ts builds on the host) and a freestanding guest toolchain (gcc -ffreestanding, as,
// ld: scripts/svm-build-initramfs.sh) and gdb (gdb-minimal: no Python); there are no libc headers (no host C
// programs), no QEMU or network.

export interface InnerTest {
  /** The test file, as its path in the repository. */
  file: string;
  /** Only the tests whose name matches this pattern (`node --test --test-name-pattern`), when the others
   * need what is not inside; the reason goes in `why`. */
  only?: string;
  /** The file's own limit inside, in seconds, when it needs more than the default (kvm-amd.test.ts). */
  timeoutS?: number;
  why: string;
}

/** Test files run inside under kvm_amd, each with `node --test`. */
export const INNER_TESTS: readonly InnerTest[] = [
  {
    file: "test/run/smp.test.ts",
    // Its 2-, 3- and 4-vCPU runs each wait up to 2^36 TSC ticks for their APs under TCG: over 120 s in all
    // when the machine is loaded (the run was seen still ending its vCPU threads at 120 s).
    timeoutS: 300,
    why:
      "several vCPUs: APs woken by INIT-SIPI-SIPI through the in-kernel local APIC (this found that a STARTUP " +
      "sent before the AP took the INIT is lost under kvm_amd: smp-hello now keeps the MP spec's delays), COM1 " +
      "written by three APs at once, a triple fault on an AP (kvm_amd dumps the reset state, and says so)",
  },
  {
    file: "test/debug/paging.test.ts",
    why:
      "guest linear-address translation against a second KVM's walker and CPU: guests that turn on 32-bit " +
      "and PAE paging themselves (kvm_pvm refuses both), long mode with the guest's own tables, each probe's " +
      "page fault or value compared with the walk, KVM_TRANSLATE on the same addresses; 5-level paging " +
      "where that KVM offers LA57",
  },
  {
    file: "test/svm/kvm-smoke.test.ts",
    why: "src/kvm on its own: real-mode and long-mode guests, port I/O, MMIO exits, the reset state",
  },
  {
    file: "test/vm/vcpu.test.ts",
    why: "the VM layer: registers, capabilities, RAM bounds, each boot mode (real, protected, Multiboot, long) entered by real guest code (assembled inside with the carried as/ld)",
  },
  {
    file: "test/vmm/control.test.ts",
    why: "the vCPU thread's seams: pause/resume with register access, kicks inside KVM_RUN, exit hooks that stop or park the vCPU",
  },
  {
    file: "test/vmm/mmio-pieces.test.ts",
    why: "how KVM splits an 8-byte MMIO access across a page (3 + 5 bytes) and hands each piece to user space: the backend's emulator decides",
  },
  {
    file: "test/vmm/io-worker.test.ts",
    why: "the I/O worker on a real VM: a vCPU's virtio register access forwarded and answered; a failing worker ends the run",
  },
  {
    file: "test/guest/run.test.ts",
    only: "^(hello-real|hello-protected|multiboot|triple-fault|the built-in demo)",
    why:
      "the SDK examples through vmtool run: real mode flat, ELF32 protected mode, Multiboot (ELF and a.out " +
      "kludge), triple fault, the built-in demo (ELF64 long mode, UART, unclaimed port and MMIO). Left out for " +
      "time (the whole kvm_amd run is kept near 3 minutes; each vmtool start costs seconds under TCG): " +
      "hello-long and serial-echo (the demo and the UART self-test cover them), halt (vcpu.test.ts and the " +
      "examples halt in each mode), exits-200k (400,000 exits at ~0.2-1.5 ms each under TCG; " +
      "scripts/svm-bench.sh measures exits); the bad-image cases (refused before any guest starts)",
  },
  {
    file: "test/run/run.test.ts",
    only: "^(Ctrl-C|unclaimed ports)",
    why:
      "vmtool run: Ctrl-C kicking a busy vCPU out of KVM_RUN, unclaimed ports and MMIO. Left out: the boot " +
      "modes and loaders (vcpu.test.ts and guest/run.test.ts run them inside), the 200,000-byte output (too " +
      "slow under TCG), bad options (no guest runs), and two tests that assert this host's kvm_pvm state " +
      "where kvm_amd differs (docs/svm.md): the triple-fault dump (kvm_amd INITs the vCPU on shutdown) and " +
      "--trace's RIP after an OUT (kvm_amd leaves RIP at the OUT until the next KVM_RUN)",
  },
  {
    file: "test/devices/guest-devices.test.ts",
    only: "^UART self-test",
    why:
      "the UART self-test guest (registers, loopback, FIFO, interrupt priorities, OUT2, IRQ 4 through the " +
      "in-kernel 8259, host input), built inside with the carried gcc; the real-mode port guest is left out " +
      "for time (hello-real and vcpu.test.ts run real mode inside)",
  },
  {
    file: "test/virtio/kvm.test.ts",
    only: "^(virtio-blk|hostile)",
    // Eight guest runs with drivers compiled inside: 110-120 s in all on an idle 2-core host.
    timeoutS: 300,
    why:
      "virtio-blk (write, flush, read back, get id) and a hostile guest (descriptor outside RAM), spec-written " +
      "guest drivers built inside with the carried gcc; virtio-rng and the no-device probe are left out for time",
  },
  {
    file: "test/debug/vm-control.test.ts",
    only: "^(pause a spinning|a hardware breakpoint|an intercepted WRMSR|a write to a write-protected|an injected exception)",
    why:
      "the VM-control core where debug exits come from the CPU's own virtualization: KVM_GUESTDBG hardware " +
      "breakpoints and single steps (kvm_pvm emulates them), software breakpoints through USE_SW_BP and #BP " +
      "interception, MSR write exits, write-protected pages through read-only memory slots, parked faults. Left " +
      'out: the software breakpoint test: a planted INT3 with USE_SW_BP goes to the guest\'s own #BP handler in this harness, so it waits for a stop that never comes (docs/svm.md, "Guest debugging in the harness"); the parked triple fault: kvm_amd INITs the vCPU at KVM_EXIT_SHUTDOWN, so the registers read there are the reset values',
  },
  {
    file: "test/linux/boot.test.ts",
    only: "^bzImage with ACPI",
    // One boot: 85-150 s measured with the machine's load average at 6-14; this one has two vCPUs.
    timeoutS: 360,
    why:
      "vmtool run --kernel booting Debian's stock kernel to a busybox init with --cpus 2 --rng --console --disk: " +
      "the vCPUs and virtio devices found through the ACPI tables, the disk written and read back (and checked " +
      "by the host), virtio-rng read, the CMOS RTC's time, the run ended by poweroff -f (ACPI S5: status 0): a " +
      "stock kernel cannot boot on kvm_pvm, whose instruction emulator runs its ring 0 (docs/linux.md). Left out " +
      "for time (one boot takes 85-150 s under TCG): the exit-port boot and the reboot=k boot",
  },
  {
    file: "test/linux/halt.test.ts",
    // One boot (85-150 s under TCG, more under load) plus the vmlinux's extraction.
    timeoutS: 360,
    why:
      "a Linux guest's timer tick, which its sleep and halt -f wait on: none on a machine without ACPI, MP " +
      "tables or a PIT (clock event pit, no IRQ 0 or local timer interrupt); with one, halt -f ends the run " +
      "(status 0); a stock kernel cannot boot on kvm_pvm (docs/linux.md)",
  },
  {
    file: "test/linux/pvh-boot.test.ts",
    // One boot (85-150 s under TCG) plus the vmlinux's extraction from the bzImage with the carried xz.
    timeoutS: 330,
    why:
      "vmtool run --kernel booting Debian's kernel through PVH (the vmlinux extracted by the test from the " +
      "bzImage) to a busybox init, with the bzImage boot's checks (command line, RAM, CPU count, the RTC's " +
      "time, status 11 from the exit port): a stock kernel cannot boot on kvm_pvm (docs/linux.md)",
  },
  {
    file: "test/introspect/server.test.ts",
    // Nine runs with a KVMI client each: near the default 120 s on an idle 2-core host.
    timeoutS: 300,
    only: "^(handshake|CHECK_COMMAND|libkvmi's pause batch|READ_PHYSICAL|VCPU_TRANSLATE_GVA|SINGLESTEP events|an MSR event|a PF event|INJECT_EXCEPTION)",
    why:
      "the KVMI server over the core on kvm_amd: pause batches across two vCPUs, memory and page walks, single steps, MSR and " +
      "PF events, INJECT_EXCEPTION with its TRAP: every event is a KVM exit the backend delivers its own way. " +
      'Left out: BREAKPOINT: a planted INT3 with USE_SW_BP goes to the guest\'s own #BP handler in this harness, so it waits for a stop that never comes (docs/svm.md, "Guest debugging in the harness"); the four counting vCPUs, for time (INIT-SIPI-SIPI ' +
      "takes many seconds under TCG)",
  },
  {
    file: "test/gdb/protocol.test.ts",
    only: "^the (stub through its protocol|rest of the protocol)",
    why:
      "the GDB stub through its packets on kvm_amd: hardware breakpoints (DR0-DR3), exact steps over OUT, a " +
      "range step, break-on io, DR7 write, read and access watchpoints (the backend's debug registers, where " +
      "kvm_pvm uses read-only slots), Ctrl-C, bad input, a second client, a vanished one, detach, two vCPUs as " +
      "threads, vCont steps, k. Left out: the software breakpoint test: a planted INT3 with " +
      'KVM_GUESTDBG_USE_SW_BP goes to the guest\'s own #BP handler in this harness (docs/svm.md, "Guest debugging in the harness")',
  },
  {
    file: "test/gdb/gdb.test.ts",
    only: "^(real -> protected -> long mode with hardware|Ctrl-C|monitor|single steps|a fault|two vCPUs)",
    // Eight vmtool runs driven by gdb under TCG.
    timeoutS: 600,
    why:
      "real gdb (the carried gdb-minimal, no Python: the scripts use disconnect and target remote where " +
      "guest/gdb/vmtool.gdb's Python command would reconnect) on kvm_amd: hbreak in real, protected and long " +
      "mode, stepi through the mode switches and exactly over in, out and an MMIO write, a DR7 watch (the stop " +
      "names the writing instruction), info registers with vmtool's registers, x/i per mode, Ctrl-C, detach, " +
      "monitor commands and break-on, BLOCKIRQ steps (also over HLT with the in-kernel irqchip) and monitor " +
      "sstep irq on, a triple fault stopped for gdb (kvm_amd INITs the vCPU, and gdb is told the registers are " +
      "the reset state), two vCPUs as threads. Left out: the software breakpoint test (a planted INT3 with " +
      "KVM_GUESTDBG_USE_SW_BP goes to the guest's own #BP handler in this harness: docs/svm.md, \"Guest " +
      'debugging in the harness"); the detach after steps over HLT, whose guest counts its PIT ticks: here the ' +
      "in-kernel PIT re-injects the ticks it missed while gdb held the VM, so the count depends on how long that " +
      'was (docs/gdb.md, "What differs between backends"); for time, kill (every monitor test ends with kill ' +
      "and status 16) and four vCPUs (INIT-SIPI takes many seconds under TCG; test/run/smp.test.ts runs four " +
      "inside); with no guest to run or nothing the backend does: the register layouts under each OS ABI, the " +
      "GNU/Linux OS ABI guest, TCP (the VM has no network set up), bad options",
  },
];

/** Test files that do not run inside, with the reason. */
export const NOT_INSIDE: Readonly<Record<string, string>> = {
  "test/kvm/caps.test.ts":
    "compiles C against <linux/kvm.h> with gcc (not inside); the numbers it checks do not depend on the backend",
  "test/kvm/struct-layout.test.ts":
    "compiles C against <linux/kvm.h> with gcc (not inside); struct layouts do not depend on the backend",
  "test/svm/kvm-amd.test.ts": "this harness itself: it boots the QEMU VM",
  "test/svm/classification.test.ts": "checks this list against the test files; no KVM",
  "test/kvm/koffi-loader.test.ts":
    "how koffi's native addon is found and opened (Node and the package layout, no KVM); every file run inside loads it the same way",
  "test/memory/huge-pages.test.ts":
    "guest RAM's host mapping (alignment, MADV_HUGEPAGE, AnonHugePages in smaps): the host kernel's memory management, the same under any backend; the Linux boot's nested page faults with it are measured inside (docs/linux.md)",
  "test/memory/guest-memory-windows.test.ts":
    "guest RAM views are host mappings seen from JavaScript; the backend only writes into them, as the guests of the files run inside already do",
  // No /dev/kvm in these: pure decoders and device state machines give the same results on any backend.
  "test/arch/vmx-decode.test.ts": "decodes saved VMX MSR dumps; no KVM",
  "test/devices/bus.test.ts": "device bus state machine; no KVM",
  "test/vmm/output-flusher.test.ts":
    "the main thread's flusher against a shared control word and a worker thread; no KVM (the prompts through a real run are in test/run/streams.test.ts)",
  "test/devices/byte-queue.test.ts": "device helper; no KVM",
  "test/devices/legacy-devices.test.ts": "device state machines; no KVM",
  "test/devices/uart16550.test.ts": "device state machine; no KVM",
  "test/virtio/devices.test.ts": "virtio device state machines over plain buffers; no KVM",
  "test/virtio/transport.test.ts": "virtio-mmio transport state machine; no KVM",
  "test/virtio/virtqueue.test.ts": "split virtqueue over plain buffers; no KVM",
  "test/observer/module-tree.test.ts": "reads a fake vmtool.ko debugfs tree; no KVM",
  "test/guest/sdk.test.ts":
    "builds guests from the documented recipes with make and gcc's full driver (not inside); vmtool run itself is covered by the other files",
  "test/guest/build.test.ts":
    "builds the guests with gcc and make (not inside); the images themselves are carried in",
  "test/loader/plan.test.ts": "plans and loads images into plain buffers; no KVM",
  "test/virtio/hostile.test.ts": "virtio devices against hostile rings over plain buffers; no KVM",
  "test/kernel/module.test.ts": "boots its own kernel under QEMU (not inside)",
  "test/virtio/cli.test.ts":
    "virtio options through vmtool run; left out for time: test/virtio/kvm.test.ts runs virtio guests inside",
  "test/run/bundle.test.ts":
    "the bundled command's start-up and wiring; the backend is covered by the other files",
  "test/devices/iret-repro.test.ts":
    "builds a host C program against libc and <linux/kvm.h> (no libc headers inside); it is about kvm_pvm's IRET",
  "test/observer/kvm.test.ts":
    "builds a host C program with gcc and reads KVM's debugfs (no libc headers inside)",
  "test/observer/errors.test.ts": "the observer's error paths over fake trees; no KVM",
  "test/observer/watch-tty.test.ts": "vmtool watch in tmux (not inside); no guest",
  "test/loader/boot-info.test.ts":
    "checks layouts against the SDK headers with host C programs (no libc inside)",
  "test/arch/explain-cli.test.ts": "table lookups; no KVM",
  "test/arch/tables-vs-headers.test.ts": "compiles against kernel headers (not inside); no KVM",
  "test/host/host-cli.test.ts":
    "compares vmtool host with this machine's /dev/kvm; the harness runs vmtool host inside and checks it",
  "test/host/vmx-cli.test.ts": "VMX decoding from saved values and fake trees; no KVM",
  "test/observer/kvm-run-smp.test.ts":
    "the observer over KVM's debugfs on a two-vCPU vmtool run; left out for time",
  "test/virtio/fuzz.test.ts": "virtqueue fuzzing over plain buffers; no KVM",
  "test/cli/exit-status.test.ts": "the mapping of errors and run ends to exit statuses; no KVM",
  "test/cli/usage.test.ts": "help and usage statuses of the command line; no guest runs",
  "test/run/raw-terminal.test.ts": "vmtool run on a terminal, in tmux (not inside)",
  "test/run/streams.test.ts":
    "standard streams and signals (EPIPE, /dev/full, a dead stderr, SIGTERM/SIGHUP): the main thread's side, the same on any backend; left out for time",
  "test/cli/options.test.ts": "option values and their limits; no guest runs",
  "test/run/trace.test.ts":
    "--trace's numbering while halt checks kick a sleeping guest: the main thread's side; left out for time",
  "test/virtio/bounded-memory.test.ts":
    "a 4 GiB virtio-console chain in a memory cgroup made by the test: seconds of guest work on the host, far longer under TCG",
  "test/vmm/forward-stop.test.ts":
    "the forwarder's wait against a request slot nobody serves, in a worker thread; no KVM",
  "test/vmm/resources.test.ts":
    "twenty runs with every device kind, counting fds and mappings (too slow under TCG); the same code runs inside in the other files",
  "test/vmm/stats-bound.test.ts":
    "12,288 distinct MMIO exits through vmtool run (slow under TCG); the bounded table itself does not depend on the backend",
  "test/stats/binary-stats.test.ts":
    "vmtool stat reading a run's binary stats from another process; left out for time (under kvm_amd it would also check io_exits, which kvm_pvm does not count)",
  "test/stats/cli.test.ts":
    "vmtool stat's output formats and bad input; as another user through setpriv (not inside)",
  "test/stats/debugfs.test.ts": "vmtool stat over KVM's debugfs files of a vmtool run; left out for time",
  "test/stats/lifecycle.test.ts":
    "VMs that start and end while vmtool stat watches; reads KVM's debugfs; left out for time",
  "test/stats/live-tty.test.ts": "vmtool stat's live screen in tmux (not inside)",
  "test/stats/metrics.test.ts":
    "metric names and units of a real VM's statistics: naming rules, the same on any backend",
  "test/stats/qemu.test.ts": "a QEMU guest watched by vmtool stat (no QEMU inside)",
  "test/stats/run-dir.test.ts":
    "the run directory and its counters file: files and processes, the same on any backend",
  "test/stats/tracepoints.test.ts": "perf counters on KVM's tracepoints (no tracefs inside)",
  "test/vmm/end-of-run.test.ts":
    "many runs of a virtio-blk guest per case (too slow under TCG); the I/O worker's ioeventfds run inside through test/virtio/kvm.test.ts",
  "test/introspect/listen.test.ts": "the introspection socket's file mode and the process umask; no KVM",
  "test/kvmi-client/batch.test.ts": "the KVMI client against a socket peer of the test's; no KVM",
  "test/kvmi-client/breakpoints.test.ts": "the KVMI client against a socket peer of the test's; no KVM",
  "test/kvmi-client/cli.test.ts": "vmtool introspect against a socket peer of the test's; no KVM",
  "test/kvmi-client/commands.test.ts": "the KVMI client's bytes for every command; no KVM",
  "test/kvmi-client/e2e.test.ts":
    "the client's side of a real VMM, the same on any backend; the VMM side runs inside through test/introspect/server.test.ts",
  "test/kvmi-client/events.test.ts": "the KVMI client against a socket peer of the test's; no KVM",
  "test/kvmi-client/handshake.test.ts": "the KVMI client against a socket peer of the test's; no KVM",
  "test/kvmi-client/layouts.test.ts": "the KVMI layouts checked against gcc on the host; no KVM",
  "test/kvmi-client/malformed.test.ts": "the KVMI client against a hostile socket peer; no KVM",
  "test/kvmi-client/ram.test.ts": "the shared RAM mapping reader against a memfd of the test's; no KVM",
  "test/kvmi-client/render.test.ts": "vmtool introspect's text and JSON rendering; no KVM",
  "test/serve/exposition.test.ts": "the exposition writer and Accept negotiation over built families; no KVM",
  "test/serve/metrics.test.ts":
    "vmtool serve's /metrics of a vmtool run; the stats it exports are the stats layer's, whose own tests cover the backend; left out for time",
  "test/serve/security.test.ts": "the HTTP server's headers, bounds, token and SSE framing; no guest",
  "test/serve/prometheus.test.ts": "Debian's prometheus scraping vmtool serve (no prometheus inside)",
  "test/serve/browser.test.ts": "Debian's chromium driving the dashboard (no browser inside)",
  "test/introspect/malformed.test.ts":
    "a tool that breaks the KVMI protocol: the socket side, the same on any backend; its guests only spin (left out for time)",
  "test/backends/block-file.test.ts":
    "disk files, a loop device and OFD locks on the host (losetup is not inside); the virtio-blk path runs inside through test/virtio/kvm.test.ts",
  "test/files/input-file.test.ts": "opening files of every kind (FIFOs, procfs, a loop device); no KVM",
  "test/files/layering.test.ts": "reads the sources' imports; no KVM",
  "test/files/lock.test.ts": "OFD locks checked against gcc on the installed headers (not inside); no KVM",
  "test/host/stdout-full.test.ts":
    "the host and observer commands' standard output on /dev/full and closed pipes; no guest runs",
  "test/loader/bss.test.ts":
    "a large .bss measured as the process's RSS: the host kernel's anonymous memory, the same on any backend",
  "test/observer/bad-numbers.test.ts": "numbers in copied debugfs trees; no KVM",
  "test/observer/hostile-tree.test.ts": "FIFOs, symlinks and odd files in copied debugfs trees; no KVM",
  "test/observer/poll-reuse.test.ts": "what the KVM-tree source keeps between polls, on a fake tree; no KVM",
  "test/virtio/request-path.test.ts": "virtio request paths over plain buffers; no KVM",
  "test/vmm/io-priority.test.ts":
    "the I/O worker's nice value: host scheduling, the same on any backend (the worker itself runs inside in io-worker.test.ts)",
  "test/linux/bzimage.test.ts":
    "the bzImage loader and the zero page on Debian's kernel file and crafted truncations, and vmtool run's refusals before any guest runs; no guest boots",
  "test/linux/lapic.test.ts":
    "the in-kernel local APIC's register page through KVM_GET/SET_LAPIC, common KVM code (lapic.c) on every backend; the Linux boot inside sets it the same way",
  "test/linux/pvh.test.ts":
    "the PVH loader and its start info on crafted ELF files and Debian's vmlinux, vmtool run's refusals, a crafted PVH guest's entry state and Debian's kernel up to its first console lines (all of which run on this host's kvm_pvm); the full PVH boot runs inside (test/linux/pvh-boot.test.ts)",
  "test/linux/pvm.test.ts":
    "asserts what this host's kvm_pvm does with a Linux kernel (the emulation failure it meets); kvm_amd boots it (test/linux/boot.test.ts)",
  "test/devices/cmos-rtc.test.ts": "device state machine with an injected clock; no KVM",
  "test/devices/i8042.test.ts": "device state machine; no KVM",
  "test/devices/acpi-sleep.test.ts": "device state machine; no KVM",
  "test/linux/tables.test.ts":
    "the ACPI and MP tables parsed back and disassembled by iasl on the host (no iasl inside); the ACPI boot inside reads the same tables",
  "test/vmm/run-parts.test.ts":
    "the supervisor and the input pump with worker threads and an eventfd; no KVM",
};
