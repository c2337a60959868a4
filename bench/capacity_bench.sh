#!/usr/bin/env bash
# Capacity figures for sizing a cluster (issue #12), side by side in one run:
# webhook ingest through bridge-gateway + bridge-controller on the embedded
# SQLite store, on a one-member etcd and on a three-member etcd, against the
# seed guide's Node handler run as the seed deploys it (Node's cluster
# module, one process per core); then leader takeover after kill -9.
#
# CPU per acknowledged webhook = (user + system CPU of every process that
# serves it: gateway, controller, etcd members; all Node processes) / 200s.
# It holds across machines better than req/s, which depends on the cores wrk
# leaves free.
#
# Usage: bench/capacity_bench.sh OUT.md   (BUILD_DIR must hold built binaries)
# Knobs: BENCH_CAPACITY_SECONDS (10), BENCH_INGEST_CONNECTIONS (32),
#        BENCH_TAKEOVERS (5), BENCH_LEASE (5s).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
OUT="${1:?usage: capacity_bench.sh OUT.md}"
FIX="$(cd "$ROOT/../shared/fixtures/webhooks" && pwd)"
SECS="${BENCH_CAPACITY_SECONDS:-10}"
CONNS="${BENCH_INGEST_CONNECTIONS:-32}"
TAKEOVERS="${BENCH_TAKEOVERS:-5}"
LEASE="${BENCH_LEASE:-5s}"
POOL=150000
SECRET=fixture-app-secret
NODE_DIR="$ROOT/bench/node_reference"
TOKEN_C=bench-cluster-token TOKEN_A=bench-admin-token

# Data under the build tree, not /tmp (tmpfs makes fsync free).
mkdir -p "$BUILD_DIR"
TMP="$(mktemp -d "$BUILD_DIR/capacity-bench.XXXXXX")"
PIDS=()
say() { printf 'capacity: %s\n' "$*" >&2; }
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
trap cleanup EXIT

CLK=$(getconf CLK_TCK)
# cpu_ticks PID...: user+system ticks of the processes and their children.
cpu_ticks() {
  local total=0 p c
  for p in "$@"; do
    for c in $p $(pgrep -P "$p" || true); do
      [[ -r /proc/$c/stat ]] || continue
      total=$((total + $(awk '{print $14 + $15}' "/proc/$c/stat")))
    done
  done
  echo "$total"
}

# shellcheck source=tools/ports.sh
source "$ROOT/tools/ports.sh"

# etcd_up MEMBERS: starts a fresh etcd cluster; sets ETCD_EPS and ETCD_PIDS.
etcd_up() {
  local n=$1 i cluster="" ports=() peers=()
  ETCD_PIDS=()
  for i in $(seq "$n"); do ports+=("$(pick_port)"); peers+=("$(pick_port)"); done
  for i in $(seq 0 $((n - 1))); do cluster+="${cluster:+,}e$i=http://127.0.0.1:${peers[$i]}"; done
  for i in $(seq 0 $((n - 1))); do
    etcd --name "e$i" --data-dir "$TMP/etcd$n-$i" --logger=zap --log-outputs=stderr \
      --listen-client-urls "http://127.0.0.1:${ports[$i]}" \
      --advertise-client-urls "http://127.0.0.1:${ports[$i]}" \
      --listen-peer-urls "http://127.0.0.1:${peers[$i]}" \
      --initial-advertise-peer-urls "http://127.0.0.1:${peers[$i]}" \
      --initial-cluster "$cluster" --auto-compaction-mode=periodic \
      --auto-compaction-retention=1h 2>"$TMP/etcd$n-$i.log" &
    ETCD_PIDS+=($!)
    PIDS+=($!)
  done
  for i in $(seq 0 $((n - 1))); do
    timeout 60 grep -q -m1 "serving client traffic" < <(tail -n +1 -F "$TMP/etcd$n-$i.log") ||
      { say "etcd member $i did not start"; exit 1; }
  done
  ETCD_EPS=$(printf '127.0.0.1:%s,' "${ports[@]}")
  ETCD_EPS=${ETCD_EPS%,}
}

etcd_metric() {  # etcd_metric NAME: summed over members
  local total=0 ep v
  for ep in ${ETCD_EPS//,/ }; do
    v=$(curl -fsS "http://$ep/metrics" | awk -v n="$1" '$1 == n {printf "%d", $2}')
    total=$((total + ${v:-0}))
  done
  echo "$total"
}

# ingest NAME STORE_SPEC EXTRA_PIDS...: gateway + controller on STORE, one wrk
# run; appends a row to $TMP/rows.tsv.
ingest() {
  local name=$1 store=$2
  shift 2
  local extra=("$@")
  start controller env BRIDGE_CLUSTER_TOKEN=$TOKEN_C BRIDGE_ADMIN_TOKEN=$TOKEN_A \
    "$BUILD_DIR/controller/bridge-controller" --listen=127.0.0.1:0 \
    --metrics_listen=127.0.0.1:0 --store="$store" --max_pending_turns=1000000
  local ctrl_pid=$PID ctrl_grpc ctrl_metrics
  ctrl_grpc=$(field "$READY" grpc)
  ctrl_metrics=$(field "$READY" metrics)
  # A controller on etcd leads once elected: wait for it, not for a time.
  timeout 30 bash -c "until curl -fsS http://$ctrl_metrics/metrics | grep -q '^bridge_controller_is_leader 1'; do sleep 0.05; done" ||
    { say "$name: the controller never led"; exit 1; }
  start gateway env WEBHOOK_SIGNATURE_SECRET="$SECRET" BRIDGE_CLUSTER_TOKEN=$TOKEN_C \
    "$BUILD_DIR/gateway/bridge-gateway" --listen=127.0.0.1:0 --controller="$ctrl_grpc"
  local gw_pid=$PID gw_http
  gw_http=$(field "$READY" http)
  measure "$name" "http://$gw_http/webhook/whatsapp" "$gw_pid" "$ctrl_pid" "${extra[@]}"
  stop "$gw_pid"
  stop "$ctrl_pid"
}

# measure NAME URL PIDS...: wrk against URL; CPU of PIDS over the run.
measure() {
  local name=$1 url=$2
  shift 2
  local before after line ok secs
  before=$(cpu_ticks "$@")
  wrk -t2 -c"$CONNS" -d"${SECS}s" --latency -s "$ROOT/bench/webhook.lua" "$url" \
    -- "$TMP/bodies.tsv" 2 >"$TMP/$name.wrk"
  after=$(cpu_ticks "$@")
  line=$(grep '^WRK ' "$TMP/$name.wrk") || { say "$name: wrk printed no summary"; exit 1; }
  ok=$(( $(field "${line#WRK }" requests) - $(field "${line#WRK }" non2xx) ))
  secs=$(field "${line#WRK }" duration_us)
  local cpu_us=$(( (after - before) * 1000000 / CLK ))
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$ok" "$secs" "$cpu_us" \
    "$(field "${line#WRK }" p99_us)" "$(field "${line#WRK }" non2xx)" >>"$TMP/rows.tsv"
  say "$name: $ok acked, $((ok > 0 ? cpu_us / ok : 0)) µs CPU each"
}

command -v wrk >/dev/null || { say "wrk is not installed"; exit 1; }
command -v etcd >/dev/null || { say "etcd is not installed (apt-get install etcd-server)"; exit 1; }
if [[ ! -d "$NODE_DIR/node_modules/express" ]]; then
  (cd "$NODE_DIR" && npm install --silent --no-audit --no-fund)
fi
say "signing $POOL webhook bodies"
python3 "$ROOT/bench/make_webhooks.py" --fixtures "$FIX" --secret "$SECRET" --count "$POOL" \
  --out "$TMP/bodies.tsv"
: >"$TMP/rows.tsv"

ingest sqlite "sqlite:$TMP/controller.db"
etcd_up 1
keys0=$(etcd_metric etcd_debugging_mvcc_keys_total)
db0=$(etcd_metric etcd_mvcc_db_total_size_in_use_in_bytes)
ingest etcd1 "etcd:$ETCD_EPS/bench" "${ETCD_PIDS[@]}"
keys1=$(etcd_metric etcd_debugging_mvcc_keys_total)
db1=$(etcd_metric etcd_mvcc_db_total_size_in_use_in_bytes)
acked_etcd1=$(awk -F'\t' '$1 == "etcd1" {print $2}' "$TMP/rows.tsv")
leases=$(etcd_metric etcd_debugging_lease_granted_total)
for p in "${ETCD_PIDS[@]}"; do stop "$p"; done
etcd_up 3
ingest etcd3 "etcd:$ETCD_EPS/bench" "${ETCD_PIDS[@]}"

NODE_PORT=$(pick_port)
start node env WEBHOOK_SIGNATURE_SECRET="$SECRET" EVENTS_FILE="$TMP/node.ndjson" PORT="$NODE_PORT" \
  node "$NODE_DIR/cluster.js"
node_pid=$PID
measure node_cluster "http://127.0.0.1:$NODE_PORT/webhook/whatsapp" "$node_pid"
workers=$(field "$READY" workers)
stop "$node_pid"
for p in "${ETCD_PIDS[@]}"; do stop "$p"; done

# ---- takeover: three controllers on a one-member etcd, kill -9 the leader --
etcd_up 1
declare -a CPID CMET
start_controller() {  # start_controller INDEX NAME: (re)starts controller INDEX
  start "$2" env BRIDGE_CLUSTER_TOKEN=$TOKEN_C BRIDGE_ADMIN_TOKEN=$TOKEN_A \
    "$BUILD_DIR/controller/bridge-controller" --listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 \
    --store="etcd:$ETCD_EPS/takeover" --leader_lease="$LEASE"
  CPID[$1]=$PID
  CMET[$1]=$(field "$READY" metrics)
}
for i in 0 1 2; do start_controller "$i" "c$i"; done
leader_index() {  # the index whose metrics say it leads, else -1
  local i
  for i in 0 1 2; do
    [[ -n ${CPID[$i]} ]] && curl -fsS "http://${CMET[$i]}/metrics" 2>/dev/null |
      grep -q '^bridge_controller_is_leader 1' && { echo "$i"; return; }
  done
  echo -1
}
: >"$TMP/takeover.txt"
for round in $(seq "$TAKEOVERS"); do
  until (( $(leader_index) >= 0 )); do sleep 0.02; done
  victim=$(leader_index)
  t0=$(date +%s%N)
  kill -KILL "${CPID[$victim]}"
  wait "${CPID[$victim]}" 2>/dev/null || true
  CPID[$victim]=""
  until (( $(leader_index) >= 0 )); do sleep 0.02; done  # a 20 ms poll: the resolution
  t1=$(date +%s%N)
  echo $(( (t1 - t0) / 1000000 )) >>"$TMP/takeover.txt"
  say "takeover $round: $(( (t1 - t0) / 1000000 )) ms"
  start_controller "$victim" "c$victim-$round"
done

python3 - "$TMP/rows.tsv" "$TMP/takeover.txt" "$OUT" "$SECS" "$CONNS" "$workers" "$LEASE" \
  "$acked_etcd1" "$((keys1 - keys0))" "$((db1 - db0))" "$leases" <<'EOF'
import statistics, sys
rows_f, take_f, out, secs, conns, workers, lease, acked, keys, db, leases = sys.argv[1:]
rows = {}
for line in open(rows_f):
    name, ok, s, cpu, p99, non2xx = line.rstrip("\n").split("\t")
    rows[name] = dict(ok=int(ok), secs=float(s) / 1e6, cpu=int(cpu), p99=int(p99), non2xx=int(non2xx))
node = rows["node_cluster"]
node_per = node["cpu"] / max(node["ok"], 1)
label = {"sqlite": "bridge, SQLite (WAL, fsync per group commit)",
         "etcd1": "bridge, etcd 1 member (raft + fsync)",
         "etcd3": "bridge, etcd 3 members (quorum of 2 fsyncs)",
         "node_cluster": f"Node reference, cluster module ({workers} processes), append **not fsynced**"}
o = []
o.append("## Cluster capacity (issue #12)\n")
o.append(f"`bench/capacity_bench.sh`: `wrk -t2 -c{conns} -d{secs}s`, unique signed bodies (text and "
         "voice-note deliveries alternating), each configuration fresh. CPU is user + system time "
         "of every process that serves the webhook (gateway, controller and etcd members; every "
         "Node process), read from /proc before and after the run, divided by the 200s wrk read. "
         "wrk and the servers share the same 2 cores.\n")
o.append("| edge | acked | req/s | p99 ms | non-2xx | CPU µs per acked webhook | vs Node |")
o.append("|---|---|---|---|---|---|---|")
for k in ["sqlite", "etcd1", "etcd3", "node_cluster"]:
    r = rows[k]
    per = r["cpu"] / max(r["ok"], 1)
    o.append(f"| {label[k]} | {r['ok']} | {r['ok']/r['secs']:.0f} | {r['p99']/1000:.1f} | {r['non2xx']} "
             f"| {per:.0f} | {per/node_per:.2f}× |")
sq = rows["sqlite"]["cpu"] / max(rows["sqlite"]["ok"], 1)
o.append("")
o.append(f"- **Against the target** (CPU per acked webhook at most half the Node reference's, with "
         f"durability): SQLite {sq/node_per:.2f}× of Node's: **{'met' if sq <= node_per/2 else 'not met'}**.")
if int(acked) > 0:
    o.append(f"- **etcd storage per message** (one-member run): {int(keys)/int(acked):.1f} keys and "
             f"{int(db)/int(acked):.0f} bytes of backend in use per acked webhook (the 7-day dedup key, "
             f"the queued turn, the session record); {leases} leases granted in all: expiring keys "
             "share one lease per expiry bucket, not one each.")
t = [int(x) for x in open(take_f)]
if t:
    lease_ms = float(lease.rstrip("s")) * 1000
    o.append("")
    o.append(f"**Takeover after `kill -9` of the leader** (three controllers, one-member etcd, "
             f"`--leader_lease={lease}`, {len(t)} rounds, time from the kill to another controller's "
             f"`bridge_controller_is_leader 1`, 20 ms poll): min {min(t)} ms, median "
             f"{statistics.median(t):.0f} ms, max {max(t)} ms; target under 2× the lease "
             f"({2*lease_ms:.0f} ms): **{'met' if max(t) < 2*lease_ms else 'not met'}**. "
             "A clean stop (SIGTERM) revokes the lease and hands over within one campaign poll.")
open(out, "w").write("\n".join(o) + "\n")
EOF
say "wrote $OUT"
