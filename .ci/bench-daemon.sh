#!/usr/bin/env bash
# make bench-daemon: what `sstrace daemon` costs and how fast it answers,
# side by side with iproute2's `ss` in one run.
#
#  1. A network namespace is filled with TOTAL TCP sockets (cmd/sockfarm:
#     LISTEN, ESTAB, CLOSE-WAIT, TIME-WAIT over worker processes).
#  2. The daemon starts: seed time (its log) and memory per live socket
#     (status: the table's estimate; and the process's RSS).
#  3. Queries: `sstrace ss --socket` against `ss` (-tan, -tanp, selective),
#     REPS runs each, alternating, output to /dev/null, outputs compared.
#  4. Churn: cmd/churn opens and closes CONNS loopback connections in a
#     second namespace, ROUNDS times with no tracer and with the daemon
#     running, alternating; events expected (10 per connection + 2) against
#     applied, and losses.
#  5. History: HIST_CONNS more connections under the daemon (2 retained
#     records each, one per side: 500 000 give 1 000 000), then the time of
#     `sstrace history` over all of them, and memory per retained record.
#
# Settings (environment): TOTAL (100000), REPS (7), REPS_P (5), CONNS
# (30000), CLIENTS (8), ROUNDS (5), HIST_CONNS (500000).
set -euo pipefail
cd "$(dirname "$0")/.."

TOTAL=${TOTAL:-100000}
REPS=${REPS:-7}
REPS_P=${REPS_P:-5}
CONNS=${CONNS:-30000}
CLIENTS=${CLIENTS:-8}
ROUNDS=${ROUNDS:-5}
HIST_CONNS=${HIST_CONNS:-500000}
NS=sstrace-bd-$$
CNS=sstrace-bdc-$$
GO=${GO:-go}
command -v "$GO" >/dev/null || GO=/usr/local/go/bin/go
export GOFLAGS=${GOFLAGS:--buildvcs=false}

if [ "$(id -u)" != 0 ]; then
  echo "bench-daemon: needs root (BPF, network namespaces)" >&2
  exit 1
fi
need=()
command -v ss >/dev/null && command -v ip >/dev/null || need+=(iproute2)
command -v jq >/dev/null || need+=(jq)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

TMP=$(mktemp -d /tmp/bench-daemon.XXXXXX)
# shellcheck source=bench-lib.sh
. .ci/bench-lib.sh
SOCKFARM_PID=
DAEMON_PID=
SOCK=$TMP/sstrace.sock
cleanup() {
  set +e
  stop_daemon
  stop_farm
  ip netns del "$NS" 2>/dev/null
  ip netns del "$CNS" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

echo "== build"
CGO_ENABLED=0 "$GO" build -o bin/sstrace ./cmd/sstrace
"$GO" build -o "$TMP/sockfarm" ./cmd/sockfarm
"$GO" build -o "$TMP/churn" ./cmd/churn
SSTRACE=$PWD/bin/sstrace

# start_daemon: starts the daemon and waits until its table is seeded
# (`sstrace status` exits 0 only then).
start_daemon() {
  "$SSTRACE" daemon --socket "$SOCK" --retain 1h --retain-max $((2 * HIST_CONNS + 2 * ROUNDS * CONNS + 10000)) \
    >"$TMP/daemon.log" 2>&1 &
  DAEMON_PID=$!
  for _ in $(seq 600); do
    "$SSTRACE" status --socket "$SOCK" >/dev/null 2>&1 && return 0
    kill -0 "$DAEMON_PID" 2>/dev/null || break
    sleep 0.05
  done
  echo "bench-daemon: the daemon did not seed:" >&2
  cat "$TMP/daemon.log" >&2
  exit 1
}
stop_daemon() {
  if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
    kill -TERM "$DAEMON_PID"
    wait "$DAEMON_PID" 2>/dev/null
  fi
  DAEMON_PID=
}
status_json() { "$SSTRACE" status --socket "$SOCK" --json; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$DAEMON_PID/status"; }
# The daemon's user+system CPU in µs (bench_queries adds it to the client's).
server_cpu_us() { awk -v hz="$(getconf CLK_TCK)" '{printf "%d", ($14 + $15) * 1e6 / hz}' "/proc/$DAEMON_PID/stat"; }

check_load bench-daemon

echo "== population: $TOTAL TCP sockets in netns $NS"
start_farm "$TMP/sockfarm"
DPORT=$(sed -n 's/.* dport=\([0-9]*\).*/\1/p' <<<"$READY")

echo "== daemon: seed"
start_daemon
SEED=$(sed -n 's/.*msg="table seeded" sockets=\([0-9]*\) took=\([0-9.]*[mµ]*s\).*/\1 sockets in \2/p' "$TMP/daemon.log")
ST=$(status_json)
LIVE_SOCKETS=$(jq .sockets_total <<<"$ST")
LIVE_MEM=$(jq .memory_bytes <<<"$ST")
LIVE_RSS=$(rss_kib)
echo "   seeded $SEED; table estimate $LIVE_MEM B for $LIVE_SOCKETS sockets; RSS $LIVE_RSS KiB"

QUERIES=("-tan" "-tanp" "-tan state close-wait" "-tan dport = :$DPORT")
OURS=("$SSTRACE" ss --socket "$SOCK")
target_of() {
  case $1 in
    -tan) echo 0.5 ;;
    -tanp) echo 0.05 ;;
    *) echo 1.0 ;;
  esac
}
QTABLE=$TMP/queries.md
bench_queries "$QTABLE"

echo "== churn: $CONNS connections x $ROUNDS rounds, none vs daemon"
ip netns add "$CNS"
ip -n "$CNS" link set lo up
ip netns exec "$CNS" sysctl -qw net.ipv4.ip_local_port_range="1024 65535"
churn() { # connections -> seconds
  ip netns exec "$CNS" "$TMP/churn" -listen 127.0.0.1:7777 -conns "$1" -clients "$CLIENTS" |
    sed -n 's/.*seconds=\([0-9.]*\).*/\1/p'
}
stop_daemon
: >"$TMP/none.t"
: >"$TMP/daemon.t"
: >"$TMP/daemon.ns"
LOST_TOTAL=0
EVENTS_SHORT=0
round_daemon() {
  start_daemon
  local e0 e1 lost c0 c1
  e0=$(status_json | jq .events)
  c0=$(server_cpu_us)
  churn "$CONNS" >>"$TMP/daemon.t"
  sleep 0.5 # the last events reach the table
  c1=$(server_cpu_us)
  ST=$(status_json)
  e1=$(jq .events <<<"$ST")
  # The daemon's CPU per applied event (user + system, its reader, table
  # and background work; the kernel programs are not in it).
  echo "$(((c1 - c0) * 1000 / (e1 - e0 > 0 ? e1 - e0 : 1)))" >>"$TMP/daemon.ns"
  lost=$(jq .lost <<<"$ST")
  LOST_TOTAL=$((LOST_TOTAL + lost))
  # Other namespaces (the farm's TIME-WAIT replacements) add events, so
  # applied >= expected; fewer means events went missing.
  if ((e1 - e0 < CONNS * 10 + 2)); then EVENTS_SHORT=$((EVENTS_SHORT + CONNS * 10 + 2 - (e1 - e0))); fi
  echo "   daemon: $(tail -1 "$TMP/daemon.t") s, $((e1 - e0)) events applied (expected at least $((CONNS * 10 + 2))), lost $lost"
  stop_daemon
}
for ((r = 0; r < ROUNDS; r++)); do
  if ((r % 2 == 0)); then
    churn "$CONNS" >>"$TMP/none.t"; echo "   none:   $(tail -1 "$TMP/none.t") s"
    round_daemon
  else
    round_daemon
    churn "$CONNS" >>"$TMP/none.t"; echo "   none:   $(tail -1 "$TMP/none.t") s"
  fi
done
NONE_S=$(median 1 <"$TMP/none.t")
DAEMON_S=$(median 1 <"$TMP/daemon.t")
CHURN_RATIO=$(awk -v a="$DAEMON_S" -v b="$NONE_S" 'BEGIN {printf "%.3f", a / b}')

echo "== history: $HIST_CONNS connections under the daemon"
start_daemon
ST=$(status_json)
MEM0=$(jq .memory_bytes <<<"$ST")
RET0=$(jq .retained <<<"$ST")
RSS0=$(rss_kib)
HIST_S=$(churn "$HIST_CONNS")
# Wait for the clients' TIME-WAIT minisockets to expire (60 s) and the
# daemon's next reconcile (5 s) to retire them, so that every record
# counted below is a closed connection.
for _ in $(seq 120); do
  [ "$(ss -N "$CNS" -tanH state time-wait | wc -l)" = 0 ] && break
  sleep 1
done
sleep 6
ST=$(status_json)
MEM1=$(jq .memory_bytes <<<"$ST")
RET1=$(jq .retained <<<"$ST")
RSS1=$(rss_kib)
HIST_LOST=$(jq .lost <<<"$ST")
RETAINED=$((RET1 - RET0))
echo "   churn $HIST_S s; retained $RET1 records (+$RETAINED), lost $HIST_LOST; table estimate +$((MEM1 - MEM0)) B, RSS +$((RSS1 - RSS0)) KiB"
HTABLE=$TMP/history.md
{
  echo "| query | rows | time (s, median of 3) |"
  echo "|---|---:|---:|"
} >"$HTABLE"
for q in "--closed" "--closed --json" "--closed dport = :7777 and sport = :40000"; do
  read -r -a hargs <<<"$q"
  rows=$("$SSTRACE" history --socket "$SOCK" --all-netns -H "${hargs[@]}" | wc -l)
  : >"$TMP/h.t"
  for _ in 1 2 3; do run_us "$SSTRACE" history --socket "$SOCK" --all-netns "${hargs[@]}" >>"$TMP/h.t"; done
  t=$(secs "$(median 1 <"$TMP/h.t")")
  echo "   history $q: $rows rows in $t s"
  echo "| \`history --all-netns $q\` | $rows | $t |" >>"$HTABLE"
done
stop_daemon

echo
echo "== results"
echo "machine: $(uname -r), $(nproc) CPUs, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1); $(ss -V); $("$GO" version | cut -d' ' -f3)"
echo "load average (1/5/15 min) at start: $LOAD_START, at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "population: ${READY#ready }"
echo
echo "| figure | value | target |"
echo "|---|---:|---:|"
echo "| seed | $SEED | < 1 s for 100 000 |"
echo "| memory per live socket (table estimate) | $((LIVE_MEM / LIVE_SOCKETS)) B | |"
echo "| daemon RSS with $LIVE_SOCKETS live sockets | $((LIVE_RSS / 1024)) MiB | |"
echo "| churn, no tracer (median s) | $NONE_S | |"
echo "| churn, daemon running (median s) | $DAEMON_S | |"
echo "| churn ratio daemon / none | $CHURN_RATIO | ≤ 1.10 |"
echo "| daemon CPU per applied event (median of rounds; 10 ms clock ticks) | $(median 1 <"$TMP/daemon.ns") ns | |"
echo "| events lost in churn rounds / missing | $LOST_TOTAL / $EVENTS_SHORT | 0 |"
echo "| retained closed records after history churn | $RET1 (lost $HIST_LOST) | |"
echo "| memory per retained record (table estimate) | $(((MEM1 - MEM0) / (RETAINED > 0 ? RETAINED : 1))) B | ≤ 512 B |"
echo "| RSS growth per retained record | $(((RSS1 - RSS0) * 1024 / (RETAINED > 0 ? RETAINED : 1))) B | |"
echo
echo "sstrace CPU = the client's plus the daemon's (mean per run, its background work included)"
cat "$QTABLE"
echo
cat "$HTABLE"
