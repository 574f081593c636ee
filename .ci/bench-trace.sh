#!/usr/bin/env bash
# make bench-trace: the cost of tracing full-speed connection churn.
#
# In a fresh network namespace, cmd/churn opens and closes CONNS loopback
# connections with CLIENTS concurrent clients (connect, send 16 bytes,
# close), first with no tracer, then under each tracer, ROUNDS times each,
# alternating so that drift in the machine's load hits every variant alike:
#   sstrace trace --json >/dev/null (filtered to the namespace, in the kernel)
#   libbpf-tools tcpstates                 (yardstick)
#   a bpftrace one-liner on the same tracepoint, printing JSON (yardstick)
# Reported: churn time (median), ratio against no tracer, events expected
# (10 per connection + 2 for the listener) vs received, lost.
# BASE=REV adds the variant sstrace-base: sstrace built from that git
# revision, to measure a change side by side (VARIANTS="none sstrace
# sstrace-base").
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${CONNS:-30000}
CLIENTS=${CLIENTS:-8}
ROUNDS=${ROUNDS:-5}
NS=sstrace-bench-$$
OUT=${OUT:-/tmp/sstrace-bench-trace}
mkdir -p "$OUT"

need=()
command -v tcpstates >/dev/null || need+=(libbpf-tools)
command -v bpftrace >/dev/null || need+=(bpftrace)
command -v ip >/dev/null || need+=(iproute2)
command -v bpftool >/dev/null || need+=(bpftool)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true

CGO_ENABLED=0 go build -o bin/sstrace ./cmd/sstrace
go build -o bin/churn ./cmd/churn
if [ -n "${BASE:-}" ]; then
  base_tree=$(mktemp -d)
  git worktree add -q --detach "$base_tree" "$BASE"
  (cd "$base_tree" && CGO_ENABLED=0 go build -o "$OLDPWD/bin/sstrace-base" ./cmd/sstrace)
  git worktree remove --force "$base_tree"
fi

cleanup() {
  # A tracer left behind by a failed round would skew every later run.
  kill $(jobs -p) 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$NS"
ip -n "$NS" link set lo up
# TIME-WAIT sockets of the client side hold ports: widen the range (per netns).
ip netns exec "$NS" sysctl -qw net.ipv4.ip_local_port_range="1024 65535"
NSINO=$(stat -Lc %i "/run/netns/$NS")
EXPECTED=$((CONNS * 10 + 2))

PORT=7777
churn() { ip netns exec "$NS" bin/churn -listen 127.0.0.1:$PORT -conns "$CONNS" -clients "$CLIENTS" | sed -n 's/.*seconds=\([0-9.]*\).*/\1/p'; }

# wait_ready FILE PATTERN: tracers print something once attached.
wait_ready() {
  for _ in $(seq 300); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "tracer did not become ready: $(cat "$1")" >&2; return 1
}

# wait_prog NAME: wait until a BPF program of that name is loaded (tcpstates
# prints nothing until its stdout buffer fills, so its output cannot tell).
wait_prog() {
  for _ in $(seq 300); do
    case "$(bpftool prog show 2>/dev/null)" in *"name $1 "*) return 0 ;; esac
    sleep 0.1
  done
  echo "no BPF program $1 appeared" >&2; return 1
}

run_variant() { # name -> prints "seconds received lost"
  local name=$1 secs recv lost=0 pid
  # Old output must not satisfy wait_ready before the new tracer truncates it.
  rm -f "$OUT"/*.out "$OUT"/*.err
  case $name in
    none)
      secs=$(churn); recv=0 ;;
    sstrace|sstrace-base)
      bin/$name trace --json --netns "$NSINO" >/dev/null 2>"$OUT/sstrace.err" &
      pid=$!
      wait_ready "$OUT/sstrace.err" "tracing with hook"
      secs=$(churn)
      sleep 0.3; kill -INT $pid; wait $pid || true
      recv=$(sed -n 's/.* \([0-9]*\) events received.*/\1/p' "$OUT/sstrace.err")
      lost=$(sed -n 's/.*, \([0-9]*\) lost.*/\1/p' "$OUT/sstrace.err") ;;
    tcpstates)
      tcpstates >"$OUT/tcpstates.out" 2>&1 &
      pid=$!
      wait_prog handle_set_state; sleep 0.2 # loaded, then attached
      secs=$(churn)
      sleep 0.5; kill -INT $pid; wait $pid || true
      # tcpstates sees every namespace: count the churn's lines (LPORT or RPORT).
      recv=$(awk -v p=$PORT '$5 == p || $7 == p' "$OUT/tcpstates.out" | wc -l)
      lost=$({ grep -io 'lost [0-9]* events' "$OUT/tcpstates.out" || true; } | awk '{t+=$2} END {print t+0}') ;;
    bpftrace)
      bpftrace -e 'BEGIN { printf("READY\n"); }
        tracepoint:sock:inet_sock_set_state /args->protocol == 6/ {
          printf("{\"time\":%llu,\"pid\":%d,\"comm\":\"%s\",\"sport\":%d,\"dport\":%d,\"old\":%d,\"new\":%d}\n",
                 nsecs, pid, comm, args->sport, args->dport, args->oldstate, args->newstate); }' \
        >"$OUT/bpftrace.out" 2>"$OUT/bpftrace.err" &
      pid=$!
      wait_ready "$OUT/bpftrace.out" READY
      secs=$(churn)
      sleep 0.5; kill -INT $pid; wait $pid || true
      recv=$(grep -c "\"sport\":$PORT,\|\"dport\":$PORT," "$OUT/bpftrace.out" || true)
      lost=$(cat "$OUT/bpftrace.out" "$OUT/bpftrace.err" | sed -n 's/.*Lost \([0-9]*\) events.*/\1/p' | awk '{t+=$1} END {print t+0}')
      lost=${lost:-0} ;;
  esac
  echo "$secs $recv $lost"
}

read -r -a VARIANTS <<<"${VARIANTS:-none sstrace tcpstates bpftrace}"
declare -A times recvs losts
for r in $(seq "$ROUNDS"); do
  for v in "${VARIANTS[@]}"; do
    read -r s n l < <(run_variant "$v")
    times[$v]+="$s "; recvs[$v]+="$n "; losts[$v]+="$l "
    echo "round $r $v: ${s}s received=$n lost=$l" >&2
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}'; }
base=$(echo "${times[none]}" | median)
printf '\nkernel %s, %s cores; %d connections, %d clients, %d rounds (median)\n' "$(uname -r)" "$(nproc)" "$CONNS" "$CLIENTS" "$ROUNDS"
printf '%-10s %9s %8s %10s %12s %12s %8s\n' variant seconds conn/s ratio expected received lost
for v in "${VARIANTS[@]}"; do
  s=$(echo "${times[$v]}" | median)
  n=$(echo "${recvs[$v]}" | median)
  l=$(echo "${losts[$v]}" | tr ' ' '\n' | awk '{t+=$1} END {print t+0}')
  exp=$EXPECTED; [ "$v" = none ] && exp=-
  printf '%-10s %9.3f %8.0f %9.3fx %12s %12s %8s\n' "$v" "$s" "$(echo "$CONNS / $s" | bc -l)" "$(echo "$s / $base" | bc -l)" "$exp" "$n" "$l"
done
