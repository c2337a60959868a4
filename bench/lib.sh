# Shared by the benchmark scripts (source it after setting TMP and defining
# say): start services and wait for their READY line, stop them cleanly, read
# /proc. Callers keep PIDS=() and install `trap cleanup EXIT`.

cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}

# start NAME CMD...: runs CMD with stdout on a FIFO this shell keeps open (so
# the service never gets SIGPIPE) and stderr in $TMP/NAME.log, then blocks on
# the READY line (no polling, no sleep). Sets PID and READY.
start() {
  local name=$1 fifo="$TMP/$1.stdout" fd
  shift
  rm -f "$fifo"
  mkfifo "$fifo"
  "$@" >"$fifo" 2>"$TMP/$name.log" &
  PID=$!
  PIDS+=("$PID")
  exec {fd}<"$fifo"
  if ! IFS= read -r -t 60 -u "$fd" READY || [[ $READY != "READY "* ]]; then
    say "$name did not print READY; its log:"
    tail -n 20 "$TMP/$name.log" >&2
    exit 1
  fi
}

field() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"; }

# stop PID: SIGTERM, then wait at most 10 s for a clean exit before SIGKILL.
# The PID leaves PIDS once reaped, so cleanup never signals a recycled PID.
stop() {
  local p keep=()
  kill -TERM "$1" 2>/dev/null || true
  timeout 10 tail --pid="$1" -f /dev/null || { say "pid $1 ignored SIGTERM; killing"; kill -KILL "$1"; }
  wait "$1" 2>/dev/null || true
  for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# status_kib PID FIELD: a /proc/PID/status value in KiB (VmRSS, VmHWM, ...).
status_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
