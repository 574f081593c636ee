#!/usr/bin/env bash
# make bench-ss: time `sstrace ss` against iproute2's `ss` on ~100 000 TCP
# sockets, side by side in one run.
#
# It creates a network namespace, fills it with cmd/sockfarm (listeners,
# established pairs, CLOSE-WAIT, TIME-WAIT, spread over worker processes of
# at most ~18500 open files each), then runs every query with both tools in
# alternating order, REPS times each, output to /dev/null, and prints a
# Markdown table of medians, ratios, targets and row counts. Everything it
# creates (namespace, processes, temp files) is removed on exit, however it
# exits.
#
# The last query runs in a second, empty namespace: with -s, the start-up
# figure (issue 8's target: at most 1.0x ss for both).
#
# Settings (environment): TOTAL sockets (100000), REPS per query (7),
# REPS_P for the slow -tanp query (5), NS namespace name.
#
# Note: `ss -p` walks every /proc/PID/fd on the host whatever namespace it
# looks at, so the -tanp figure includes the farm's ~70 000 descriptors and
# anything else running on the machine.
set -euo pipefail
cd "$(dirname "$0")/.."

TOTAL=${TOTAL:-100000}
REPS=${REPS:-7}
REPS_P=${REPS_P:-5}
NS=${NS:-sstrace-bench-$$}
EMPTY_NS=$NS-empty
GO=${GO:-go}
command -v "$GO" >/dev/null || GO=/usr/local/go/bin/go
export GOFLAGS=${GOFLAGS:--buildvcs=false}

if [ "$(id -u)" != 0 ]; then
  echo "bench-ss: needs root (network namespaces, sock_diag in another netns)" >&2
  exit 1
fi
if ! command -v ss >/dev/null || ! command -v ip >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null
fi

TMP=$(mktemp -d /tmp/bench-ss.XXXXXX)
# shellcheck source=bench-lib.sh
. .ci/bench-lib.sh
SOCKFARM_PID= # sockfarm's pid (bash unsets FARM_PID once the coprocess is reaped)
cleanup() {
  set +e
  stop_farm
  ip netns del "$NS" 2>/dev/null
  ip netns del "$EMPTY_NS" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

echo "== build"
CGO_ENABLED=0 "$GO" build -o bin/sstrace ./cmd/sstrace
"$GO" build -o "$TMP/sockfarm" ./cmd/sockfarm
SSTRACE=$PWD/bin/sstrace

check_load bench-ss
echo "== population: $TOTAL TCP sockets in netns $NS"
start_farm "$TMP/sockfarm"
DPORT=$(sed -n 's/.* dport=\([0-9]*\).*/\1/p' <<<"$READY")

ip netns add "$EMPTY_NS"
QUERIES=("-tan" "-tanp" "-tan state close-wait" "-tan dport = :$DPORT" "-s" "-tan (empty netns)")
TABLE=$TMP/table.md
OURS=("$SSTRACE" ss)
target_of() { if [ "$1" = "-tanp" ]; then echo 0.1; else echo 1.0; fi; }
bench_queries "$TABLE"

# The population at the end, to show it held during the run.
END_COUNTS=$(ss -N "$NS" -tanH | awk '{n[$1]++} END {for (s in n) printf "%s=%d ", s, n[s]}')

echo
echo "== results"
echo "machine: $(uname -r), $(nproc) CPUs, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); $(ss -V); $("$GO" version | cut -d' ' -f3)"
echo "load average (1/5/15 min) at start: $LOAD_START, at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "population at start: ${READY#ready }"
echo "population at end:   $END_COUNTS"
echo "runs per query: $REPS ($REPS_P for -tanp), alternating ss / sstrace, output to /dev/null;"
echo "times are medians of wall time, CPU is user+system time of the process (median); ratio = sstrace / ss"
echo
cat "$TABLE"
