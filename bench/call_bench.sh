#!/usr/bin/env bash
# Calls benchmark (issue #15): N concurrent WhatsApp calls on one
# bridge-worker. For each N a fresh cluster on port 0 (elevenlabs-sim
# answering in real time, bridge-controller, bridge-gateway, whatsapp-sim,
# one worker on loopback media); bench/call_load places the N calls as
# Meta's side would, talks for BENCH_CALL_SECONDS and hangs up. Everything
# shares the machine's cores, the load client included.
#
# Usage: bench/call_bench.sh OUT.tsv   (BUILD_DIR must hold built binaries)
# OUT.tsv: "# key<TAB>value" facts, a header row, one row per N.
# Knobs: BENCH_CALLS ("10 25 50 75 100"), BENCH_CALL_SECONDS (20), BENCH_CALL_PROFILE
# (a path: perf records the worker's CPU there during the load).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
OUT="${1:?usage: call_bench.sh OUT.tsv}"
CALLS="${BENCH_CALLS:-10 25 50 75 100}"
SECONDS_PER_CALL="${BENCH_CALL_SECONDS:-20}"
LOAD="$BUILD_DIR/bench/call_load"
KEY=sk_bench_calls SECRET=bench-app-secret TOKEN=bench-graph-token

mkdir -p "$BUILD_DIR"
TMP="$(mktemp -d "$BUILD_DIR/call-bench.XXXXXX")"
PIDS=()
say() { printf 'calls: %s\n' "$*" >&2; }
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
trap cleanup EXIT
[[ -n ${BENCH_KEEP:-} ]] && trap - EXIT  # keep the logs

cpu_seconds() {
  awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / hz }' "/proc/$1/stat"
}

# The worker's call histograms as p50/p99 (linear inside a bucket) and counters.
worker_metrics() {
  python3 - "$1" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(f"http://{sys.argv[1]}/metrics", timeout=10).read().decode()
hist, vals = {}, {}
for line in text.splitlines():
    if line.startswith("#") or " " not in line:
        continue
    key, _, val = line.rpartition(" ")
    name = key.split("{")[0]
    if name.endswith("_bucket"):
        le = key.split('le="', 1)[1].split('"', 1)[0]
        hist.setdefault(name[:-7], []).append((float("inf") if le == "+Inf" else float(le), float(val)))
    else:
        vals[key] = float(val)
def pct(name, q):
    b = sorted(hist.get(name, []))
    total = b[-1][1] if b else 0
    if total == 0:
        return float("nan")
    rank, lo, below = q * total, 0.0, 0.0
    for le, cum in b:
        if cum >= rank:
            if le == float("inf"):
                return lo
            return lo + (le - lo) * ((rank - below) / (cum - below) if cum > below else 1)
        lo, below = le, cum
    return lo
out = {}
for short, name in (("in", "bridge_worker_call_to_agent_seconds"), ("out", "bridge_worker_call_to_caller_seconds")):
    out[f"{short}_p50_ms"] = f"{pct(name, 0.5) * 1000:.2f}"
    out[f"{short}_p99_ms"] = f"{pct(name, 0.99) * 1000:.2f}"
out["answered"] = int(vals.get('bridge_worker_calls_total{outcome="answered"}', 0))
out["barge_ins"] = int(vals.get("bridge_worker_call_barge_ins_total", 0))
print(" ".join(f"{k}={v}" for k, v in out.items()))
PY
}

[[ -x $LOAD ]] || { say "$LOAD is not built (ninja -C build call_load)"; exit 1; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

COLUMNS="n ok failed setup_p50_ms setup_p99_ms in_p50_ms in_p99_ms out_p50_ms out_p99_ms cpu_s cpu_ms_per_call_s raw_codec_ms_per_call_s rss_idle_kib rss_peak_kib kib_per_call received lost seconds"
{
  printf '# cores\t%s\n' "$(nproc)"
  tr ' ' '\t' <<<"$COLUMNS"
} >"$OUT"

for N in $CALLS; do
  say "N=$N: fresh cluster"
  start el env ELEVENLABS_API_KEY=$KEY "$BUILD_DIR/tools/elevenlabs_sim/elevenlabs-sim" \
    --env_file=/nonexistent --listen=127.0.0.1:0 --agent_id=bench --reply_pace=1 \
    --reply_gap_ms=0 --turn_timeout_s=0 --max_conversations=0
  EL_PID=$PID EL=$(field "$READY" http)
  start controller "$BUILD_DIR/controller/bridge-controller" --env_file=/nonexistent \
    --listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 --store="sqlite:$TMP/c-$N.db"
  CTRL_PID=$PID CTRL=$(field "$READY" grpc) CTRL_METRICS=$(field "$READY" metrics)
  start gateway env WEBHOOK_SIGNATURE_SECRET=$SECRET "$BUILD_DIR/gateway/bridge-gateway" \
    --env_file=/nonexistent --listen=127.0.0.1:0 --controller="$CTRL"
  GW_PID=$PID GW=$(field "$READY" http)
  start wa env WEBHOOK_SIGNATURE_SECRET=$SECRET WHATSAPP_ACCESS_TOKEN=$TOKEN \
    "$BUILD_DIR/tools/whatsapp_sim/whatsapp-sim" --env_file=/nonexistent --listen=127.0.0.1:0 \
    --webhook_url="http://$GW/webhook/whatsapp"
  WA_PID=$PID WA=$(field "$READY" http)
  start worker env WHATSAPP_ACCESS_TOKEN=$TOKEN WHATSAPP_GRAPH_BASE_URL="http://$WA" \
    ELEVENLABS_BASE_URL="http://$EL" ELEVENLABS_AGENT_ID=bench ELEVENLABS_API_KEY=$KEY \
    "$BUILD_DIR/media_worker/bridge-worker" --env_file=/nonexistent --listen=127.0.0.1:0 \
    --metrics_listen=127.0.0.1:0 --worker_id=calls --controller="$CTRL" --capacity=4000 \
    --max_calls=2000 --media_ips=127.0.0.1 --voice_input=stream
  W_PID=$PID W_METRICS=$(field "$READY" metrics)
  # Calls offered before the worker attaches wait for it (held), inflating setup: wait first.
  timeout 30 bash -c "until curl -fsS http://$CTRL_METRICS/metrics | grep -q '^bridge_controller_workers 1'; do sleep 0.05; done" ||
    { say "N=$N: the worker never attached"; exit 1; }
  rss_idle=$(status_kib "$W_PID" VmRSS)
  cpu0=$(cpu_seconds "$W_PID")
  if [[ -n ${BENCH_CALL_PROFILE:-} ]]; then
    perf record -e cpu-clock -F 999 -g -o "$BENCH_CALL_PROFILE" -p "$W_PID" 2>/dev/null &
    PIDS+=($!)
  fi
  say "N=$N: call_load --calls=$N --duration=${SECONDS_PER_CALL}s"
  line=$("$LOAD" --whatsapp_sim="$WA" --calls="$N" --duration="${SECONDS_PER_CALL}s" 2>"$TMP/load-$N.err" |
    grep '^CALLS ' || true)
  cat "$TMP/load-$N.err" >&2
  cpu1=$(cpu_seconds "$W_PID")
  rss_peak=$(status_kib "$W_PID" VmHWM)
  m=$(worker_metrics "$W_METRICS")
  say "N=$N: ${line:-no summary} | worker $m"
  for p in "$W_PID" "$WA_PID" "$GW_PID" "$CTRL_PID" "$EL_PID"; do stop "$p"; done
  [[ -n $line ]] || line="CALLS n=$N ok=0 failed=$N"
  ok=$(field "$line" ok)
  cpu=$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN {printf "%.2f", b - a}')
  # Worker CPU per second of one call (both directions, the agent socket, SRTP, ICE).
  per=$(awk -v c="$cpu" -v n="$ok" -v s="$SECONDS_PER_CALL" 'BEGIN {printf "%.2f", (n > 0 ? c * 1000 / (n * s) : 0)}')
  raw=$(awk -v u="$(field "$line" raw_codec_us_per_call_s)" 'BEGIN {printf "%.2f", u / 1000}')
  kib=$(awk -v a="$rss_idle" -v b="$rss_peak" -v n="$N" 'BEGIN {printf "%.0f", (b - a) / n}')
  row=("$N" "$ok" "$(field "$line" failed)" "$(field "$line" setup_p50_ms)" "$(field "$line" setup_p99_ms)"
       "$(field "$m" in_p50_ms)" "$(field "$m" in_p99_ms)" "$(field "$m" out_p50_ms)" "$(field "$m" out_p99_ms)"
       "$cpu" "$per" "$raw" "$rss_idle" "$rss_peak" "$kib" "$(field "$line" received)"
       "$(field "$line" lost)" "$SECONDS_PER_CALL")
  (IFS=$'\t'; printf '%s\n' "${row[*]}") >>"$OUT"
done
say "wrote $OUT"
