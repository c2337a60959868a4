#!/usr/bin/env bash
# Media.Converse load benchmark (issue #6): N concurrent streams on one
# bridge-worker, for each N a fresh bridge-controller + elevenlabs-sim +
# bridge-worker on port 0, driven by bench/converse_load (callback API, one
# timer thread, input paced at real time; the simulated agent replies at real
# time). Everything shares the machine's cores.
#
# Usage: bench/converse_bench.sh OUT.tsv   (BUILD_DIR must hold built binaries)
# OUT.tsv: a header row, then one row per N (see COLUMNS below); lines
# starting with "#" carry run facts ("# key<TAB>value"). bench/report.py
# --converse reads it.
# Knobs: BENCH_CONVERSE_STREAMS ("50 200 500"), BENCH_CONVERSE_TIMEOUT (180 s),
#        BENCH_CONVERSE_CHANNELS (8).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
OUT="${1:?usage: converse_bench.sh OUT.tsv}"
STREAMS="${BENCH_CONVERSE_STREAMS:-50 200 500}"
TIMEOUT="${BENCH_CONVERSE_TIMEOUT:-180}"
CHANNELS="${BENCH_CONVERSE_CHANNELS:-8}"
AGENT=bench-agent
LOAD="$BUILD_DIR/bench/converse_load"

mkdir -p "$BUILD_DIR"
TMP="$(mktemp -d "$BUILD_DIR/converse-bench.XXXXXX")"
PIDS=()

say() { printf 'converse: %s\n' "$*" >&2; }

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
trap cleanup EXIT

dialable() { sed -e 's/^0\.0\.0\.0:/127.0.0.1:/' <<<"$1"; }

# CPU seconds (user + system) of a live process, from /proc/PID/stat.
cpu_seconds() {
  awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / hz }' "/proc/$1/stat"
}

# worker_metrics ADDR: the numbers this benchmark takes from the worker's
# /metrics, as "key=value" words. Percentiles interpolate linearly inside the
# histogram bucket they fall in (the bucket bounds set the resolution).
worker_metrics() {
  python3 - "$1" <<'EOF'
import sys, urllib.request
text = urllib.request.urlopen(f"http://{sys.argv[1]}/metrics", timeout=10).read().decode()
buckets, vals = [], {}
for line in text.splitlines():
    if line.startswith("#") or " " not in line:
        continue
    key, _, val = line.rpartition(" ")
    if key.startswith("bridge_converse_chunk_seconds_bucket"):
        le = key.split('le="', 1)[1].split('"', 1)[0]
        buckets.append((float("inf") if le == "+Inf" else float(le), float(val)))
    else:
        vals[key] = float(val)
buckets.sort()
total = buckets[-1][1] if buckets else 0
def pct(q):
    if total == 0:
        return float("nan")
    rank, lo, below = q * total, 0.0, 0.0
    for le, cum in buckets:
        if cum >= rank:
            if le == float("inf"):
                return lo  # past the last bound: report the bound
            return lo + (le - lo) * ((rank - below) / (cum - below) if cum > below else 1)
        lo, below = le, cum
    return lo
get = lambda name, *labels: int(sum(v for k, v in vals.items()
                                    if k.split("{")[0] == name and all(l in k for l in labels)))
out = {"p50_ms": f"{pct(0.5) * 1000:.3f}", "p99_ms": f"{pct(0.99) * 1000:.3f}", "chunks": int(total),
       "chunk_sum_s": f"{vals.get('bridge_converse_chunk_seconds_sum', 0):.4f}",
       "drops_out": get("bridge_converse_dropped_audio_total", 'direction="out"'),
       "drops_in": get("bridge_converse_dropped_audio_total", 'direction="in"'),
       "ended_ok": get("bridge_converse_streams_total", 'outcome="ok"'),
       "ended_error": get("bridge_converse_streams_total", 'outcome="error"'),
       "ended_cancelled": get("bridge_converse_streams_total", 'outcome="cancelled"'),
       "process_cpu_s": f"{vals.get('process_cpu_seconds_total', -1):.2f}"}
print(" ".join(f"{k}={v}" for k, v in out.items()))
EOF
}

[[ -x $LOAD ]] || { say "$LOAD is not built (ninja -C build converse_load)"; exit 1; }
# Each stream holds an agent WebSocket on the worker and the simulator; raise
# the descriptor limit as far as this shell may.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true

COLUMNS="n p50_ms p99_ms chunks cpu_s cpu_ms_per_stream_audio_s sim_cpu_s rss_idle_kib rss_peak_kib kib_per_stream ok failed drops_out drops_in audio_out_s audio_in_s min_stream_audio_s max_stream_audio_s turn_ends wall_s buckets_ms"
: >"$OUT"
{
  printf '# cores\t%s\n' "$(nproc)"
  printf '# nofile\t%s\n' "$(ulimit -n)"
  printf '# channels\t%s\n' "$CHANNELS"
  tr ' ' '\t' <<<"$COLUMNS"
} >>"$OUT"

for N in $STREAMS; do
  say "N=$N: fresh controller + elevenlabs-sim + worker"
  start controller "$BUILD_DIR/controller/bridge-controller" --env_file=/nonexistent \
    --listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 --store="sqlite:$TMP/controller-$N.db"
  CTRL_PID=$PID CTRL_GRPC=$(dialable "$(field "$READY" grpc)")
  start sim "$BUILD_DIR/tools/elevenlabs_sim/elevenlabs-sim" --env_file=/nonexistent \
    --listen=127.0.0.1:0 --agent_id="$AGENT" --max_conversations=0 --reply_pace=1 \
    --emit_final_markers --reply_gap_ms=0 --turn_timeout_s=0 --ping_interval_ms=5000
  SIM_PID=$PID SIM_HTTP=$(dialable "$(field "$READY" http)")
  start worker env ELEVENLABS_BASE_URL="http://$SIM_HTTP" ELEVENLABS_AGENT_ID="$AGENT" \
    WHATSAPP_ACCESS_TOKEN=x "$BUILD_DIR/media_worker/bridge-worker" --env_file=/nonexistent --voice_input=stream \
    --listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 --worker_id="bench-$N" \
    --controller="$CTRL_GRPC" --capacity=1000
  W_PID=$PID W_GRPC=$(dialable "$(field "$READY" grpc)") W_METRICS=$(dialable "$(field "$READY" metrics)")

  rss_idle=$(status_kib "$W_PID" VmRSS)
  cpu0=$(cpu_seconds "$W_PID") sim0=$(cpu_seconds "$SIM_PID")
  say "N=$N: converse_load --streams=$N (worker idle RSS ${rss_idle} KiB)"
  rc=0
  "$LOAD" --worker="$W_GRPC" --streams="$N" --timeout="${TIMEOUT}s" --channels="$CHANNELS" \
    >"$TMP/load-$N.out" 2>"$TMP/load-$N.err" || rc=$?
  cat "$TMP/load-$N.err" >&2
  line=$(grep '^CONVERSE ' "$TMP/load-$N.out" || true)
  say "N=$N: ${line:-converse_load printed no summary (exit $rc)}"
  cpu1=$(cpu_seconds "$W_PID") sim1=$(cpu_seconds "$SIM_PID")
  rss_peak=$(status_kib "$W_PID" VmHWM)
  m=$(worker_metrics "$W_METRICS")
  say "N=$N: worker $m"
  stop "$W_PID"
  stop "$SIM_PID"
  stop "$CTRL_PID"
  if [[ -z $line ]]; then
    say "N=$N: no load summary; worker log tail:"
    tail -n 20 "$TMP/worker.log" >&2
    line="CONVERSE ok=0 failed=$N audio_seconds=0 wall_s=0 input_seconds_per_stream=0"
  fi

  ok=$(field "$line" ok) failed=$(field "$line" failed)
  audio_out=$(field "$line" audio_seconds) wall=$(field "$line" wall_s)
  audio_in=$(awk -v n="$ok" -v s="$(field "$line" input_seconds_per_stream)" 'BEGIN {printf "%.1f", n * s}')
  cpu=$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN {printf "%.2f", b - a}')
  sim_cpu=$(awk -v a="$sim0" -v b="$sim1" 'BEGIN {printf "%.2f", b - a}')
  # Worker CPU per second of stream audio handled (agent audio out + user audio in).
  cpu_per=$(awk -v c="$cpu" -v o="$audio_out" -v i="$audio_in" \
    'BEGIN {printf "%.2f", ((o + i) > 0 ? c * 1000 / (o + i) : 0)}')
  per_stream=$(awk -v a="$rss_idle" -v b="$rss_peak" -v n="$N" 'BEGIN {printf "%.0f", (b - a) / n}')
  row=("$N" "$(field "$m" p50_ms)" "$(field "$m" p99_ms)" "$(field "$m" chunks)" "$cpu" "$cpu_per"
       "$sim_cpu" "$rss_idle" "$rss_peak" "$per_stream" "$ok" "$failed" "$(field "$m" drops_out)"
       "$(field "$m" drops_in)" "$audio_out" "$audio_in" "$(field "$line" min_stream_audio_s)"
       "$(field "$line" max_stream_audio_s)" "$(field "$line" turn_ends)" "$wall"
       "0.1,0.25,0.5,1,2.5,5,10,25,50,100,250,500,1000,2500")
  (IFS=$'\t'; printf '%s\n' "${row[*]}") >>"$OUT"
done
say "wrote $OUT"
