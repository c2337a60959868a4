#!/usr/bin/env bash
# Voice-note turns one bridge-worker sustains at saturation, against the
# codec-bound limit measured in the same run (issue #12).
#
# One worker (--voice_input=stream, unpaced: the whole codec path, decode of
# the note and encode of the reply) behind the real controller and gateway;
# whatsapp-sim as the users, elevenlabs-sim answering at once (unpaced reply,
# end markers, no pause). N users each send the hello voice note (5.02 s) at
# the same moment; the run ends when the controller counts N turns done.
#
# Worker CPU per turn (user + system, /proc) against the codec CPU per turn
# (google-benchmark, same machine, same run: decode the note to 16 kHz + encode
# the agent's 5.75 s reply at 16 kHz) gives the efficiency: the share of the
# codec-bound turn rate a worker reaches per core. Wall time on this 2-core
# machine includes the simulators, controller and gateway on the same cores.
#
# Usage: bench/worker_saturation.sh OUT.md   Knobs: BENCH_SAT_TURNS (120).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
OUT="${1:?usage: worker_saturation.sh OUT.md}"
TURNS="${BENCH_SAT_TURNS:-120}"
NOTE="$(cd "$ROOT/../shared/fixtures/audio" && pwd)/voice_note_hello.ogg"
mkdir -p "$BUILD_DIR"
TMP="$(mktemp -d "$BUILD_DIR/saturation-bench.XXXXXX")"
PIDS=()
say() { printf 'saturation: %s\n' "$*" >&2; }
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
trap cleanup EXIT
CLK=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
metric() {  # metric HOST:PORT PATTERN: the value of the first matching line (0 if none)
  curl -fsS "http://$1/metrics" 2>/dev/null |
    awk -v p="$2" 'index($0, p) == 1 && !seen {v = int($2); seen = 1} END {print v + 0}'
}

KEY=sk_bench_saturation SECRET=bench-app-secret TOKEN=bench-graph-token
start el env ELEVENLABS_API_KEY=$KEY "$BUILD_DIR/tools/elevenlabs_sim/elevenlabs-sim" \
  --listen=127.0.0.1:0 --agent_id=bench --reply_pace=0 --emit_final_markers --reply_gap_ms=0 \
  --turn_timeout_s=0
EL=$(field "$READY" http)
start controller "$BUILD_DIR/controller/bridge-controller" --listen=127.0.0.1:0 \
  --metrics_listen=127.0.0.1:0 --store="sqlite:$TMP/c.db"
CTRL=$(field "$READY" grpc) CTRL_METRICS=$(field "$READY" metrics)
start gateway env WEBHOOK_SIGNATURE_SECRET=$SECRET "$BUILD_DIR/gateway/bridge-gateway" \
  --listen=127.0.0.1:0 --controller="$CTRL"
GW=$(field "$READY" http)
start wa env WEBHOOK_SIGNATURE_SECRET=$SECRET WHATSAPP_ACCESS_TOKEN=$TOKEN \
  "$BUILD_DIR/tools/whatsapp_sim/whatsapp-sim" --listen=127.0.0.1:0 \
  --webhook_url="http://$GW/webhook/whatsapp"
WA=$(field "$READY" http)
start worker env WHATSAPP_ACCESS_TOKEN=$TOKEN WHATSAPP_GRAPH_BASE_URL="http://$WA" \
  ELEVENLABS_BASE_URL="http://$EL" ELEVENLABS_AGENT_ID=bench ELEVENLABS_API_KEY=$KEY \
  "$BUILD_DIR/media_worker/bridge-worker" --listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 \
  --worker_id=w1 --controller="$CTRL" --capacity=10000 --voice_input=stream --agent_input_pace=0
WORKER_PID=$PID
if [[ -n ${BENCH_SAT_PROFILE:-} ]]; then  # a CPU profile of the worker (perf, cpu-clock)
  perf record -e cpu-clock -F 1000 -g -o "$BENCH_SAT_PROFILE" -p "$WORKER_PID" 2>/dev/null &
  PIDS+=($!)
fi
# Attached: the controller counts one serving worker.
timeout 30 bash -c "until curl -fsS http://$CTRL_METRICS/metrics | grep -q '^bridge_controller_workers 1'; do sleep 0.05; done" ||
  say "(could not read the worker gauge; going on)"

say "codec CPU per turn (google-benchmark, this machine, now)"
"$BUILD_DIR/bench/audio_bench" --benchmark_filter='BM_DecodeOurs/0/16000$|BM_EncodeOurs/16000$' \
  --benchmark_min_time=0.5 --benchmark_out="$TMP/codec.json" --benchmark_out_format=json >/dev/null 2>&1

say "$TURNS users send a voice note at once"
w0=$(ticks "$WORKER_PID")
t0=$(date +%s%N)
seq "$TURNS" | xargs -P 16 -I{} curl -fsS -o /dev/null -H 'Content-Type: audio/ogg' \
  --data-binary @"$NOTE" "http://$WA/sim/users/1555700{}/voice"
until (( $(metric "$CTRL_METRICS" 'bridge_controller_turns_total{outcome="done"}') >= TURNS )); do
  sleep 0.1  # a poll of the event source, 100 ms resolution on a run of seconds
  (( ($(date +%s%N) - t0) / 1000000000 < 300 )) || { say "only $(metric "$CTRL_METRICS" 'bridge_controller_turns_total{outcome="done"}') of $TURNS turns in 300 s"; exit 1; }
done
t1=$(date +%s%N)
w1=$(ticks "$WORKER_PID")
failed=$(metric "$CTRL_METRICS" 'bridge_controller_turns_total{outcome="failed"}')

python3 - "$TMP/codec.json" "$OUT" "$TURNS" "$(( (t1 - t0) / 1000 ))" \
  "$(( (w1 - w0) * 1000000 / CLK ))" "${failed:-0}" <<'EOF'
import json, sys
codec_f, out, turns, wall_us, worker_us, failed = sys.argv[1:]
turns, wall_us, worker_us = int(turns), int(wall_us), int(worker_us)
b = {x["name"]: x["cpu_time"] * {"ns": 1e-3, "us": 1, "ms": 1e3}[x["time_unit"]]
     for x in json.load(open(codec_f))["benchmarks"]}
dec = b["BM_DecodeOurs/0/16000"]
enc = b["BM_EncodeOurs/16000"]
codec_ms = (dec + enc) / 1000
worker_ms = worker_us / turns / 1000
eff = codec_ms / worker_ms
o = ["### One worker at saturation: voice-note turns\n",
     f"`bench/worker_saturation.sh`: {turns} users each send the hello note (5.02 s) at once to one "
     "bridge-worker (`--voice_input=stream`, unpaced: it decodes every note and encodes every "
     "reply), elevenlabs-sim answering at once with the 5.75 s reply. Codec CPU per turn is "
     "google-benchmark's, in the same run: decode the note to 16 kHz "
     f"({dec/1000:.1f} ms) + encode the reply at 16 kHz ({enc/1000:.1f} ms).\n",
     "| turns | failed | wall s | turns/s (2 shared cores) | worker CPU ms per turn | codec CPU ms per turn "
     "| codec-bound turns/s per core | worker turns/s per core | efficiency |",
     "|---|---|---|---|---|---|---|---|---|",
     f"| {turns} | {failed} | {wall_us/1e6:.1f} | {turns/(wall_us/1e6):.1f} | {worker_ms:.1f} | {codec_ms:.1f} "
     f"| {1000/codec_ms:.1f} | {1000/worker_ms:.1f} | {eff*100:.0f} % |",
     "",
     f"- **Against the target** (a worker at ≥ 90 % of the codec-bound turn rate): "
     f"{eff*100:.0f} %: **{'met' if eff >= 0.9 else 'not met'}**. The rest of a turn's CPU is the "
     "agent WebSocket (base64 audio in JSON), the Graph API calls and the controller link.",
     "- Wall time is not the worker's limit here: the simulators, controller and gateway share the "
     "same 2 cores; CPU per turn is what sizes a worker (turns/s per core = 1000 / ms per turn)."]
open(out, "w").write("\n".join(o) + "\n")
EOF
say "wrote $OUT"
