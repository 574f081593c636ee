# Shared by the benchmark scripts (.ci/bench-ss.sh, .ci/bench-daemon.sh):
# timing, medians and output comparison, and the sockfarm population.
# The caller sets TMP (a scratch directory), NS, TOTAL and SOCKFARM_PID=,
# and removes the namespace and stops sockfarm on exit (stop_farm).

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


# start_farm BINARY: fills netns $NS with $TOTAL TCP sockets (cmd/sockfarm)
# and waits until they stand; sets READY (sockfarm's "ready ..." line) and
# SOCKFARM_PID.
start_farm() {
  ip netns add "$NS"
  coproc FARM { exec "$1" --netns "$NS" --total "$TOTAL" 2>"$TMP/farm.err"; }
  SOCKFARM_PID=$FARM_PID
  # A copy of its stdout: bash closes the coproc's own fds once it exits,
  # and a failing sockfarm exits before the read below.
  exec {FARM_OUT}<&"${FARM[0]}"
  if ! read -r -t 600 READY <&"$FARM_OUT" || [[ $READY != ready* ]]; then
    echo "sockfarm did not get ready:" >&2
    cat "$TMP/farm.err" >&2
    exit 1
  fi
  echo "$READY"
}

# stop_farm: sockfarm's orderly stop (SIGTERM, as closing its stdin): its
# workers exit and the kernel closes their sockets.
stop_farm() {
  if [ -n "${SOCKFARM_PID:-}" ] && kill -0 "$SOCKFARM_PID" 2>/dev/null; then
    kill -TERM "$SOCKFARM_PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$SOCKFARM_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$SOCKFARM_PID" 2>/dev/null
  fi
}

# bench_queries TABLE: runs every query of QUERIES with ss and with the
# command in OURS (e.g. `sstrace ss`), REPS times each (REPS_P for -tanp),
# (a function server_cpu_us, when defined, gives the CPU time of a server
# that answers OURS, added to OURS' CPU column),
# alternating which goes first, output to /dev/null, and writes a Markdown
# table of medians, ratios, targets (target_of QUERY) and row counts to
# TABLE. Uses NS and DPORT.
bench_queries() {
  {
    echo "| query | ss (s) | sstrace (s) | ratio | target | met? | ss CPU (s) | sstrace CPU (s) | CPU ratio | rows ss | rows sstrace | lines differing |"
    echo "|---|---:|---:|---:|---:|:---:|---:|---:|---:|---:|---:|---:|"
  } >"$1"

  for q in "${QUERIES[@]}"; do
    # Each query is passed the way a user types it: options as words, the
    # dport filter as one quoted argument.
    qns=$NS
    case $q in
      "-tan dport = :"*) args=(-tan "dport = :$DPORT") ;;
      # Start-up and an empty answer: a namespace with no socket at all.
      "-tan (empty netns)") args=(-tan) qns=$EMPTY_NS ;;
      *) read -r -a args <<<"$q" ;;
    esac
    reps=$REPS target=$(target_of "$q")
    if [ "$q" = "-tanp" ]; then reps=$REPS_P; fi
    echo "== ss $q  ($reps runs each, alternating)"

    # Warm-up run of each, kept for the row counts.
    ss -N "$qns" "${args[@]}" >"$TMP/ss.out" 2>>"$TMP/run.err" || { echo "ss $q failed" >&2; exit 1; }
    failed=
    "${OURS[@]}" -N "$qns" "${args[@]}" >"$TMP/sstrace.out" 2>>"$TMP/run.err" || failed=yes

    : >"$TMP/t.ss"
    : >"$TMP/t.st"
    srv0=0
    if declare -F server_cpu_us >/dev/null; then srv0=$(server_cpu_us); fi
    for ((i = 0; i < reps; i++)); do
      if ((i % 2 == 0)); then
        run_us ss -N "$qns" "${args[@]}" >>"$TMP/t.ss"
        [ -n "$failed" ] || run_us "${OURS[@]}" -N "$qns" "${args[@]}" >>"$TMP/t.st" || failed=yes
      else
        [ -n "$failed" ] || run_us "${OURS[@]}" -N "$qns" "${args[@]}" >>"$TMP/t.st" || failed=yes
        run_us ss -N "$qns" "${args[@]}" >>"$TMP/t.ss"
      fi
    done
    ss_us=$(median 1 <"$TMP/t.ss")
    ss_cpu=$(median 2 <"$TMP/t.ss")
    if [ -n "$failed" ]; then
      echo "   ${OURS[*]} $q FAILED: $(tail -1 "$TMP/run.err")"
      echo "| \`$q\` | $(secs "$ss_us") | failed | - | ≤ $target | no | $(secs "$ss_cpu") | - | - | $(rows "${args[0]}" "$TMP/ss.out") | - | - |" >>"$1"
      continue
    fi
    st_us=$(median 1 <"$TMP/t.st")
    st_cpu=$(median 2 <"$TMP/t.st")
    if declare -F server_cpu_us >/dev/null; then
      # A server answers for OURS (the daemon): its CPU counts too, the
      # mean over the runs (its background work included).
      st_cpu=$((st_cpu + ($(server_cpu_us) - srv0) / reps))
    fi
    ratio=$(awk -v a="$st_us" -v b="$ss_us" 'BEGIN {printf "%.3f", a / b}')
    cpu_ratio=$(awk -v a="$st_cpu" -v b="$ss_cpu" 'BEGIN {if (b > 0) printf "%.3f", a / b; else print "-"}')
    met=$(awk -v r="$ratio" -v t="$target" 'BEGIN {print (r <= t) ? "yes" : "no"}')
    rs=$(rows "${args[0]}" "$TMP/ss.out")
    rt=$(rows "${args[0]}" "$TMP/sstrace.out")
    d=$(differ "$TMP/ss.out" "$TMP/sstrace.out")
    echo "   ss $(secs "$ss_us") s, sstrace $(secs "$st_us") s, ratio $ratio (target ≤ $target: $met); CPU $(secs "$ss_cpu") / $(secs "$st_cpu") s, ratio $cpu_ratio; rows $rs / $rt, differing lines $d"
    echo "| \`$q\` | $(secs "$ss_us") | $(secs "$st_us") | $ratio | ≤ $target | $met | $(secs "$ss_cpu") | $(secs "$st_cpu") | $cpu_ratio | $rs | $rt | $d |" >>"$1"
  done
}

# check_load NAME: sets LOAD_START and warns (as NAME) when the machine is
# busy enough to skew the timings.
check_load() {
  LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
  if awk -v l="${LOAD_START%% *}" -v n="$(nproc)" 'BEGIN {exit !(l > n / 2)}'; then
    echo "$1: warning: load average $LOAD_START on $(nproc) CPUs; other work will skew the timings" >&2
  fi
}
