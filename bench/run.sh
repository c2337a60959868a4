#!/usr/bin/env bash
# Runs every benchmark in one go and rewrites the results file (default
# docs/benchmarks.md). Called by `tools/bridge.sh bench`; BUILD_DIR must hold
# a built tree. Reference tools run in the same invocation, on the same
# machine, on the same fixtures, so the numbers sit side by side.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
OUT="${1:-$ROOT/docs/benchmarks.md}"
FIX="$(cd "$ROOT/../shared/fixtures/audio" && pwd)"
SPAWNS="${BENCH_SPAWNS:-30}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

say() { printf 'bench: %s\n' "$*" >&2; }

say "codec micro-benchmarks (google-benchmark)"
"$BUILD_DIR/bench/audio_bench" --benchmark_min_time=0.5 \
  --benchmark_out="$TMP/audio.json" --benchmark_out_format=json >&2

# time_per_run NAME CMD...: mean wall time per run over $SPAWNS runs, in µs.
time_per_run() {
  local name=$1
  shift
  "$@" >/dev/null 2>&1 || { say "$name failed: $*"; echo -e "$name\tNA"; return; }
  local start end
  start=$(date +%s%N)
  for _ in $(seq "$SPAWNS"); do "$@" >/dev/null 2>&1; done
  end=$(date +%s%N)
  echo -e "$name\t$(((end - start) / SPAWNS / 1000))"
}

say "one process per note: bridgectl, opus-tools, ffmpeg ($SPAWNS runs each)"
CTL="$BUILD_DIR/tools/bridgectl"
NOTE="$FIX/voice_note_hello.ogg"
PCM="$FIX/agent_reply_16k.s16le"
{
  time_per_run decode_bridgectl "$CTL" audio decode "$NOTE" "$TMP/o.raw" --rate 16000
  time_per_run decode_opusdec opusdec --quiet --rate 16000 "$NOTE" "$TMP/o.raw"
  # What the Node guide does per note: fluent-ffmpeg spawning ffmpeg to s16le 16 kHz mono.
  time_per_run decode_ffmpeg ffmpeg -nostdin -v error -y -i "$NOTE" -f s16le -acodec pcm_s16le \
    -ar 16000 -ac 1 "$TMP/o.raw"
  time_per_run encode_bridgectl "$CTL" audio encode "$PCM" "$TMP/o.ogg" --rate 16000
  time_per_run encode_opusenc opusenc --quiet --raw --raw-rate 16000 --raw-chan 1 --bitrate 24 \
    --framesize 20 "$PCM" "$TMP/o.ogg"
  time_per_run encode_ffmpeg ffmpeg -nostdin -v error -y -f s16le -ar 16000 -ac 1 -i "$PCM" \
    -c:a libopus -b:a 24k -application voip -frame_duration 20 -f ogg "$TMP/o.ogg"
} >"$TMP/spawn.tsv"

# Webhook ingest, bridge vs the seed guide's Node handler (~30 s). A failure
# here costs only its section: the codec numbers above are still reported.
INGEST=()
say "webhook ingest: bridge-gateway + bridge-controller vs the Node reference (wrk)"
if BUILD_DIR="$BUILD_DIR" "$ROOT/bench/ingest_bench.sh" "$TMP/ingest.tsv"; then
  INGEST=(--ingest "$TMP/ingest.tsv")
else
  say "webhook ingest benchmark failed; writing the report without it"
fi

# A voice-note turn through the whole cluster with simulators that take no
# think time (~1 min): what the bridge itself adds.
TURN=()
say "voice-note turn latency through tools/bridge.sh up (simulators, no think time)"
if BUILD_DIR="$BUILD_DIR" python3 "$ROOT/bench/turn_latency.py" "$TMP/turn.json"; then
  TURN=(--turn "$TMP/turn.json")
else
  say "turn latency benchmark failed; writing the report without it"
fi

# Media.Converse at 50, 200 and 500 concurrent streams on one worker (~40 s).
CONVERSE=()
say "Media.Converse: concurrent streams on one bridge-worker (bench/converse_load)"
if BUILD_DIR="$BUILD_DIR" "$ROOT/bench/converse_bench.sh" "$TMP/converse.tsv"; then
  CONVERSE=(--converse "$TMP/converse.tsv")
else
  say "Media.Converse benchmark failed; writing the report without it"
fi

# WhatsApp calls at 10 to 100 concurrent calls on one worker (~4 min).
CALLS=()
say "WhatsApp calls: concurrent calls on one bridge-worker (bench/call_load)"
if BUILD_DIR="$BUILD_DIR" "$ROOT/bench/call_bench.sh" "$TMP/calls.tsv"; then
  CALLS=(--calls "$TMP/calls.tsv")
else
  say "calls benchmark failed; writing the report without it"
fi

# Cluster capacity (issue #12): ingest CPU per acked webhook on SQLite, a
# one-member and a three-member etcd, against Node in cluster mode; leader
# takeover after kill -9 (~3 min).
say "cluster capacity: stores side by side with Node's cluster mode, then leader takeover"
if ! BUILD_DIR="$BUILD_DIR" "$ROOT/bench/capacity_bench.sh" "$TMP/capacity.md"; then
  say "capacity benchmark failed; writing the report without it"
  : >"$TMP/capacity.md"
fi
say "one worker at saturation: voice-note turns against the codec-bound limit"
if BUILD_DIR="$BUILD_DIR" "$ROOT/bench/worker_saturation.sh" "$TMP/saturation.md"; then
  { echo; cat "$TMP/saturation.md"; } >>"$TMP/capacity.md"
else
  say "worker saturation benchmark failed; writing the report without it"
fi

python3 "$ROOT/bench/report.py" --audio "$TMP/audio.json" --spawn "$TMP/spawn.tsv" \
  --spawns "$SPAWNS" --command "tools/bridge.sh bench" "${INGEST[@]}" "${TURN[@]}" \
  "${CONVERSE[@]}" "${CALLS[@]}" >"$OUT"
if [[ -s "$TMP/capacity.md" ]]; then
  echo >>"$OUT"
  cat "$TMP/capacity.md" >>"$OUT"
fi
say "wrote $OUT"
