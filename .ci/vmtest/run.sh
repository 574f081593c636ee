#!/usr/bin/env bash
# make vmtest: the kernel × hook matrix. Installs what it needs, then runs
# the Go runner (.ci/vmtest/matrix), passing any arguments on, e.g.
#   bash .ci/vmtest/run.sh -kernels 6.1 -hooks tp_btf
# See .ci/vmtest/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

need=()
[ -x /bin/busybox ] || need+=(busybox-static)
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v qemu-system-aarch64 >/dev/null || need+=(qemu-system-arm)
command -v dpkg-deb >/dev/null || need+=(dpkg)
command -v ldd >/dev/null || need+=(libc-bin)
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)
if [ ${#need[@]} -gt 0 ]; then
  echo "vmtest: installing ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The host row needs tracefs for the classic-tracepoint hook, as the VMs
# have it mounted by their /init.
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true

exec "${GO:-go}" run ./.ci/vmtest/matrix "$@"
