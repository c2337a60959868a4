#!/usr/bin/env bash
# whatsapp-elevenlabs-bridge: the one entry point.
#
#   tools/bridge.sh up      install what is missing, build, run the cluster in the foreground
#                           (--cluster: etcd and three controllers; --observe: also
#                           Debian's prometheus with deploy/prometheus/bridge-alerts.yml)
#   tools/bridge.sh test    install what is missing, build, run every test (ctest)
#   tools/bridge.sh test --sanitize=address   the same with clang ASan+UBSan (+ fuzzers'
#                                             seeds, thread-safety analysis), in ./build-asan
#   tools/bridge.sh test --sanitize=thread    clang TSan, concurrency unit suites, in ./build-tsan
#   tools/bridge.sh check-threads   clang -Werror=thread-safety build of the tree, in ./build-clang
#   tools/bridge.sh fuzz [--seconds N] [--runs N] [TARGET...]   libFuzzer targets, N s each
#                                             (default 10), built in ./build-asan
#   tools/bridge.sh bench   install what is missing, build, run bench/, rewrite docs/benchmarks.md
#   tools/bridge.sh build   install and build only
#
# Environment: BUILD_DIR (default ./build), BRIDGE_JOBS (default: all cores),
# CTEST_ARGS (extra ctest arguments, e.g. "-R Audio"); for `up`, see README.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
JOBS="${BRIDGE_JOBS:-$(nproc)}"

# Build and run-time packages (DESIGN.md §8). opus-tools is the tests' oracle.
BUILD_PACKAGES=(
  cmake ninja-build ccache g++ pkg-config git curl
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler grpc-proto
  libabsl-dev libre2-dev libcpp-httplib-dev libwebsocketpp-dev libasio-dev libssl-dev
  libopus-dev libogg-dev libspeexdsp-dev libspandsp-dev libmimetic-dev prometheus-cpp-dev nlohmann-json3-dev libsqlite3-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  golang-etcd-server-dev etcd-server libjemalloc-dev
  libnice-dev libsrtp2-dev
)
# The deploy checks: systemd-analyze, promtool, nginx -t, yamllint (tests/deploy).
TEST_PACKAGES=(opus-tools curl procps systemd prometheus nginx-light yamllint openssl)
# The browser tests (tests/browser) drive Debian's chromium headless over the
# DevTools protocol. Installed when it can be; where it cannot, those tests
# skip and say why instead of failing the whole run.
BROWSER_PACKAGES=(chromium)
# Sanitizers, the thread-safety analysis and libFuzzer: clang and its runtimes
# (libclang-rt-dev has the ASan/TSan/UBSan/libFuzzer libraries, llvm the symbolizer).
CLANG_PACKAGES=(clang libclang-rt-dev llvm)
BENCH_PACKAGES=(opus-tools ffmpeg python3 wrk nodejs); command -v npm >/dev/null || BENCH_PACKAGES+=(npm) # NodeSource's nodejs bundles npm and Conflicts: npm

# shellcheck source=tools/ports.sh
source "$ROOT/tools/ports.sh"

say() { printf 'bridge.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

missing_packages() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

# Installs what is missing with apt-get; silent when everything is there.
ensure_packages() {
  local missing
  missing=$(missing_packages "$@" | tr '\n' ' ')
  [[ -z "${missing// /}" ]] && return 0
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null && sudo -n true 2>/dev/null ||
      die "missing Debian packages: $missing; run as root or: sudo apt-get install -y $missing"
    sudo=(sudo -n)
  fi
  say "installing: $missing"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq || say "apt-get update failed; trying the cached package lists"
  # shellcheck disable=SC2086
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends $missing >/dev/null ||
    die "apt-get could not install: $missing"
}

# ensure_optional_packages PKG...: as ensure_packages, but a failure is a
# warning: the tests that need them skip with a message.
ensure_optional_packages() {
  ( ensure_packages "$@" ) || say "could not install $*: the tests that need it will skip"
}

build() {
  if [[ ! -f "$BUILD_DIR/build.ninja" ]]; then
    say "configuring $BUILD_DIR"
    cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  fi
  say "building ($JOBS jobs)"
  cmake --build "$BUILD_DIR" -j "$JOBS" >&2 || die "build failed (see the errors above)"
}

# clang_build DIR [TARGET...] -- CMAKE_ARG...: a clang build in its own directory
# (never ./build: its flags differ). Configured every time, so a changed option
# takes effect; cmake only regenerates what changed. No TARGET: everything.
clang_build() {
  local dir=$1 targets=() target_args=()
  shift
  while (($#)) && [[ $1 != -- ]]; do targets+=("$1"); shift; done
  shift
  say "configuring $dir (clang: $*)"
  cmake -S "$ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ "$@" >/dev/null ||
    die "cmake could not configure $dir"
  local t
  for t in "${targets[@]}"; do target_args+=(--target "$t"); done
  say "building $dir ($JOBS jobs)"
  cmake --build "$dir" -j "$JOBS" "${target_args[@]}" >&2 || die "build failed (see the errors above)"
}

# build-asan serves the ASan suite, the fuzzers and the thread-safety analysis:
# one clang compile of the tree for all three (what CI can afford on 2 cores).
ASAN_CMAKE_ARGS=(-DBRIDGE_SANITIZE=address -DBRIDGE_FUZZ=ON -DBRIDGE_THREAD_SAFETY=ON)

# The suites TSan runs: the threaded code's unit tests (coordinator, worker,
# Converse outbox and transcoders, agent session, WebSocket layer). Not the
# e2e suites: gRPC is not built with TSan, so every hand-off through it (a
# message buffer gRPC frees on its thread) is reported as a race in each
# binary; they would need a TSan build of gRPC (CTEST_ARGS="-R ..." runs them).
TSAN_TESTS='^(CoordinatorTest|ResendPolicy|DeriveUserIdTest|DescribeForAgentTest|SplitForWhatsAppTest'
TSAN_TESTS+='|ConverseFormatTest|InputBudgetTest|InputTranscoderTest|OutboxTest|OutputTranscoderTest'
TSAN_TESTS+='|AgentSessionTest|WebSocketTest|WebSocketServerTest|WebSocketClientTest'
TSAN_TESTS+='|CallMediaTest|JitterBufferTest|RtpPacketTest)\.'

# The runtime options of the sanitizers, for the tests and every process they
# start (the e2e tests spawn the real binaries and inherit the environment).
# Reports go to files in $1 (pid-suffixed), so one from a child process that a
# test shrugs off still fails the run: sanitizer_reports checks them.
sanitizer_env() {
  local logs=$1 supp="$ROOT/tools/sanitizers"
  rm -rf "$logs"
  mkdir -p "$logs"
  export ASAN_OPTIONS="halt_on_error=1:abort_on_error=0:detect_leaks=1:log_path=$logs/asan"
  export LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0"
  export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$logs/ubsan"
  export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$supp/tsan.supp:log_path=$logs/tsan"
  export ASAN_SYMBOLIZER_PATH TSAN_SYMBOLIZER_PATH
  ASAN_SYMBOLIZER_PATH=$(command -v llvm-symbolizer || true)
  TSAN_SYMBOLIZER_PATH=$ASAN_SYMBOLIZER_PATH
}

# sanitizer_reports DIR: prints every report and fails if there is one.
sanitizer_reports() {
  local logs=$1 f n=0
  for f in "$logs"/*; do
    [[ -s $f ]] || continue
    n=$((n + 1))
    say "sanitizer report $f:"
    cat "$f" >&2
  done
  ((n == 0)) || die "$n sanitizer report(s) (above; the files are in $logs)"
  say "no sanitizer reports"
}

cmd_test() {
  local sanitize=""
  while (($#)); do
    case $1 in
      --sanitize=address | --sanitize=thread) sanitize=${1#--sanitize=} ;;
      *) die "test: unknown option $1 (--sanitize=address or --sanitize=thread)" ;;
    esac
    shift
  done
  if [[ -z $sanitize ]]; then
    ensure_packages "${BUILD_PACKAGES[@]}" "${TEST_PACKAGES[@]}"
    ensure_optional_packages "${BROWSER_PACKAGES[@]}"
    build
    say "running tests"
    # ctest prints its own summary line ("100% tests passed, 0 tests failed out of N").
    # shellcheck disable=SC2086
    ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$JOBS" --timeout 600 ${CTEST_ARGS:-}
    return
  fi
  ensure_packages "${BUILD_PACKAGES[@]}" "${TEST_PACKAGES[@]}" "${CLANG_PACKAGES[@]}"
  ensure_optional_packages "${BROWSER_PACKAGES[@]}"
  local dir filter=()
  if [[ $sanitize == address ]]; then
    dir=$ROOT/build-asan
    clang_build "$dir" -- "${ASAN_CMAKE_ARGS[@]}"
  else
    dir=$ROOT/build-tsan
    clang_build "$dir" -- -DBRIDGE_SANITIZE=thread
    [[ -n ${CTEST_ARGS:-} ]] || filter=(-R "$TSAN_TESTS")
  fi
  sanitizer_env "$dir/sanitizer-logs"
  say "running tests under the $sanitize sanitizer"
  local rc=0
  # shellcheck disable=SC2086
  ctest --test-dir "$dir" --output-on-failure -j "$JOBS" --timeout 900 "${filter[@]}" ${CTEST_ARGS:-} || rc=$?
  sanitizer_reports "$dir/sanitizer-logs"
  return $rc
}

# ---- fuzz: the libFuzzer targets of tests/fuzz ------------------------------

# The targets tests/fuzz/CMakeLists.txt builds (BRIDGE_FUZZ_TARGETS): one list,
# so a new fuzzer is run too (the two call fuzzers were left out of a copy).
mapfile -t FUZZ_TARGETS < <(sed -n '/set(BRIDGE_FUZZ_TARGETS/,/)/p' "$ROOT/tests/fuzz/CMakeLists.txt" |
  grep -o 'fuzz_[a-z_]*')

# Each target runs for --seconds (default 10, so over a minute for all seven)
# or --runs executions, whichever comes first, from its seed corpus
# (tests/fuzz/corpus/NAME) plus what earlier runs found (build-asan/fuzz/corpus/
# NAME), with its dictionary. Prints one line per target; exits 1 if any
# crashed. The crashing input is in build-asan/fuzz/artifacts, libFuzzer's log
# in build-asan/fuzz/logs. Built in build-asan (see ASAN_CMAKE_ARGS).
cmd_fuzz() {
  local seconds=10 runs=-1 targets=()
  while (($#)); do
    case $1 in
      --seconds) seconds=${2:?--seconds needs a number}; shift ;;
      --seconds=*) seconds=${1#--seconds=} ;;
      --runs) runs=${2:?--runs needs a number}; shift ;;
      --runs=*) runs=${1#--runs=} ;;
      fuzz_*) targets+=("$1") ;;
      *) die "fuzz: unknown option $1 (--seconds N, --runs N, target names)" ;;
    esac
    shift
  done
  [[ $seconds =~ ^[0-9]+$ && $runs =~ ^-?[0-9]+$ ]] || die "fuzz: --seconds and --runs take numbers"
  ((${#targets[@]})) || targets=("${FUZZ_TARGETS[@]}")
  ensure_packages "${BUILD_PACKAGES[@]}" "${CLANG_PACKAGES[@]}"
  local dir=$ROOT/build-asan
  clang_build "$dir" "${targets[@]}" -- "${ASAN_CMAKE_ARGS[@]}"
  dir=$ROOT/build-asan/fuzz
  mkdir -p "$dir/corpus" "$dir/artifacts" "$dir/logs"
  export LSAN_OPTIONS="suppressions=$ROOT/tools/sanitizers/lsan.supp:print_suppressions=0"
  export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
  local t failed=0
  for t in "${targets[@]}"; do
    local corpus=$dir/corpus/$t log=$dir/logs/$t.log rc=0
    mkdir -p "$corpus"
    rm -f "$dir/artifacts/$t-"*
    "$ROOT/build-asan/tests/fuzz/$t" -max_total_time="$seconds" -runs="$runs" -timeout=25 \
      -dict="$ROOT/tests/fuzz/$t.dict" -artifact_prefix="$dir/artifacts/$t-" \
      -print_final_stats=1 "$corpus" "$ROOT/tests/fuzz/corpus/$t" >"$log" 2>&1 || rc=$?
    local execs crashes
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    crashes=$(find "$dir/artifacts" -name "$t-*" | wc -l)
    # A crash before the final stats (or a failure to start) still counts.
    ((rc == 0 || crashes > 0)) || crashes=1
    echo "fuzz $t: ${execs:-0} execs, $crashes crashes"
    if ((crashes)); then
      failed=1
      say "$t failed (exit $rc); its input: $(find "$dir/artifacts" -name "$t-*" | head -1); log: $log"
      grep -m1 -A12 -E '^==[0-9]+==ERROR|runtime error|^==[0-9]+== ERROR' "$log" >&2 || tail -20 "$log" >&2
    fi
  done
  return $failed
}

cmd_check_threads() {
  ensure_packages "${BUILD_PACKAGES[@]}" "${CLANG_PACKAGES[@]}"
  clang_build "$ROOT/build-clang" -- -DBRIDGE_THREAD_SAFETY=ON
  say "thread-safety analysis: no findings"
}

cmd_bench() {
  ensure_packages "${BUILD_PACKAGES[@]}" "${BENCH_PACKAGES[@]}"
  build
  BUILD_DIR="$BUILD_DIR" "$ROOT/bench/run.sh" "$ROOT/docs/benchmarks.md"
}

# ---- up: the cluster in the foreground ------------------------------------

PIDS=()
NAMES=()
PREFIXERS=()
RUN_DIR=""

# stop_all [RC]: stops every process and exits RC: 0 on Ctrl-C or SIGTERM,
# the failure's status when `up` could not start or a process died.
stop_all() {
  local rc=${1:-0}
  trap - INT TERM EXIT
  ((${#PIDS[@]})) || exit "$rc"
  say "stopping ${NAMES[*]}"
  local i
  for i in "${!PIDS[@]}"; do kill -TERM "${PIDS[$i]}" 2>/dev/null || true; done
  for _ in $(seq 50); do
    local alive=0
    for i in "${!PIDS[@]}"; do kill -0 "${PIDS[$i]}" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for i in "${!PIDS[@]}"; do
    if kill -0 "${PIDS[$i]}" 2>/dev/null; then
      say "${NAMES[$i]} did not stop in 5 s; killing it"
      kill -KILL "${PIDS[$i]}" 2>/dev/null || true
    fi
  done
  wait "${PIDS[@]}" "${PREFIXERS[@]}" 2>/dev/null || true
  rm -f "$RUN_DIR"/*.fifo
  say "all stopped"
  exit "$rc"
}

# start NAME BINARY ARGS...: runs it with name-prefixed output and a log file.
# The prefixer reads a FIFO as its own job, so stop_all can wait for it too.
start() {
  local name=$1
  shift
  local log="$RUN_DIR/$name.log" fifo="$RUN_DIR/$name.fifo"
  : >"$log"
  rm -f "$fifo"
  mkfifo "$fifo"
  while IFS= read -r line; do
    printf '%-12s | %s\n' "$name" "$line"
    printf '%s\n' "$line" >>"$log"
  done <"$fifo" &
  PREFIXERS+=($!)
  "$@" >"$fifo" 2>&1 &
  PIDS+=($!)
  NAMES+=("$name")
}

# exited NAME: true when the process started as NAME is no longer running.
exited() {
  local idx
  for idx in "${!NAMES[@]}"; do
    [[ ${NAMES[$idx]} == "$1" ]] && ! kill -0 "${PIDS[$idx]}" 2>/dev/null && return 0
  done
  return 1
}

# forget NAME: drops a process that exited before it served (it is not stopped
# or waited for again), so NAME can be started anew.
forget() {
  local idx
  for idx in "${!NAMES[@]}"; do
    [[ ${NAMES[$idx]} == "$1" ]] && unset "NAMES[$idx]" "PIDS[$idx]"
  done
  return 0
}

# wait_ready NAME: waits for the READY line and prints its key=value pairs.
wait_ready() {
  local name=$1 log="$RUN_DIR/$1.log" i
  for i in $(seq 600); do
    if grep -q '^READY ' "$log" 2>/dev/null; then
      grep -m1 '^READY ' "$log" | cut -d' ' -f3-
      return 0
    fi
    exited "$name" && die "$name exited before it was ready (see $log)"
    sleep 0.1
  done
  die "$name was not ready after 60 s (see $log)"
}

field() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"; }

# config_value NAME: the variable from the environment, else from ./.env.
config_value() {
  local v="${!1:-}"
  if [[ -z "$v" && -f "$ROOT/.env" ]]; then
    v=$(sed -n "s/^\(export \)\{0,1\}$1=//p" "$ROOT/.env" | tail -1 | sed "s/^[\"']//; s/[\"']$//")
  fi
  printf '%s' "$v"
}

# Real accounts are configured when the agent and the Graph token are set;
# otherwise `up` runs both simulators and points the cluster at them.
have_real_accounts() {
  [[ -n "$(config_value ELEVENLABS_AGENT_ID)" && -n "$(config_value WHATSAPP_ACCESS_TOKEN)" ]]
}

random_hex() { head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# supervise CMD...: runs CMD again when it exits non-zero. A controller that
# loses leadership exits 1 by design (its memory belongs to a term that
# ended) and comes back as a standby, as systemd or Kubernetes would restart it.
supervise() {
  local child=0 rc
  trap 'kill -TERM $child 2>/dev/null; wait $child; exit 0' TERM INT
  while :; do
    "$@" &
    child=$!
    wait "$child" && exit 0
    rc=$?
    echo "bridge.sh: exited with $rc; restarting as a standby in 1 s"
    sleep 1
  done
}

# port_plus BASE N: the Nth port after BASE; 0 stays 0 (the kernel picks).
port_plus() { if (($1 == 0)); then echo 0; else echo $(($1 + $2)); fi; }

# wait_http NAME URL PATTERN: waits until URL answers with PATTERN (etcd and
# prometheus print no READY line; their health endpoints say when they serve).
# Returns 1 when NAME exited first.
wait_http() {
  local i
  for i in $(seq 600); do
    curl -fsS "$2" 2>/dev/null | grep -q "$3" && return 0
    exited "$1" && return 1
    sleep 0.1
  done
  die "$1 did not answer $2 in 60 s (see $RUN_DIR/$1.log)"
}

# serve_on_ports NAME STARTER PORT...: runs `STARTER PORT...`, which starts NAME
# and returns wait_http's status. etcd and prometheus cannot listen on port 0
# and report the port they got, so a 0 here means a port bridge.sh picks
# (pick_port). Another process can bind a picked port first; then NAME exits
# with "address already in use" and is started again on new ports (5 tries).
serve_on_ports() {
  local name=$1 starter=$2 p picked=0
  shift 2
  for p in "$@"; do
    ((p == 0)) && picked=1
    # A port given and already served: the health check would be answered by
    # whatever holds it, so say so now.
    if ((p != 0)) && (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      die "$name: port $p is already in use by another process (give another, or 0 to pick a free one)"
    fi
  done
  for _ in 1 2 3 4 5; do
    local ports=()
    for p in "$@"; do
      ((p == 0)) && p=$(pick_port)
      ports+=("$p")
    done
    "$starter" "${ports[@]}" && return 0
    if ((!picked)) || ! grep -q 'address already in use' "$RUN_DIR/$name.log"; then break; fi
    say "$name could not bind port ${ports[*]} (taken since it was picked); picking others"
    forget "$name"
  done
  die "$name exited before it served (see $RUN_DIR/$name.log)"
}

# start_etcd CLIENT_PORT PEER_PORT: one etcd member in $ETCD_DIR on $ETCD_HOST;
# sets ETCD_CLIENT_PORT. Compaction and quota: docs/cluster.md says why these values.
start_etcd() {
  ETCD_CLIENT_PORT=$1
  local client="http://$ETCD_HOST:$1" peer="http://127.0.0.1:$2"
  start etcd etcd --name bridge-etcd --data-dir "$ETCD_DIR" \
    --listen-client-urls "$client" --advertise-client-urls "$client" \
    --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
    --initial-cluster "bridge-etcd=$peer" \
    --auto-compaction-mode=periodic --auto-compaction-retention=1h \
    --quota-backend-bytes=$((2 * 1024 * 1024 * 1024)) --logger=zap --log-outputs=stderr \
    --log-level=warn
  wait_http etcd "$client/health" '"health":"true"'
}

# start_controllers CLUSTER DATA HOST BIN ADMIN_TOKEN: one controller on the
# embedded store, or etcd and three controllers electing a leader on it.
# Sets CONTROLLERS (the comma list everyone is given) and CONTROLLER_LINES.
start_controllers() {
  local cluster=$1 data=$2 host=$3 bin=$4 admin_token=$5
  local ctl=("$bin/controller/bridge-controller")
  CONTROLLER_LINES=()
  if ((!cluster)); then
    start controller env BRIDGE_ADMIN_TOKEN="$admin_token" "${CONTROLLER_ENV[@]}" "${ctl[@]}" \
      --listen="$host:${CONTROLLER_PORT:-7000}" --metrics_listen="$host:${CONTROLLER_METRICS_PORT:-9100}" \
      --admin_listen="$host:${ADMIN_PORT:-7080}" --store="sqlite:$data/controller.db"
    local c
    c=$(wait_ready controller)
    CONTROLLERS=$(field "$c" grpc)
    METRICS_CONTROLLERS=("$(field "$c" metrics)")
    CONTROLLER_LINES+=("controller   grpc $CONTROLLERS   metrics http://$(field "$c" metrics)/metrics")
    CONTROLLER_LINES+=("console      http://$(field "$c" admin)/   (the operator token: BRIDGE_ADMIN_TOKEN in credentials.env)")
    return
  fi
  # Not etcd's 2379/2380: installing Debian's etcd-server starts a system etcd
  # there (etcd.service), and this one is the cluster's own, in $data/etcd.
  ETCD_DIR="$data/etcd" ETCD_HOST=$host
  serve_on_ports etcd start_etcd "${ETCD_PORT:-23790}" "${ETCD_PEER_PORT:-23800}"
  local etcd_port=$ETCD_CLIENT_PORT
  CONTROLLER_LINES+=("etcd         http://$host:$etcd_port   data $data/etcd")
  local i list=()
  METRICS_CONTROLLERS=()
  for i in 1 2 3; do
    start "controller-$i" supervise env BRIDGE_ADMIN_TOKEN="$admin_token" "${CONTROLLER_ENV[@]}" "${ctl[@]}" \
      --listen="$host:$(port_plus "${CONTROLLER_PORT:-7000}" $((i - 1)))" \
      --metrics_listen="$host:$(port_plus "${CONTROLLER_METRICS_PORT:-9110}" $((i - 1)))" \
      --admin_listen="$host:$(port_plus "${ADMIN_PORT:-7080}" $((i - 1)))" \
      --store="etcd:$host:$etcd_port" --leader_lease="${LEADER_LEASE:-5s}"
  done
  for i in 1 2 3; do
    local c
    c=$(wait_ready "controller-$i")
    list+=("$(field "$c" grpc)")
    METRICS_CONTROLLERS+=("$(field "$c" metrics)")
    CONTROLLER_LINES+=("controller-$i grpc $(field "$c" grpc)   metrics http://$(field "$c" metrics)/metrics")
    CONTROLLER_LINES+=("  console    http://$(field "$c" admin)/   (the leader's serves; a standby's says so)")
  done
  CONTROLLERS=$(IFS=,; echo "${list[*]}")
}

# start_prometheus PORT: prometheus with $PROMETHEUS_ARGS on $PROMETHEUS_HOST;
# sets PROMETHEUS_SERVING_PORT.
start_prometheus() {
  PROMETHEUS_SERVING_PORT=$1
  start prometheus prometheus "${PROMETHEUS_ARGS[@]}" --web.listen-address="$PROMETHEUS_HOST:$1"
  wait_http prometheus "http://$PROMETHEUS_HOST:$1/-/ready" "Ready"
}

# start_observer DATA HOST GATEWAYS CONTROLLERS WORKERS (comma lists of
# host:port serving /metrics): Debian's prometheus scraping them with the alert
# rules of deploy/prometheus (the rules' own tests: tests/deploy).
start_observer() {
  local data=$1 host=$2 cfg="$RUN_DIR/prometheus.yml"
  quoted() { sed 's/[^,][^,]*/"&"/g' <<<"$1"; }
  cat >"$cfg" <<EOF
# Written by tools/bridge.sh up --observe for this run's addresses.
global: {scrape_interval: 5s, evaluation_interval: 5s}
rule_files: ["$ROOT/deploy/prometheus/bridge-alerts.yml"]
scrape_configs:
  - {job_name: bridge-gateway, static_configs: [{targets: [$(quoted "$3")]}]}
  - {job_name: bridge-controller, static_configs: [{targets: [$(quoted "$4")]}]}
  - {job_name: bridge-worker, static_configs: [{targets: [$(quoted "$5")]}]}
EOF
  PROMETHEUS_ARGS=(--config.file="$cfg" --storage.tsdb.path="$data/prometheus") PROMETHEUS_HOST=$host
  serve_on_ports prometheus start_prometheus "${PROMETHEUS_PORT:-9090}"
  OBSERVER_LINE="prometheus   http://$host:$PROMETHEUS_SERVING_PORT/alerts   (rules: deploy/prometheus/bridge-alerts.yml; dashboard: deploy/grafana/bridge-dashboard.json)"
}

cmd_up() {
  local cluster=0 observe=0
  while (($#)); do
    case "$1" in
      --cluster) cluster=1 ;;
      --observe) observe=1 ;;
      *) die "up: unknown option '$1' (usage: tools/bridge.sh up [--cluster] [--observe])" ;;
    esac
    shift
  done
  if [[ -z ${BRIDGE_SKIP_BUILD:-} ]]; then
    ensure_packages "${BUILD_PACKAGES[@]}"
    build
  fi
  ((observe)) && ensure_packages prometheus
  local data="${BRIDGE_DATA_DIR:-$ROOT/data}"
  ((cluster)) && data="${BRIDGE_DATA_DIR:-$ROOT/data/cluster}"
  RUN_DIR="${BRIDGE_RUN_DIR:-$data/run}"
  mkdir -p "$RUN_DIR"
  trap 'stop_all 0' INT TERM
  trap 'stop_all $?' EXIT
  local bin="$BUILD_DIR" host="${BRIDGE_HOST:-127.0.0.1}"
  local sims=0
  have_real_accounts || sims=1

  # Internal APIs need credentials (docs/security.md): made per run unless
  # given. Workers and the gateway get the cluster token only; the operator
  # token goes to the controller and to credentials.env for bridgectl.
  export BRIDGE_CLUSTER_TOKEN="${BRIDGE_CLUSTER_TOKEN:-cluster-$(random_hex)}"
  local admin_token="${BRIDGE_ADMIN_TOKEN:-admin-$(random_hex)}"
  unset BRIDGE_ADMIN_TOKEN
  (umask 077 && printf 'export BRIDGE_CLUSTER_TOKEN=%s\nexport BRIDGE_ADMIN_TOKEN=%s\n' \
    "$BRIDGE_CLUSTER_TOKEN" "$admin_token" >"$RUN_DIR/credentials.env")

  # Secrets of the simulated accounts travel in the environment, not in argv.
  # The simulated agent comes first: the controllers delete a forgotten
  # user's conversations there (ELEVENLABS_API_KEY, ELEVENLABS_BASE_URL).
  local sim_env=() el wa elhttp="" wahttp=""
  CONTROLLER_ENV=()
  if ((sims)); then
    # A private agent, as in production: signed URLs and speech-to-text need the key.
    local el_key
    el_key="sk_dev_$(random_hex)"
    # shellcheck disable=SC2086  # ELEVENLABS_SIM_ARGS: extra flags (benchmarks)
    start elevenlabs-sim env ELEVENLABS_API_KEY="$el_key" "$bin/tools/elevenlabs_sim/elevenlabs-sim" \
      --listen="$host:${ELEVENLABS_SIM_PORT:-0}" --agent_id=sim-agent ${ELEVENLABS_SIM_ARGS:-}
    el=$(wait_ready elevenlabs-sim)
    elhttp=$(field "$el" http)
    sim_env=(env ELEVENLABS_BASE_URL="http://$elhttp" ELEVENLABS_AGENT_ID=sim-agent
      ELEVENLABS_API_KEY="$el_key" WHATSAPP_ACCESS_TOKEN="dev-token-$(random_hex)"
      WHATSAPP_WEBHOOK_VERIFY_TOKEN="dev-verify-$(random_hex)"
      WEBHOOK_SIGNATURE_SECRET="dev-app-secret-$(random_hex)")
    CONTROLLER_ENV=(ELEVENLABS_BASE_URL="http://$elhttp" ELEVENLABS_API_KEY="$el_key")
  fi
  start_controllers "$cluster" "$data" "$host" "$bin" "$admin_token"
  local cgrpc=$CONTROLLERS
  # Two gateways in cluster mode, as behind a load balancer; the simulated
  # Meta sends to the first.
  local gateways=1 gw ghttp="" gateway_lines=() gateway_metrics=()
  ((cluster)) && gateways=2
  for gw in $(seq "$gateways"); do
    local name=gateway
    ((cluster)) && name="gateway-$gw"
    start "$name" "${sim_env[@]}" "$bin/gateway/bridge-gateway" --controller="$cgrpc" \
      --listen="$host:$(port_plus "${GATEWAY_PORT:-3000}" $((gw - 1)))"
    local g
    g=$(wait_ready "$name")
    [[ -z $ghttp ]] && ghttp=$(field "$g" http)
    gateway_metrics+=("$(field "$g" http)")
    gateway_lines+=("$(printf '%-12s http://%s/webhook/whatsapp   (health: /healthz, /readyz, metrics: /metrics)' "$name" "$(field "$g" http)")")
  done
  if ((sims)); then
    start whatsapp-sim "${sim_env[@]}" "$bin/tools/whatsapp_sim/whatsapp-sim" \
      --listen="$host:${WHATSAPP_SIM_PORT:-0}" --webhook_url="http://$ghttp/webhook/whatsapp"
    wa=$(wait_ready whatsapp-sim)
    wahttp=$(field "$wa" http)
    sim_env+=(WHATSAPP_GRAPH_BASE_URL="http://$wahttp")
  fi
  start worker-1 "${sim_env[@]}" "$bin/media_worker/bridge-worker" --worker_id=worker-1 \
    --controller="$cgrpc" --listen="$host:${WORKER1_PORT:-7100}" \
    --metrics_listen="$host:${WORKER1_METRICS_PORT:-9101}"
  start worker-2 "${sim_env[@]}" "$bin/media_worker/bridge-worker" --worker_id=worker-2 \
    --controller="$cgrpc" --listen="$host:${WORKER2_PORT:-7101}" \
    --metrics_listen="$host:${WORKER2_METRICS_PORT:-9102}"
  local w1 w2
  w1=$(wait_ready worker-1)
  w2=$(wait_ready worker-2)
  OBSERVER_LINE=""
  if ((observe)); then
    start_observer "$data" "$host" "$(IFS=,; echo "${gateway_metrics[*]}")" \
      "$(IFS=,; echo "${METRICS_CONTROLLERS[*]}")" "$(field "$w1" metrics),$(field "$w2" metrics)"
  fi

  {
    echo
    echo "  whatsapp-elevenlabs-bridge is up$( ((cluster)) && echo " in cluster mode") (Ctrl-C stops everything)"
    echo
    local line
    for line in "${gateway_lines[@]}" "${CONTROLLER_LINES[@]}"; do echo "  $line"; done
    echo "  worker-1     grpc $(field "$w1" grpc)   metrics http://$(field "$w1" metrics)/metrics"
    echo "  worker-2     grpc $(field "$w2" grpc)   metrics http://$(field "$w2" metrics)/metrics"
    [[ -n $OBSERVER_LINE ]] && echo "  $OBSERVER_LINE"
    echo "  logs         $RUN_DIR/*.log"
    echo
    echo "  credentials  $RUN_DIR/credentials.env (made for this run; the APIs refuse calls without them)"
    echo
    echo "  try (grpcurl, or ../shared/tools/grpc-cli/grpc.js with the same arguments):"
    local first=${cgrpc%%,*}
    echo "    grpcurl -plaintext $first list"
    echo "    grpcurl -plaintext -d '{\"service\":\"bridge.v1.Ingest\"}' $first grpc.health.v1.Health/Check   (SERVING on the leader only)"
    echo "    source $RUN_DIR/credentials.env"
    echo "    grpcurl -plaintext -H \"authorization: Bearer \$BRIDGE_ADMIN_TOKEN\" $first bridge.v1.Sessions/ListSessions"
    echo "    $bin/tools/bridgectl --controller=$cgrpc workers"
    echo "    $bin/tools/bridgectl audio info ../shared/fixtures/audio/voice_note_hello.ogg"
    if ((sims)); then
      local fixtures
      fixtures="$(cd "$ROOT/../shared/fixtures/audio" 2>/dev/null && pwd || echo ../shared/fixtures/audio)"
      echo
      echo "  no real accounts configured, so the simulators stand in (set ELEVENLABS_AGENT_ID and"
      echo "  WHATSAPP_ACCESS_TOKEN in the environment or .env to use the real services):"
      echo "  elevenlabs   http://$elhttp   (what it heard: /sim/conversations)"
      echo "  whatsapp     http://$wahttp   (phone page: http://$wahttp/)"
      echo
      echo "  send a text and a voice note as a WhatsApp user, then read the replies:"
      echo "    curl -H 'Content-Type: text/plain' --data 'Hello agent' http://$wahttp/sim/users/15551234567/text"
      echo "    curl -H 'Content-Type: audio/ogg' --data-binary @$fixtures/voice_note_hello.ogg http://$wahttp/sim/users/15551234567/voice"
      echo "    curl 'http://$wahttp/sim/users/15551234567/outbox?min_count=1&wait_ms=30000'"
    fi
    echo
  } >&2
  # Stay in the foreground until a child dies or we are told to stop.
  wait -n "${PIDS[@]}" || true
  say "a process exited; stopping the rest"
  stop_all 1
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  test) shift; cmd_test "$@" ;;
  check-threads) cmd_check_threads ;;
  fuzz) shift; cmd_fuzz "$@" ;;
  bench) cmd_bench ;;
  build) ensure_packages "${BUILD_PACKAGES[@]}"; build ;;
  *)
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
