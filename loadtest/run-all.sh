#!/usr/bin/env bash
# Re-run every load-test scenario of docs/loadtests.md at its target size on a QUIET machine.
#
#   bash loadtest/run-all.sh [REPO]      # REPO: a Lectern checkout with .venv (default: this one)
#   SCALE=0.1 RUN_S=20 bash loadtest/run-all.sh   # a small smoke run of the same steps
#   ONLY="live-2000 live-200" bash loadtest/run-all.sh   # only those runs
#
# Brings up a private `make run` stack (own data dir, free ports, per-IP connect limits raised),
# runs dashboard, live (2,000 users @ 20 cmd/s; 200 users @ 100 cmd/s), instructors and the three
# spikes, each bounded (RUN_S seconds, default 50), and tears the stack down by its PID.
# Everything lands in $OUT (default /tmp/lt13-runs): <name>.log (locust output + verdict),
# <name>.stack-cpu (CPU % of every stack process over the run), copies of the CSV/HTML reports,
# and summary.txt. A run marked INVALID measured the generator, not Lectern: re-run it when the
# machine is quiet (`uptime` load average well under the core count).
set -u
REPO=${1:-$(cd "$(dirname "$0")/.." && pwd)}
OUT=${OUT:-/tmp/lt13-runs}
SCALE=${SCALE:-1}
RUN_S=${RUN_S:-50}
PY="$REPO/.venv/bin/python"
cd "$REPO" || exit 2
rm -rf "$OUT"; mkdir -p "$OUT"
DATA="$OUT/stack"
n() { "$PY" -c "import sys; print(max(2, round($1 * $SCALE)))"; }
free_port() { "$PY" -c "from config.servers import free_port; print(free_port())"; }

export LECTERN_DATA_DIR="$DATA"
export LECTERN_GATEWAY_PORT=$(free_port) LECTERN_API_PORT=$(free_port)
export LECTERN_GATEWAY_METRICS_PORT=0 LECTERN_WORKER_METRICS_PORT=0 LECTERN_API_METRICS_PORT=0
export LECTERN_GATEWAY_SUPERVISOR_METRICS_PORT=0 LECTERN_WORKER_SUPERVISOR_METRICS_PORT=0
# WORKER_METRICS=1: worker process i serves /metrics on $LECTERN_WORKER_METRICS_PORT + i
# (lectern_worker_live_batch_commands: commands per room batch).
[ "${WORKER_METRICS:-0}" = 1 ] && export LECTERN_WORKER_METRICS_PORT=$(free_port)
export LECTERN_CONN_RATE_PER_IP_PER_S=100000 LECTERN_CONN_BURST_PER_IP=100000
# 100 cmd/s from 200 students is ~4 questions a minute each (the default allows 6): keep headroom.
export LECTERN_QA_ASKS_PER_MINUTE=${LECTERN_QA_ASKS_PER_MINUTE:-60}
unset REDIS_URL DATABASE_URL SMTP_URL

"$PY" -m config.devstack > "$OUT/stack.log" 2>&1 &
STACK=$!
echo "stack pid $STACK, gateway :$LECTERN_GATEWAY_PORT, api :$LECTERN_API_PORT, worker metrics :$LECTERN_WORKER_METRICS_PORT, data $DATA"
stop_stack() {
  if kill -0 "$STACK" 2>/dev/null; then
    kill -TERM "$STACK"
    for _ in $(seq 60); do kill -0 "$STACK" 2>/dev/null || break; sleep 1; done
    kill -0 "$STACK" 2>/dev/null && kill -KILL "$STACK"
  fi
  wait "$STACK" 2>/dev/null
  echo "stack stopped"
}
trap stop_stack EXIT
trap 'exit 130' INT TERM
for _ in $(seq 120); do
  grep -q "Ctrl-C stops everything" "$OUT/stack.log" 2>/dev/null && break
  kill -0 "$STACK" 2>/dev/null || { echo "stack died, see $OUT/stack.log"; exit 2; }
  sleep 1
done
sleep 3  # the gateway and worker processes finish starting

# CPU % of one core for every process of the stack tree, over one run (from /proc times).
stack_pids() { echo "$STACK"; pgrep -P "$STACK"; for p in $(pgrep -P "$STACK"); do pgrep -P "$p"; done; }
cpu_ticks() { for p in $(stack_pids); do
  [ -r /proc/$p/stat ] && echo "$p $(awk '{print $14+$15}' /proc/$p/stat) $(tr '\0' ' ' < /proc/$p/cmdline | cut -c1-60)"; done; }

run() {  # run NAME ARGS...: one bounded scenario (ONLY="live-200 dashboard" picks some)
  local name=$1; shift
  [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]] && return 0
  echo "== $name: python -m loadtest $* ${EXTRA:-}" | tee -a "$OUT/summary.txt"
  local t0 hz; t0=$(date +%s.%N); hz=$(getconf CLK_TCK)
  cpu_ticks > "$OUT/$name.cpu0"
  # shellcheck disable=SC2086  # EXTRA: more loadtest options for every run, e.g. "--processes 4"
  timeout $((RUN_S + 240)) "$PY" -m loadtest --data-dir "$DATA" "$@" ${EXTRA:-} > "$OUT/$name.log" 2>&1
  local rc=$?
  cpu_ticks > "$OUT/$name.cpu1"
  local t1; t1=$(date +%s.%N)
  awk -v dt="$(echo "$t1 - $t0" | bc)" -v hz="$hz" 'NR==FNR {a[$1]=$2; next}
    ($1 in a) {printf "%6.1f %%  pid %s  %s\n", 100*($2-a[$1])/hz/dt, $1, substr($0, index($0,$3))}' \
    "$OUT/$name.cpu0" "$OUT/$name.cpu1" | sort -rn > "$OUT/$name.stack-cpu"
  { sed -n '/Response time percentiles/,/Aggregated/p' "$OUT/$name.log" | cut -c1-9,10-80,89-200
    grep -E '^(RUN INVALID|generator CPU|locust warned|requests |lost events|duplicate events|reports:)' "$OUT/$name.log"
    echo "exit $rc (0 ok, 1 failures, 3 INVALID: generator CPU-bound); load avg: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "stack CPU over the run (busiest first):"; head -6 "$OUT/$name.stack-cpu"; echo; } >> "$OUT/summary.txt"
  for f in $(grep -o 'reports: [^*]*' "$OUT/$name.log" | cut -d' ' -f2); do cp "$f"* "$OUT/" 2>/dev/null; done
}

U2000=$(n 2000); U200=$(n 200)
run dashboard   --scenario dashboard   --users "$U200"  --spawn-rate 50 --run-time "${RUN_S}s"
run live-2000   --scenario live        --users "$U2000" --spawn-rate 200 --run-time "$((RUN_S + 10))s" --command-rate 20
run live-200    --scenario live        --users "$U200"  --spawn-rate 100 --run-time "${RUN_S}s" --command-rate 100
run instructors --scenario instructors --users "$U200"  --spawn-rate 50 --run-time "${RUN_S}s"
run spike-join  --scenario spikes --classes StartMinuteJoin --users "$U2000" --spawn-rate "$U2000" --run-time "${RUN_S}s"
run spike-poll  --scenario spikes --classes PollStorm       --users "$U200"  --spawn-rate 100 --run-time "${RUN_S}s"
run spike-reconnect --scenario spikes --classes MassReconnect --users "$U200" --spawn-rate 100 --run-time "$((RUN_S + 20))s"
echo "done: $OUT/summary.txt"
