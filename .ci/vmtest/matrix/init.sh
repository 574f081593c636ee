#!/bin/sh
# /init of the vmtest initramfs (busybox). It makes the guest look like the
# host the tests expect (proc, sys, devtmpfs, tmpfs /run and /tmp, bpffs,
# tracefs, debugfs, cgroup2, the modules Debian builds as =m, lo up), then
# lets the agent run the tracer tests once per hook, printing @@VMTEST
# markers on the serial console, and powers the VM off. It never exits:
# init exiting would panic the kernel, which the runner reports as such.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp

say() { echo "vmtest-init: $*"; }

# A foreign architecture's initramfs holds busybox alone (the host cannot
# run it to list its applets): the links are made here.
[ -e /bin/mount ] || /bin/busybox --install -s

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t bpf bpf /sys/fs/bpf || say "bpffs: mount failed"
mount -t tracefs tracefs /sys/kernel/tracing || say "tracefs: mount failed"
mount -t debugfs debugfs /sys/kernel/debug || say "debugfs: mount failed"
mount -t cgroup2 cgroup2 /sys/fs/cgroup || say "cgroup2: mount failed"
mkdir -p /run/netns

# Nothing loads modules on demand here (no udev, no modprobe config), so
# the list the runner derived from the kernel config is loaded up front.
while read -r m; do
	[ -n "$m" ] || continue
	insmod "$m" || say "insmod $m failed"
done < /etc/vmtest-modules

ip link set lo up || say "lo: up failed"
hostname vmtest

hooks=tp_btf,tracepoint,fentry,kprobe run=E2E timeout=4m
for p in $(cat /proc/cmdline); do
	case "$p" in
	vmtest.hooks=*) hooks=${p#vmtest.hooks=} ;;
	vmtest.run=*) run=${p#vmtest.run=} ;;
	vmtest.timeout=*) timeout=${p#vmtest.timeout=} ;;
	esac
done

/bin/agent -sstrace /bin/sstrace -tracer /bin/tracer.test \
	-hooks "$hooks" -run "$run" -test-timeout "$timeout" || say "agent exited with status $?"

# Let the UART drain before the power goes.
sync
sleep 1
poweroff -f
