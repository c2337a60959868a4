#!/usr/bin/env bash
# `tools/bridge.sh up` brings up the controller, two workers and the gateway,
# each answering on the address its READY line gave, and on SIGTERM stops every
# one of them (no orphans) and exits 0. All ports are 0, so two runs in
# parallel do not collide. Waits on output, never sleeps to synchronise.
# With --cluster: etcd, three controllers (one leads), two gateways.
# Without it, --observe too: prometheus scrapes every service with the alert
# rules loaded, and the operator console answers with the run's token.
set -euo pipefail
ROOT="$1"
BUILD="$2"
MODE="${3:-}"
WORK="$(mktemp -d)"
OUT="$WORK/up.out"
cleanup() {
  [[ -n "${PGID:-}" ]] && kill -KILL -- "-$PGID" 2>/dev/null || true
  [[ -n "${HOLDER_PID:-}" ]] && kill "$HOLDER_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; echo "--- bridge.sh output ---"; cat "$OUT"; exit 1; }

export BUILD_DIR="$BUILD" BRIDGE_SKIP_BUILD=1 BRIDGE_RUN_DIR="$WORK/run" BRIDGE_DATA_DIR="$WORK"
export CONTROLLER_PORT=0 CONTROLLER_METRICS_PORT=0 WORKER1_PORT=0 WORKER1_METRICS_PORT=0
export WORKER2_PORT=0 WORKER2_METRICS_PORT=0 GATEWAY_PORT=0 ADMIN_PORT=0
# No real accounts: the simulators must stand in (a developer's .env is not read
# because ROOT has none in CI; the variables below make sure of it here too).
export ELEVENLABS_AGENT_ID= WHATSAPP_ACCESS_TOKEN=
# etcd and prometheus cannot take port 0 themselves: bridge.sh picks free ones
# and picks again when another process binds one first.
export ETCD_PORT=0 ETCD_PEER_PORT=0 PROMETHEUS_PORT=0
# That race, made certain: the first port bridge.sh picks (etcd's with
# --cluster, prometheus's with --observe) is held by a socket that is bound and
# not listening, as an outgoing connection's port is; so it looks free.
# (yamllint, a test package, brings python3.)
coproc HOLDER { python3 -c 'import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1], flush=True); sys.stdin.read()'; }
read -r -t 10 HELD <&"${HOLDER[0]}" || fail "the port holder did not start"
mkdir "$WORK/bin"
cat >"$WORK/bin/shuf" <<EOF
#!/bin/sh
[ -e "$WORK/held-given" ] && exec "$(command -v shuf)" "\$@"
touch "$WORK/held-given"
echo $HELD
EOF
chmod +x "$WORK/bin/shuf"
export PATH="$WORK/bin:$PATH"
UP_ARGS=$MODE
[[ -z $MODE ]] && UP_ARGS=--observe
setsid "$ROOT/tools/bridge.sh" up $UP_ARGS >"$OUT" 2>&1 </dev/null &
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

grep -q "could not bind port $HELD .*picking others" "$OUT" ||
  fail "bridge.sh did not say it picked again for the held port $HELD"

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

# The consoles, with the token the run made (credentials.env): the leader's
# lists the session; a standby's answers 503 and says why.
consoles=$(sed -n 's|.*console *\(http://[^ ]*\)/ .*|\1|p' "$OUT")
[[ -n "$consoles" ]] || fail "no console URL printed"
# shellcheck disable=SC1091
source "$WORK/run/credentials.env"
listed=0
for console in $consoles; do
  code=$(curl -s -o /dev/null -w '%{http_code}' "$console/api/sessions")
  [[ $code == 401 ]] || fail "the console at $console answered $code without the token"
  answer=$(curl -s -w ' HTTP %{http_code}' -H "Authorization: Bearer $BRIDGE_ADMIN_TOKEN" "$console/api/sessions")
  case $answer in
    *'"sessions"'*'HTTP 200') listed=$((listed + 1)) ;;
    *'HTTP 503') [[ -n $MODE ]] || fail "the only console is unavailable: $answer" ;;
    *) fail "the console at $console answered: $answer" ;;
  esac
done
[[ $listed == 1 ]] || fail "$listed consoles listed the session (expected the leader's only)"

if [[ -z $MODE ]]; then
  prom=$(sed -n 's|.*prometheus *\(http://[^ ]*\)/alerts.*|\1|p' "$OUT")
  [[ -n $prom ]] || fail "no prometheus line printed"
  curl -fsS "$prom/api/v1/rules" | grep -q '"BridgeNoLeader"' || fail "prometheus has not loaded the alert rules"
  # Every service scraped and up: gateway, controller, two workers (a poll of
  # prometheus's own state; the timeout guards a hang).
  up=""
  for _ in $(seq 300); do
    up=$(curl -fsS "$prom/api/v1/query?query=sum(up)" | grep -o '"value":\[[^]]*\]' || true)
    [[ $up == *'"4"]' ]] && break
    sleep 0.2
  done
  [[ $up == *'"4"]' ]] || fail "prometheus does not see the four services up: $up"
fi

kill -TERM "$PID"
rc=0
wait "$PID" || rc=$?
[[ $rc -eq 0 ]] || fail "bridge.sh up exited $rc after SIGTERM"
# Zombies awaiting their reaper are gone already; anything else is an orphan.
left=$(ps -o pid=,stat=,args= -g "$PGID" | awk '$2 !~ /^Z/' || true)
[[ -z "$left" ]] || fail "processes left behind: $left"
grep -q "all stopped" "$OUT" || fail "no 'all stopped'"
echo "PASS ($MODE): the cluster and both simulators came up, answered a voice note with a voice note, and stopped cleanly"
