#!/usr/bin/env bash
# `tools/bridge.sh up --cluster` given an etcd port another process already
# serves stops at once and names the port, instead of taking the stranger's
# /health for its own etcd (it did: its controllers then joined the other
# cluster). Ports 0 elsewhere, so it runs beside anything.
set -euo pipefail
ROOT="$1"
BUILD="$2"
WORK="$(mktemp -d)"
cleanup() {
  [[ -n "${HOLDER_PID:-}" ]] && kill "$HOLDER_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; echo "--- bridge.sh output ---"; cat "$WORK/up.out"; exit 1; }

# A listener on a port the kernel picks: "another process" serving it.
coproc HOLDER { python3 -c 'import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(); print(s.getsockname()[1], flush=True); sys.stdin.read()'; }
read -r -t 10 HELD <&"${HOLDER[0]}" || { echo "FAIL: the listener did not start"; exit 1; }

export BUILD_DIR="$BUILD" BRIDGE_SKIP_BUILD=1 BRIDGE_RUN_DIR="$WORK/run" BRIDGE_DATA_DIR="$WORK"
export CONTROLLER_PORT=0 CONTROLLER_METRICS_PORT=0 ADMIN_PORT=0 GATEWAY_PORT=0
export WORKER1_PORT=0 WORKER1_METRICS_PORT=0 WORKER2_PORT=0 WORKER2_METRICS_PORT=0
export ELEVENLABS_AGENT_ID="" WHATSAPP_ACCESS_TOKEN=""
export ETCD_PORT=$HELD ETCD_PEER_PORT=0
rc=0
timeout 60 "$ROOT/tools/bridge.sh" up --cluster >"$WORK/up.out" 2>&1 </dev/null || rc=$?
[[ $rc == 1 ]] || fail "bridge.sh up exited $rc, expected 1"
grep -q "etcd: port $HELD is already in use by another process" "$WORK/up.out" ||
  fail "the port in use is not named"
grep -q "READY bridge-controller" "$WORK/up.out" && fail "controllers started anyway"
grep -q "all stopped" "$WORK/up.out" || fail "what had started was not stopped"
echo "PASS: an etcd port already in use is named and nothing else starts"
