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
#   floor: an empty bpftrace program on the same tracepoint (the cost of
#          running any program there at all)
#   sstrace-tp: sstrace --hook tracepoint (the classic tracepoint)
# Reported: churn time (median), ratio against no tracer, events expected
# (10 per connection + 2 for the listener) vs received, lost; then the CPU
# each tracer spends per transition, which a busy machine's wall time hides:
#   kernel ns: bpf_stats (kernel.bpf_stats_enabled=1) of the tracer's own
#     programs, run_time_ns / run_cnt over the churn;
#   user ns: the tracer process's CPU time (sum_exec_runtime of its threads,
#     user + system, /proc/PID/task/*/sched) over the churn / events received;
#   core@100k: share of one core a host making 100 000 transitions a second
#     would spend on it ((kernel + user) ns x 100 000 / 1 s).
# BASE=REV adds the variants sstrace-base and sstrace-base-tp: sstrace built
# from that git revision, to measure a change side by side; the summary then
# shows both in two columns.
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
stats_was=$(cat /proc/sys/kernel/bpf_stats_enabled)
sysctl -qw kernel.bpf_stats_enabled=1

cleanup() {
  # A tracer left behind by a failed round would skew every later run.
  kill $(jobs -p) 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  sysctl -qw kernel.bpf_stats_enabled="$stats_was" || true
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

# progs PID PREFIX: ids of the BPF programs the process holds (its fds, so
# that other BPF users of the machine never count) whose name starts so
# (names are cut to 15 characters).
progs() {
  local id
  for id in $(grep -h '^prog_id:' /proc/"$1"/fdinfo/* 2>/dev/null | awk '{print $2}' | sort -u); do
    bpftool prog show id "$id" -j | jq -r --arg p "$2" 'select(.name | startswith($p)) | .id'
  done | tr '\n' ' '
}

# kstats IDS: "run_time_ns run_cnt" summed over the programs.
kstats() {
  local t=0 c=0 id
  for id in $1; do
    read -r a b < <(bpftool prog show id "$id" -j | jq -r '"\(.run_time_ns // 0) \(.run_cnt // 0)"')
    t=$((t + a)); c=$((c + b))
  done
  echo "$t $c"
}

# cpu_ns PID: CPU time of all the process's threads, user + system, in ns.
cpu_ns() {
  cat /proc/"$1"/task/*/sched 2>/dev/null | awk '/^se.sum_exec_runtime/ {t += $3} END {printf "%.0f\n", t * 1e6}'
}

# measure PID PROGPREFIX [CATCHPREFIX]: runs the churn between two readings
# of the tracer's kernel and process CPU time; sets secs, kns (kernel ns per
# run of the main programs, their catchers' time included: a catcher runs
# for every transition too) and ucpu (process CPU ns).
measure() {
  local pid=$1 prefix=$2 ids cids k0 c0 k1 c1 u0 u1 ck0 ck1 x
  ids=$(progs "$pid" "$prefix")
  cids=
  [ -n "${3:-}" ] && cids=$(progs "$pid" "$3")
  read -r k0 c0 < <(kstats "$ids"); read -r ck0 x < <(kstats "$cids"); u0=$(cpu_ns "$pid")
  secs=$(churn)
  sleep "$drain"
  read -r k1 c1 < <(kstats "$ids"); read -r ck1 x < <(kstats "$cids"); u1=$(cpu_ns "$pid")
  kns=$(( (c1 - c0) > 0 ? (k1 - k0 + ck1 - ck0) / (c1 - c0) : 0 ))
  ucpu=$((u1 - u0))
}

run_variant() { # name -> prints "seconds received lost kernel-ns user-ns"
  local name=$1 secs recv lost=0 pid kns=- ucpu=0 drain user=-
  # Old output must not satisfy wait_ready before the new tracer truncates it.
  rm -f "$OUT"/*.out "$OUT"/*.err
  case $name in
    none)
      secs=$(churn); recv=0 ;;
    sstrace|sstrace-base|sstrace-tp|sstrace-base-tp)
      local bin=${name%-tp} hook=tp_btf prefix=handle_tp_btf catch=catch_tp_btf
      [ "$bin" != "$name" ] && hook=tracepoint prefix=handle_tracepoi catch=
      bin/$bin trace --json --hook $hook --netns "$NSINO" >/dev/null 2>"$OUT/sstrace.err" &
      pid=$!
      wait_ready "$OUT/sstrace.err" "tracing with hook"
      drain=0.3; measure $pid $prefix $catch
      kill -INT $pid; wait $pid || true
      recv=$(sed -n 's/.* \([0-9]*\) events received.*/\1/p' "$OUT/sstrace.err")
      lost=$(sed -n 's/.*, \([0-9]*\) lost.*/\1/p' "$OUT/sstrace.err") ;;
    tcpstates)
      tcpstates >"$OUT/tcpstates.out" 2>&1 &
      pid=$!
      wait_prog handle_set_state; sleep 0.2 # loaded, then attached
      drain=0.5; measure $pid handle_set_stat
      kill -INT $pid; wait $pid || true
      # tcpstates sees every namespace: count the churn's lines (LPORT or RPORT).
      recv=$(awk -v p=$PORT '$5 == p || $7 == p' "$OUT/tcpstates.out" | wc -l)
      lost=$({ grep -io 'lost [0-9]* events' "$OUT/tcpstates.out" || true; } | awk '{t+=$2} END {print t+0}') ;;
    floor)
      bpftrace -e 'BEGIN { printf("READY\n"); } tracepoint:sock:inet_sock_set_state { }' \
        >"$OUT/floor.out" 2>"$OUT/floor.err" &
      pid=$!
      wait_ready "$OUT/floor.out" READY
      drain=0.2; measure $pid inet_sock_set_s
      kill -INT $pid; wait $pid || true
      recv=-; lost=0 ;;
    bpftrace)
      bpftrace -e 'BEGIN { printf("READY\n"); }
        tracepoint:sock:inet_sock_set_state /args->protocol == 6/ {
          printf("{\"time\":%llu,\"pid\":%d,\"comm\":\"%s\",\"sport\":%d,\"dport\":%d,\"old\":%d,\"new\":%d}\n",
                 nsecs, pid, comm, args->sport, args->dport, args->oldstate, args->newstate); }' \
        >"$OUT/bpftrace.out" 2>"$OUT/bpftrace.err" &
      pid=$!
      wait_ready "$OUT/bpftrace.out" READY
      drain=0.5; measure $pid inet_sock_set_s
      kill -INT $pid; wait $pid || true
      recv=$(grep -c "\"sport\":$PORT,\|\"dport\":$PORT," "$OUT/bpftrace.out" || true)
      lost=$(cat "$OUT/bpftrace.out" "$OUT/bpftrace.err" | sed -n 's/.*Lost \([0-9]*\) events.*/\1/p' | awk '{t+=$1} END {print t+0}')
      lost=${lost:-0} ;;
  esac
  # CPU per event received; the floor receives nothing (per transition of
  # the churn, to show it is nil).
  case $recv in
    -) user=$((ucpu / EXPECTED)) ;;
    0) ;;
    *) user=$((ucpu / recv)) ;;
  esac
  echo "$secs $recv $lost $kns $user"
}

default_variants="none sstrace sstrace-tp tcpstates bpftrace floor"
[ -n "${BASE:-}" ] && default_variants="none sstrace-base sstrace sstrace-base-tp sstrace-tp tcpstates bpftrace floor"
read -r -a VARIANTS <<<"${VARIANTS:-$default_variants}"
declare -A times recvs losts kerns users
load0=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq "$ROUNDS"); do
  for v in "${VARIANTS[@]}"; do
    read -r s n l k u < <(run_variant "$v")
    times[$v]+="$s "; recvs[$v]+="$n "; losts[$v]+="$l "; kerns[$v]+="$k "; users[$v]+="$u "
    echo "round $r $v: ${s}s received=$n lost=$l kernel=${k}ns user=${u}ns" >&2
  done
done
load1=$(cut -d' ' -f1-3 /proc/loadavg)

median() { tr ' ' '\n' | awk NF | sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "-"; else print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}'; }
num() { tr ' ' '\n' | { grep '^[0-9]' || true; }; } # drop the "-" of rounds without a figure
base=$(echo "${times[none]}" | median)
printf '\nkernel %s, %s cores; %d connections, %d clients, %d rounds (median); load average %s before, %s after\n' \
  "$(uname -r)" "$(nproc)" "$CONNS" "$CLIENTS" "$ROUNDS" "$load0" "$load1"
printf '%-16s %8s %7s %8s %8s %8s %6s %9s %9s %10s\n' variant seconds conn/s ratio expected received lost 'kernel ns' 'user ns' core@100k
declare -A K U
for v in "${VARIANTS[@]}"; do
  s=$(echo "${times[$v]}" | median)
  n=$(echo "${recvs[$v]}" | num | median)
  l=$(echo "${losts[$v]}" | tr ' ' '\n' | awk '{t+=$1} END {print t+0}')
  k=$(echo "${kerns[$v]}" | num | median); K[$v]=$k
  u=$(echo "${users[$v]}" | num | median); U[$v]=$u
  exp=$EXPECTED; [ "$v" = none ] && exp=- && l=- && n=-
  [ "$v" = floor ] && exp=- && n=-
  share=-
  [ "$k" != - ] && share=$(awk -v k="$k" -v u="$u" 'BEGIN {if (u == "-") u = 0; printf "%.1f%%", (k + u) * 100000 / 1e9 * 100}')
  printf '%-16s %8.3f %7.0f %7.3fx %8s %8s %6s %9s %9s %10s\n' "$v" "$s" "$(echo "$CONNS / $s" | bc -l)" "$(echo "$s / $base" | bc -l)" "$exp" "$n" "$l" "$k" "$u" "$share"
done

# BASE: the two builds side by side, per transition.
if [ -n "${BASE:-}" ] && [ -n "${K[sstrace-base]:-}" ] && [ -n "${K[sstrace]:-}" ]; then
  printf '\nper transition, %s -> this tree\n' "$(git rev-parse --short "$BASE")"
  printf '%-26s %12s %12s\n' '' before after
  printf '%-26s %12s %12s\n' 'kernel ns, tp_btf' "${K[sstrace-base]}" "${K[sstrace]}"
  [ -n "${K[sstrace-tp]:-}" ] && printf '%-26s %12s %12s\n' 'kernel ns, tracepoint' "${K[sstrace-base-tp]:--}" "${K[sstrace-tp]}"
  printf '%-26s %12s %12s\n' 'user ns, --json >/dev/null' "${U[sstrace-base]}" "${U[sstrace]}"
  for v in sstrace-base sstrace; do
    awk -v k="${K[$v]}" -v u="${U[$v]}" 'BEGIN {printf "%.1f%%\n", (k + u) / 100}'
  done | paste -sd' ' | awk '{printf "%-26s %12s %12s\n", "core@100k/s, tp_btf", $1, $2}'
fi
