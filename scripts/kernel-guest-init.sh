#!/bin/sh
# PID 1 of the test VM that scripts/kernel-boot.sh starts (busybox only). It exercises vmtool.ko and writes
# what it saw to the second serial port (/dev/ttyS1) as "@@" lines plus base64 file contents, which
# test/kernel/module.test.ts turns back into files byte for byte and checks. The kernel log goes to ttyS0.
#
# Phases: the real module (tree, parameters, hot-plug, unload), then the test build (vmtool-fake.ko, which
# invents VMCS addresses because TCG has no VMX): entry files, reads racing updates and hot-plug, eviction.
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t debugfs debugfs /sys/kernel/debug
exec 3>/dev/ttyS1

D=/sys/kernel/debug/vmtool
P=/sys/module/vmtool/parameters
out() { echo "$*" >&3; }

# @@TREE <phase> ... @@ENDTREE: every directory and file below $D, files as base64 (a file that vanished
# between the listing and the read is reported as @@GONE).
dump() {
  out "@@TREE $1 $(date +%s)"
  find "$D" | sort | while read -r f; do
    rel=${f#"$D"}
    [ -n "$rel" ] || continue
    if [ -d "$f" ]; then
      out "@@DIR $rel"
    elif base64 "$f" >/tmp/b64 2>/dev/null; then
      out "@@FILE $rel"
      cat /tmp/b64 >&3
      out "@@EOF"
    else
      out "@@GONE $rel"
    fi
  done
  out "@@ENDTREE $1"
}

cpudirs() { out "@@CPUDIRS $1 $(cd "$D" 2>/dev/null && ls -d cpu-* 2>/dev/null | tr '\n' ' ')"; }
# Kernel threads named vmtool/N and the CPUs each may run on.
threads() {
  list=""
  for s in /proc/[0-9]*/status; do
    name=$(sed -n 's/^Name:\t//p' "$s" 2>/dev/null)
    case "$name" in vmtool/*) list="$list $name@$(sed -n 's/^Cpus_allowed_list:\t//p' "$s")" ;; esac
  done
  out "@@THREADS $1$list"
}
slabs() { out "@@SLABS $1 $(awk '/^vmtool_/ {printf "%s=%s ", $1, $2}' /proc/slabinfo)"; }
param() { out "@@PARAM $1 $2 $(cat "$P/$2" 2>/dev/null)"; }
# @@WRITE <param> <value> <exit status of the write> <value read back>
write_param() {
  (printf '%s' "$2" >"$P/$1") 2>/dev/null
  out "@@WRITE $1 [$2] $? $(cat "$P/$1")"
}
others() { for c in /sys/devices/system/cpu/cpu[1-9]*; do [ -f "$c/online" ] && echo "${c##*cpu}"; done; }
set_online() {
  echo "$2" >"/sys/devices/system/cpu/cpu$1/online"
  out "@@HOTPLUG cpu$1 $2 $?"
}

out "@@START $(uname -r) cpus=$(grep -c ^processor /proc/cpuinfo)"
out "@@CPUFLAGS $(sed -n 's/^flags\t*: //p' /proc/cpuinfo | head -n1)"

# ---------------------------------------------------------------- the real module
insmod /vmtool.ko interval_ms=5 2>/dev/null
out "@@INSMOD real-bad-interval $?"
insmod /vmtool.ko
out "@@INSMOD real $?"
sleep 0.3
param real interval_ms
param real max_vmcs
threads real-loaded
slabs real-loaded
dump real-loaded

write_param interval_ms 250
write_param interval_ms 10
write_param interval_ms 60000
write_param interval_ms 9
write_param interval_ms 60001
write_param interval_ms abc
write_param interval_ms -1
write_param interval_ms ""
write_param interval_ms 4294967296
write_param interval_ms 1000
write_param max_vmcs 8

for c in $(others); do
  set_online "$c" 0
  cpudirs "real-offline-cpu$c"
  threads "real-offline-cpu$c"
  slabs "real-offline-cpu$c"
  set_online "$c" 1
  cpudirs "real-online-cpu$c"
  threads "real-online-cpu$c"
done
dump real-after-hotplug

rmmod vmtool
out "@@RMMOD real $?"
out "@@EXISTS real-unloaded $([ -e "$D" ] && echo yes || echo no)"
threads real-unloaded
slabs real-unloaded

# ---------------------------------------------------------------- the test build: invented VMCS addresses
insmod /vmtool-fake.ko interval_ms=20 fake_vmcs=3
out "@@INSMOD fake $?"
sleep 1
threads fake-loaded
slabs fake-loaded
dump fake-stable

# Readers in a tight loop while the threads update, interval_ms changes and CPUs go and come back.
# Stopped through a flag file, so that `wait` returns only when no reader has a file open any more.
reader() { while [ ! -e /tmp/stop ]; do cat "$D"/cpu-*/* >/dev/null 2>&1; done; }
reader &
r1=$!
reader &
r2=$!
i=0
while [ $i -lt 3 ]; do
  for c in $(others); do set_online "$c" 0; done
  write_param interval_ms 10
  sleep 0.3
  for c in $(others); do set_online "$c" 1; done
  write_param interval_ms 30
  sleep 0.3
  i=$((i + 1))
done
sleep 0.5
cpudirs fake-after-race
slabs fake-after-race
touch /tmp/stop
wait $r1 $r2
rm /tmp/stop
# An open file holds a reference on the module: rmmod is refused until it is closed.
exec 4<"$D/cpu-000/sysregs"
rmmod vmtool 2>/dev/null
out "@@RMMOD fake-busy $?"
exec 4<&-
rmmod vmtool
out "@@RMMOD fake-race $?"
slabs fake-unloaded

# A new interval_ms wakes the threads at once: with 60 s, one address per CPU so far; after the write, all 3.
insmod /vmtool-fake.ko interval_ms=60000 fake_vmcs=3
out "@@INSMOD fake-slow $?"
sleep 0.5
out "@@ENTRIES slow $(ls "$D/cpu-000" | grep -c '\.info$')"
write_param interval_ms 10
sleep 0.5
out "@@ENTRIES fast $(ls "$D/cpu-000" | grep -c '\.info$')"
rmmod vmtool
out "@@RMMOD fake-slow $?"

# Eviction: 6 invented addresses per CPU, room for 4.
insmod /vmtool-fake.ko interval_ms=10 fake_vmcs=6 max_vmcs=4
out "@@INSMOD fake-evict $?"
reader &
r1=$!
sleep 1
slabs fake-evict
for d in "$D"/cpu-*; do out "@@LIST fake-evict ${d##*/} $(ls "$d" | tr '\n' ' ')"; done
touch /tmp/stop
wait $r1
rmmod vmtool
out "@@RMMOD fake-evict $?"
slabs fake-evict-unloaded
out "@@EXISTS fake-unloaded $([ -e "$D" ] && echo yes || echo no)"

out "@@DMESG"
dmesg >&3
out "@@ENDDMESG"
out "@@DONE"
poweroff -f
