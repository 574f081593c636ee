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
SOCKFARM_PID= # sockfarm's pid (bash unsets FARM_PID once the coprocess is reaped)
cleanup() {
  set +e
  if [ -n "$SOCKFARM_PID" ] && kill -0 "$SOCKFARM_PID" 2>/dev/null; then
    # SIGTERM is sockfarm's orderly stop (as is closing its stdin): its
    # workers exit and the kernel closes their sockets.
    kill -TERM "$SOCKFARM_PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$SOCKFARM_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$SOCKFARM_PID" 2>/dev/null
  fi
  ip netns del "$NS" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

echo "== build"
CGO_ENABLED=0 "$GO" build -o bin/sstrace ./cmd/sstrace
"$GO" build -o "$TMP/sockfarm" ./cmd/sockfarm
SSTRACE=$PWD/bin/sstrace

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v l="${LOAD_START%% *}" -v n="$(nproc)" 'BEGIN {exit !(l > n / 2)}'; then
  echo "bench-ss: warning: load average $LOAD_START on $(nproc) CPUs; other work will skew the timings" >&2
fi
echo "== population: $TOTAL TCP sockets in netns $NS"
ip netns add "$NS"
coproc FARM { exec "$TMP/sockfarm" --netns "$NS" --total "$TOTAL" 2>"$TMP/farm.err"; }
SOCKFARM_PID=$FARM_PID
# A copy of its stdout: bash closes the coproc's own fds once it exits,
# and a failing sockfarm exits before the read below.
exec {FARM_OUT}<&"${FARM[0]}"
if ! read -r -t 600 READY <&"$FARM_OUT" || [[ $READY != ready* ]]; then
  echo "bench-ss: sockfarm did not get ready:" >&2
  cat "$TMP/farm.err" >&2
  exit 1
fi
echo "$READY"
DPORT=$(sed -n 's/.* dport=\([0-9]*\).*/\1/p' <<<"$READY")

# One timed run: prints "WALL_US CPU_US", the wall time and the user+system
# CPU time the command used. The clock is bash's own, read without a fork
# that would count as a child; the CPU time
# comes from `times` (getrusage of children), which stays meaningful when
# other work competes for the CPUs. Fails if the command fails.
children_us() { # children's user+sys from a saved `times` output, in µs
  awk 'NR == 2 {
    n = split($0, f, " "); us = 0
    for (i = 1; i <= n; i++) { split(f[i], p, "m"); sub("s", "", p[2]); us += (p[1] * 60 + p[2]) * 1e6 }
    printf "%d", us }' "$1"
}
run_us() {
  local t0 t1
  times >"$TMP/cpu0"
  t0=${EPOCHREALTIME/./}
  if ! "$@" >/dev/null 2>>"$TMP/run.err"; then return 1; fi
  t1=${EPOCHREALTIME/./}
  times >"$TMP/cpu1"
  echo "$((t1 - t0)) $(($(children_us "$TMP/cpu1") - $(children_us "$TMP/cpu0")))"
}
median() { # median of column $1
  awk -v c="$1" '{print $c}' | sort -n | awk '{a[NR]=$1} END {if (NR == 0) exit 1; print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'
}
secs() { awk -v u="$1" 'BEGIN {printf "%.4f", u / 1e6}'; }

# Rows a query printed (header excluded); for -s, the TCP total line.
rows() {
  if [ "$1" = "-s" ]; then
    sed -n 's/^TCP: *\([0-9]*\).*/\1/p' "$2"
  else
    echo $(($(wc -l <"$2") - 1))
  fi
}
# Lines in one output and not the other, spacing ignored (column widths
# follow the data) and order ignored.
differ() {
  diff <(tr -s ' \t' ' ' <"$1" | sed 's/ $//' | sort) <(tr -s ' \t' ' ' <"$2" | sed 's/ $//' | sort) | grep -c '^[<>]' || true
}

QUERIES=("-tan" "-tanp" "-tan state close-wait" "-tan dport = :$DPORT" "-s")
TABLE=$TMP/table.md
{
  echo "| query | ss (s) | sstrace (s) | ratio | target | met? | ss CPU (s) | sstrace CPU (s) | CPU ratio | rows ss | rows sstrace | lines differing |"
  echo "|---|---:|---:|---:|---:|:---:|---:|---:|---:|---:|---:|---:|"
} >"$TABLE"

for q in "${QUERIES[@]}"; do
  # Each query is passed the way a user types it: options as words, the
  # dport filter as one quoted argument.
  case $q in
    "-tan dport = :"*) args=(-tan "dport = :$DPORT") ;;
    *) read -r -a args <<<"$q" ;;
  esac
  reps=$REPS target=1.0
  if [ "$q" = "-tanp" ]; then reps=$REPS_P target=0.1; fi
  echo "== ss $q  ($reps runs each, alternating)"

  # Warm-up run of each, kept for the row counts.
  ss -N "$NS" "${args[@]}" >"$TMP/ss.out" 2>>"$TMP/run.err" || { echo "ss $q failed" >&2; exit 1; }
  failed=
  "$SSTRACE" ss -N "$NS" "${args[@]}" >"$TMP/sstrace.out" 2>>"$TMP/run.err" || failed=yes

  : >"$TMP/t.ss"
  : >"$TMP/t.st"
  for ((i = 0; i < reps; i++)); do
    if ((i % 2 == 0)); then
      run_us ss -N "$NS" "${args[@]}" >>"$TMP/t.ss"
      [ -n "$failed" ] || run_us "$SSTRACE" ss -N "$NS" "${args[@]}" >>"$TMP/t.st" || failed=yes
    else
      [ -n "$failed" ] || run_us "$SSTRACE" ss -N "$NS" "${args[@]}" >>"$TMP/t.st" || failed=yes
      run_us ss -N "$NS" "${args[@]}" >>"$TMP/t.ss"
    fi
  done
  ss_us=$(median 1 <"$TMP/t.ss")
  ss_cpu=$(median 2 <"$TMP/t.ss")
  if [ -n "$failed" ]; then
    echo "   sstrace ss $q FAILED: $(tail -1 "$TMP/run.err")"
    echo "| \`$q\` | $(secs "$ss_us") | failed | - | ≤ $target | no | $(secs "$ss_cpu") | - | - | $(rows "${args[0]}" "$TMP/ss.out") | - | - |" >>"$TABLE"
    continue
  fi
  st_us=$(median 1 <"$TMP/t.st")
  st_cpu=$(median 2 <"$TMP/t.st")
  ratio=$(awk -v a="$st_us" -v b="$ss_us" 'BEGIN {printf "%.3f", a / b}')
  cpu_ratio=$(awk -v a="$st_cpu" -v b="$ss_cpu" 'BEGIN {if (b > 0) printf "%.3f", a / b; else print "-"}')
  met=$(awk -v r="$ratio" -v t="$target" 'BEGIN {print (r <= t) ? "yes" : "no"}')
  rs=$(rows "${args[0]}" "$TMP/ss.out")
  rt=$(rows "${args[0]}" "$TMP/sstrace.out")
  d=$(differ "$TMP/ss.out" "$TMP/sstrace.out")
  echo "   ss $(secs "$ss_us") s, sstrace $(secs "$st_us") s, ratio $ratio (target ≤ $target: $met); CPU $(secs "$ss_cpu") / $(secs "$st_cpu") s, ratio $cpu_ratio; rows $rs / $rt, differing lines $d"
  echo "| \`$q\` | $(secs "$ss_us") | $(secs "$st_us") | $ratio | ≤ $target | $met | $(secs "$ss_cpu") | $(secs "$st_cpu") | $cpu_ratio | $rs | $rt | $d |" >>"$TABLE"
done

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
