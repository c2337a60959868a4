#!/usr/bin/env bash
# Webhook-ingest benchmark (issue #5): the bridge's edge (bridge-gateway in
# front of bridge-controller, 200 only once the batch is fsynced in SQLite)
# against the seed guide's express handler (bench/node_reference), both driven
# by the same wrk run shape with uniquely-identified, correctly signed bodies.
#
# Usage: bench/ingest_bench.sh OUT.tsv   (BUILD_DIR must hold built binaries)
# OUT.tsv rows are "target<TAB>key<TAB>value"; bench/report.py reads them.
# Knobs: BENCH_INGEST_SECONDS (10), BENCH_INGEST_THREADS (2),
#        BENCH_INGEST_CONNECTIONS (32), BENCH_INGEST_POOL (bodies, 150000).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
OUT="${1:?usage: ingest_bench.sh OUT.tsv}"
FIX="$(cd "$ROOT/../shared/fixtures/webhooks" && pwd)"
SECS="${BENCH_INGEST_SECONDS:-10}"
THREADS="${BENCH_INGEST_THREADS:-2}"
CONNS="${BENCH_INGEST_CONNECTIONS:-32}"
# Sized above what either server can take in $SECS on a small machine, so
# message ids do not repeat; wrk reports any repeats as "duplicates".
POOL="${BENCH_INGEST_POOL:-150000}"
SECRET=fixture-app-secret
NODE_DIR="$ROOT/bench/node_reference"

# Data lives under the build tree, not /tmp: /tmp may be tmpfs, where fsync is
# free and the bridge's durability would cost nothing.
mkdir -p "$BUILD_DIR"
TMP="$(mktemp -d "$BUILD_DIR/ingest-bench.XXXXXX")"
PIDS=()

say() { printf 'ingest: %s\n' "$*" >&2; }

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
trap cleanup EXIT

# metric HOST:PORT NAME LABEL...: the value of a Prometheus sample whose line
# holds NAME and every LABEL (prometheus-cpp's label order is not ours to fix).
metric() {
  local addr=$1 name=$2
  shift 2
  python3 - "$addr" "$name" "$@" <<'EOF'
import sys, urllib.request
addr, name, labels = sys.argv[1], sys.argv[2], sys.argv[3:]
for line in urllib.request.urlopen(f"http://{addr}/metrics", timeout=5).read().decode().splitlines():
    key, _, val = line.rpartition(" ")
    if key.split("{")[0] == name and all(l in key for l in labels):
        print(int(float(val))); break
else:
    print(0)
EOF
}

# run_wrk TARGET URL: one wrk run; its done() line becomes TSV rows.
run_wrk() {
  local target=$1 url=$2 line kv
  say "$target: wrk -t$THREADS -c$CONNS -d${SECS}s $url"
  wrk -t"$THREADS" -c"$CONNS" -d"${SECS}s" --latency -s "$ROOT/bench/webhook.lua" "$url" \
    -- "$TMP/bodies.tsv" "$THREADS" >"$TMP/$target.wrk"
  sed -n '/^Running/,/^Transfer/p' "$TMP/$target.wrk" >&2
  line=$(grep '^WRK ' "$TMP/$target.wrk") || { say "$target: wrk printed no summary"; exit 1; }
  for kv in ${line#WRK }; do printf '%s\t%s\t%s\n' "$target" "${kv%%=*}" "${kv#*=}" >>"$OUT"; done
  WRK_LINE=$line
}

command -v wrk >/dev/null || { say "wrk is not installed (apt-get install wrk)"; exit 1; }
if [[ ! -d "$NODE_DIR/node_modules/express" ]]; then
  say "npm install in bench/node_reference"
  (cd "$NODE_DIR" && npm install --silent --no-audit --no-fund)
fi

say "signing $POOL webhook bodies (unique message ids)"
python3 "$ROOT/bench/make_webhooks.py" --fixtures "$FIX" --secret "$SECRET" --count "$POOL" \
  --out "$TMP/bodies.tsv"

: >"$OUT"
{
  printf 'run\tthreads\t%s\nrun\tconnections\t%s\nrun\tseconds\t%s\nrun\tpool\t%s\n' \
    "$THREADS" "$CONNS" "$SECS" "$POOL"
  printf 'run\tcores\t%s\nrun\tdata_fs\t%s\n' "$(nproc)" "$(findmnt -no FSTYPE -T "$TMP" 2>/dev/null || stat -f -c %T "$TMP")"
  printf 'run\twrk\t%s\nrun\tnode\t%s\nrun\texpress\t%s\n' "$(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)" \
    "$(node --version)" "$(node -p "require('$NODE_DIR/node_modules/express/package.json').version")"
} >>"$OUT"

# ---- the bridge: controller + gateway, fresh SQLite ----------------------
# No worker drains the queue here: lift the bound on queued turns (else
# Deliver is refused past 10000 and the run measures 503s).
start controller "$BUILD_DIR/controller/bridge-controller" --listen=127.0.0.1:0 \
  --metrics_listen=127.0.0.1:0 --store="sqlite:$TMP/controller.db" --max_pending_turns=100000000
CTRL_PID=$PID CTRL_GRPC=$(field "$READY" grpc) CTRL_METRICS=$(field "$READY" metrics)
# The secret travels in the environment, as in production, not in argv.
start gateway env WEBHOOK_SIGNATURE_SECRET="$SECRET" "$BUILD_DIR/gateway/bridge-gateway" \
  --listen=127.0.0.1:0 --controller="$CTRL_GRPC"
GW_PID=$PID GW_HTTP=$(field "$READY" http)

run_wrk bridge "http://$GW_HTTP/webhook/whatsapp"
ok=$(( $(field "$WRK_LINE" requests) - $(field "$WRK_LINE" non2xx) ))

# wrk stops with up to CONNS requests in flight; the gateway still finishes
# them. Poll until its acked count stops moving (that is settling, not
# readiness), then compare all three counts.
acked=-1
for _ in $(seq 50); do
  a=$(metric "$GW_HTTP" bridge_gateway_webhooks_total 'outcome="acked"')
  [[ $a == "$acked" ]] && break
  acked=$a
  sleep 0.1
done
queued=$(metric "$CTRL_METRICS" bridge_controller_ingest_events_total 'kind="message"' 'outcome="queued"')
dups=$(metric "$CTRL_METRICS" bridge_controller_ingest_events_total 'kind="message"' 'outcome="duplicate"')
commit_us=$(python3 - "$CTRL_METRICS" <<'EOF'
import sys, urllib.request
text = urllib.request.urlopen(f"http://{sys.argv[1]}/metrics", timeout=5).read().decode()
vals = {l.split(" ")[0]: float(l.split(" ")[-1]) for l in text.splitlines() if l.startswith("bridge_controller_ingest_commit_seconds_")}
n = vals.get("bridge_controller_ingest_commit_seconds_count", 0)
print(int(vals.get("bridge_controller_ingest_commit_seconds_sum", 0) / n * 1e6) if n else 0)
EOF
)
# The edge's floor: an empty GET /healthz on one connection touches neither
# the controller nor the store, so the report can tell HTTP-layer latency
# from durability cost. (wrk's text "50%   1.23ms" turned into µs.)
healthz_p50_us=$(wrk -t1 -c1 -d1s --latency "http://$GW_HTTP/healthz" | awk '$1 == "50%" {
  v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v)
  print int(v * (u == "us" ? 1 : u == "ms" ? 1000 : 1000000)) }')
inflight=$((queued - ok))
verdict=FAIL
if ((queued == acked && inflight >= 0 && inflight <= CONNS)); then verdict=OK; fi
say "verify bridge: wrk saw $ok 200s; gateway acked $acked; controller queued $queued" \
  "(duplicates $dups); $inflight answered after wrk stopped (<= $CONNS connections): $verdict"
{
  printf 'bridge\tok\t%s\nbridge\tacked\t%s\nbridge\tqueued\t%s\nbridge\tserver_duplicates\t%s\n' \
    "$ok" "$acked" "$queued" "$dups"
  printf 'bridge\tverify\t%s\nbridge\tcommit_mean_us\t%s\n' "$verdict" "$commit_us"
  printf 'bridge\thealthz_p50_us\t%s\n' "$healthz_p50_us"
  printf 'bridge\trss_gateway_kib\t%s\nbridge\trss_controller_kib\t%s\n' \
    "$(status_kib "$GW_PID" VmHWM)" "$(status_kib "$CTRL_PID" VmHWM)"
  printf 'bridge\trss_kib\t%s\n' $(( $(status_kib "$GW_PID" VmHWM) + $(status_kib "$CTRL_PID" VmHWM) ))
} >>"$OUT"
# Gateway first: it drains its requests into a still-running controller.
stop "$GW_PID"
stop "$CTRL_PID"

# ---- the Node reference -------------------------------------------------
start node env WEBHOOK_SIGNATURE_SECRET="$SECRET" EVENTS_FILE="$TMP/node-events.ndjson" \
  node "$NODE_DIR/server.js"
NODE_PID=$PID NODE_HTTP=$(field "$READY" http)
run_wrk node "http://$NODE_HTTP/webhook/whatsapp"
ok=$(( $(field "$WRK_LINE" requests) - $(field "$WRK_LINE" non2xx) ))
rss=$(status_kib "$NODE_PID" VmHWM)
stop "$NODE_PID"
# After the stop every append has landed: lines in the file = bodies it kept.
appended=$(wc -l <"$TMP/node-events.ndjson")
say "verify node: wrk saw $ok 200s; $appended bodies appended (not fsynced)"
printf 'node\tok\t%s\nnode\tappended\t%s\nnode\trss_kib\t%s\n' "$ok" "$appended" "$rss" >>"$OUT"
say "wrote $OUT"
