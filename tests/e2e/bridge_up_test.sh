#!/usr/bin/env bash
# `tools/bridge.sh up` brings up the controller, two workers and the gateway,
# each answering on the address its READY line gave, and on SIGTERM stops every
# one of them (no orphans) and exits 0. All ports are 0, so two runs in
# parallel do not collide. Waits on output, never sleeps to synchronise.
# With --cluster: etcd, three controllers (one leads), two gateways.
set -euo pipefail
ROOT="$1"
BUILD="$2"
MODE="${3:-}"
WORK="$(mktemp -d)"
OUT="$WORK/up.out"
cleanup() {
  [[ -n "${PGID:-}" ]] && kill -KILL -- "-$PGID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; echo "--- bridge.sh output ---"; cat "$OUT"; exit 1; }

export BUILD_DIR="$BUILD" BRIDGE_SKIP_BUILD=1 BRIDGE_RUN_DIR="$WORK/run" BRIDGE_DATA_DIR="$WORK"
export CONTROLLER_PORT=0 CONTROLLER_METRICS_PORT=0 WORKER1_PORT=0 WORKER1_METRICS_PORT=0
export WORKER2_PORT=0 WORKER2_METRICS_PORT=0 GATEWAY_PORT=0
# No real accounts: the simulators must stand in (a developer's .env is not read
# because ROOT has none in CI; the variables below make sure of it here too).
export ELEVENLABS_AGENT_ID= WHATSAPP_ACCESS_TOKEN=
# etcd cannot take port 0: two ports nothing listens on now.
free_port() {
  local p
  while :; do
    p=$(shuf -i 20000-60000 -n 1)
    (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}
export ETCD_PORT=$(free_port) ETCD_PEER_PORT=$(free_port)
setsid "$ROOT/tools/bridge.sh" up $MODE >"$OUT" 2>&1 </dev/null &
PID=$!
PGID=$PID

# Await the banner; tail -F wakes on every line, and the timeout only guards a hang.
# The banner's last line (the outbox curl line): the whole banner is written.
timeout 120 grep -q -m1 'outbox?min_count' < <(tail -n +1 -F "$OUT" 2>/dev/null) || fail "the cluster did not come up"

for name in bridge-controller bridge-worker bridge-gateway elevenlabs-sim whatsapp-sim; do
  grep -q "READY $name" "$OUT" || fail "no READY line from $name"
done
[[ $(grep -c "READY bridge-worker" "$OUT") -eq 2 ]] || fail "expected two workers"
if [[ $MODE == --cluster ]]; then
  [[ $(grep -c "READY bridge-controller" "$OUT") -eq 3 ]] || fail "expected three controllers"
  [[ $(grep -c "READY bridge-gateway" "$OUT") -eq 2 ]] || fail "expected two gateways"
  timeout 60 grep -q -m1 ': leading' < <(tail -n +1 -F "$OUT" 2>/dev/null) ||
    fail "no controller leads"
fi

webhook=$(sed -n 's|.* \(http://[^ ]*\)/webhook/whatsapp.*|\1|p' "$OUT" | head -1)
[[ -n "$webhook" ]] || fail "no webhook URL printed"
curl -fsS "$webhook/healthz" | grep -q ok || fail "gateway /healthz"
curl -fsS "$webhook/readyz" | grep -q ready || fail "gateway /readyz (controller not reachable?)"

# The curl lines the banner prints: a voice note as a user gets a voice-note reply.
wa=$(sed -n 's|.*whatsapp *\(http://[^ ]*\) .*|\1|p' "$OUT" | head -1)
[[ -n "$wa" ]] || fail "no whatsapp-sim URL printed"
note="$(cd "$ROOT/../shared/fixtures/audio" && pwd)/voice_note_hello.ogg"
grep -q "voice_note_hello.ogg http://.*/sim/users/" "$OUT" || fail "no voice-note curl line printed"
curl -fsS -H 'Content-Type: audio/ogg' --data-binary @"$note" "$wa/sim/users/15557654321/voice" >/dev/null ||
  fail "whatsapp-sim ($wa) refused the voice note"
reply=$(curl -fsS "$wa/sim/users/15557654321/outbox?min_count=1&wait_ms=60000")
grep -q '"type":"audio"' <<<"$reply" || fail "no voice-note reply in the outbox: $reply"
grep -q '"voice":true' <<<"$reply" || fail "the reply is not a voice note: $reply"

kill -TERM "$PID"
rc=0
wait "$PID" || rc=$?
[[ $rc -eq 0 ]] || fail "bridge.sh up exited $rc after SIGTERM"
# Zombies awaiting their reaper are gone already; anything else is an orphan.
left=$(ps -o pid=,stat=,args= -g "$PGID" | awk '$2 !~ /^Z/' || true)
[[ -z "$left" ]] || fail "processes left behind: $left"
grep -q "all stopped" "$OUT" || fail "no 'all stopped'"
echo "PASS ($MODE): the cluster and both simulators came up, answered a voice note with a voice note, and stopped cleanly"
