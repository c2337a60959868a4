#!/usr/bin/env bash
# Checks the deployment files under deploy/ with the tools that run them:
#   systemd-analyze verify   deploy/systemd/*.service, etcd.service.d/bridge.conf
#   promtool check config    deploy/prometheus*.yml
#   promtool check rules     deploy/prometheus/bridge-alerts.yml
#   promtool test rules      deploy/prometheus/bridge-alerts.test.yml (its unit tests)
#   alert structure          severity, annotations, runbook anchors, every alert
#                            fires and stays quiet in a test, the configs load it
#   dashboard (python3)      deploy/grafana/bridge-dashboard.json: JSON, titles,
#                            grid, datasource variable, only bridge_ metrics, and
#                            every query parses (promtool check rules)
#   used_metrics.py          tests/deploy/used_metrics.py lists the metrics used
#   nginx -t                 deploy/nginx/bridge.conf (with a throwaway certificate)
#   yamllint --strict        every YAML file under deploy/ (deploy/.yamllint)
#   structure (python3-yaml) Containerfile, compose.yaml, kubernetes/*.yaml: security
#                            settings, references between objects, and every
#                            flag passed to a bridge binary exists in that binary
# Each checker is also shown a deliberately broken copy, which it must reject:
# a checker that passes everything proves nothing.
#
# Usage: tests/deploy/check_deploy.sh REPO_ROOT [BUILD_DIR]
#   BUILD_DIR: where the built binaries are, for the flag and shared-library
#   checks. Given, the binaries must be there; not given, REPO_ROOT/build is
#   used if it holds them, else those checks are skipped with a note.
# Exit: 0 all passed, 1 something failed, 77 a needed tool is missing and could
# not be installed (ctest's SKIP_RETURN_CODE).
# Debian packages: systemd prometheus nginx-light yamllint openssl (python3-yaml
# comes with yamllint).
set -euo pipefail

root=$(cd "${1:?usage: check_deploy.sh REPO_ROOT [BUILD_DIR]}" && pwd)
build=${2:-$root/build}
# A build directory named on the command line (as ctest does) must hold the
# binaries; the default one may be absent (a checkout that was never built).
build_required=$(($# >= 2))
deploy=$root/deploy
# nginx is in /usr/sbin, which a non-root PATH may lack.
export PATH="$PATH:/usr/sbin:/sbin"

failures=0
pass() { printf 'PASS: %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*"; failures=$((failures + 1)); }
note() { printf 'NOTE: %s\n' "$*"; }
indent() { sed 's/^/    /'; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/check_deploy.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# ---- tools ------------------------------------------------------------------

have_tool() {
  case $1 in
    python3-yaml) python3 -c 'import yaml' 2>/dev/null ;;
    *) command -v "$1" >/dev/null 2>&1 ;;
  esac
}

# tool -> Debian package
declare -A package_of=(
  [systemd-analyze]=systemd [promtool]=prometheus [nginx]=nginx-light
  [yamllint]=yamllint [openssl]=openssl [python3-yaml]=python3-yaml
)
missing_tools() {
  local t
  for t in systemd-analyze promtool nginx yamllint openssl python3-yaml; do
    have_tool "$t" || echo "$t"
  done
}

# A missing tool is installed when we may (root, or sudo without a password),
# as tools/bridge.sh does. Note that Debian's nginx-light and prometheus
# packages start their services on install (ports 80 and 9090).
missing=$(missing_tools | xargs)
if [[ -n $missing ]]; then
  pkgs=$(for t in $missing; do echo "${package_of[$t]}"; done | sort -u | xargs)
  sudo=()
  ((EUID == 0)) || sudo=(sudo -n)
  if ((EUID == 0)) || sudo -n true 2>/dev/null; then
    echo "check_deploy: installing $pkgs (for: $missing)" >&2
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends $pkgs >/dev/null 2>&1 ||
      { "${sudo[@]}" apt-get update -qq >/dev/null 2>&1 || true
        "${sudo[@]}" apt-get install -y -qq --no-install-recommends $pkgs >/dev/null 2>&1 || true; }
  fi
  missing=$(missing_tools | xargs)
  if [[ -n $missing ]]; then
    pkgs=$(for t in $missing; do echo "${package_of[$t]}"; done | sort -u | xargs)
    echo "SKIP: missing $missing; install the Debian packages: apt-get install $pkgs"
    exit 77
  fi
fi

# ---- systemd units ----------------------------------------------------------
# systemd-analyze verify refuses a unit whose ExecStart binary is missing, so
# the copies point at stub executables. It exits 0 on unknown keys and bad
# values (it only warns), so any line naming one of our files is a failure too.

sd=$tmp/systemd
mkdir -p "$sd/units" "$sd/bin"
for b in bridge-controller bridge-gateway bridge-worker etcd; do
  printf '#!/bin/sh\nexit 0\n' >"$sd/bin/$b"
  chmod +x "$sd/bin/$b"
done

# verify_unit FILE: 0 when systemd-analyze has nothing to say about FILE.
verify_unit() {
  local file=$1 name out rc=0
  name=$(basename "$file")
  out=$(SYSTEMD_UNIT_PATH="$sd/units:" systemd-analyze verify --man=no "$file" 2>&1) || rc=$?
  local ours
  ours=$(grep -F -e "$sd/" -e "$name" <<<"$out" || true)
  if ((rc != 0)) || [[ -n $ours ]]; then
    printf '%s\n' "${ours:-$out}" | indent
    return 1
  fi
  # Lines about other units (the host's own) are not ours to judge.
  [[ -z $out ]] || printf '%s\n' "$out" | sed 's/^/    (not ours) /'
  return 0
}

to_stubs() { sed -e "s#/usr/local/bin/#$sd/bin/#g" -e "s#/usr/bin/etcd#$sd/bin/etcd#g" "$1"; }

for unit in "$deploy"/systemd/*.service; do
  name=$(basename "$unit")
  to_stubs "$unit" >"$sd/units/$name"
  if verify_unit "$sd/units/$name"; then
    pass "systemd-analyze verify $name"
  else
    fail "systemd-analyze verify $name"
  fi
done

# The etcd drop-in, on Debian's etcd.service when etcd-server is installed,
# else on a stand-in with the same shape.
if [[ -f /lib/systemd/system/etcd.service ]]; then
  to_stubs /lib/systemd/system/etcd.service >"$sd/units/etcd.service"
else
  printf '[Unit]\nDescription=etcd stand-in\n[Service]\nType=notify\nExecStart=%s\n[Install]\nWantedBy=multi-user.target\n' \
    "$sd/bin/etcd" >"$sd/units/etcd.service"
fi
mkdir -p "$sd/units/etcd.service.d"
cp "$deploy/systemd/etcd.service.d/bridge.conf" "$sd/units/etcd.service.d/bridge.conf"
if verify_unit "$sd/units/etcd.service"; then
  pass "systemd-analyze verify etcd.service with etcd.service.d/bridge.conf"
else
  fail "systemd-analyze verify etcd.service with etcd.service.d/bridge.conf"
fi
# Each ETCD_X_Y the drop-in sets must be a real etcd flag --x-y.
if command -v etcd >/dev/null 2>&1; then
  etcd_help=$(etcd --help 2>&1 || true)
  bad=""
  for v in $(sed -n 's/^Environment=ETCD_\([A-Z_]*\)=.*/\1/p' "$deploy/systemd/etcd.service.d/bridge.conf"); do
    f=$(tr 'A-Z_' 'a-z-' <<<"$v")
    grep -q -- "--$f " <<<"$etcd_help" || bad+=" ETCD_$v"
  done
  if [[ -z $bad ]]; then pass "etcd.service.d/bridge.conf: every ETCD_ variable is an etcd flag"
  else fail "etcd.service.d/bridge.conf: not etcd flags:$bad"; fi
else
  note "etcd is not installed: the drop-in's ETCD_ names were not checked against etcd --help"
fi

# Broken copies must fail: a misspelt key (only a warning for systemd), a
# missing binary, and a misspelt key in the drop-in.
mkdir -p "$sd/broken"
sed 's/^Restart=always/Restrat=always/' "$sd/units/bridge-controller.service" >"$sd/broken/bridge-controller.service"
sed "s#$sd/bin/bridge-worker#$sd/bin/no-such-binary#" "$sd/units/bridge-worker.service" >"$sd/broken/bridge-worker.service"
for b in bridge-controller bridge-worker; do
  if verify_unit "$sd/broken/$b.service" >/dev/null; then
    fail "systemd-analyze verify accepted a broken copy of $b.service"
  else
    pass "systemd-analyze verify rejects a broken copy of $b.service"
  fi
done
printf '\n[Service]\nTimeoutStopSecs=5\n' >>"$sd/units/etcd.service.d/bridge.conf"
if verify_unit "$sd/units/etcd.service" >/dev/null; then
  fail "systemd-analyze verify accepted a broken copy of etcd.service.d/bridge.conf"
else
  pass "systemd-analyze verify rejects a broken copy of etcd.service.d/bridge.conf"
fi

# ---- Prometheus -------------------------------------------------------------
# The scrape configs (each loads the alert rules: promtool check config checks
# the rule files it finds, but a rule_files glob that matches nothing is no
# error, so alert_structure below checks that each config names them).

mapfile -t prom_files < <(find "$deploy" -maxdepth 1 -name 'prometheus*.yml' -type f | sort)
if ((${#prom_files[@]} == 0)); then
  fail "no deploy/prometheus*.yml found"
fi
for f in "${prom_files[@]}"; do
  rel=${f#"$root"/}
  if out=$(promtool check config "$f" 2>&1); then
    pass "promtool check config $rel"
  else
    fail "promtool check config $rel"
    printf '%s\n' "$out" | indent
  fi
done
# The broken copy sits beside a copy of the rules, so that only its own fault
# can make it fail.
mkdir -p "$tmp/promcfg"
cp -r "$deploy/prometheus" "$tmp/promcfg/prometheus"
sed 's/scrape_interval: 15s/scrape_interval: fifteen seconds/' "$deploy/prometheus.yml" >"$tmp/promcfg/prometheus.yml"
if promtool check config "$tmp/promcfg/prometheus.yml" >/dev/null 2>&1; then
  fail "promtool accepted a broken copy of prometheus.yml"
else
  pass "promtool rejects a broken copy of prometheus.yml"
fi

# ---- alert rules ------------------------------------------------------------
#   promtool check rules   deploy/prometheus/bridge-alerts.yml
#   promtool test rules    deploy/prometheus/bridge-alerts.test.yml (its unit tests)
#   alert_structure        severity, summary/description/runbook, runbook anchors
#                          (in docs/troubleshooting.md once it exists), every alert
#                          both fires and stays quiet in the tests, every scrape
#                          config loads the rules, compose.yaml mounts them

rules=$deploy/prometheus/bridge-alerts.yml
rules_test=$deploy/prometheus/bridge-alerts.test.yml
if out=$(promtool check rules "$rules" 2>&1); then
  pass "promtool check rules ${rules#"$root"/} ($(sed -n 's/.*SUCCESS: \([0-9]*\) rules found.*/\1/p' <<<"$out") rules)"
else
  fail "promtool check rules ${rules#"$root"/}"
  printf '%s\n' "$out" | indent
fi
# promtool test rules reads the rule files relative to the test file.
if out=$(promtool test rules "$rules_test" 2>&1); then
  pass "promtool test rules ${rules_test#"$root"/}"
else
  fail "promtool test rules ${rules_test#"$root"/}"
  printf '%s\n' "$out" | indent
fi
# Broken copies: a rule with an unparsable duration; the tests expecting a
# wrong runbook; the rules without the absent() half of BridgeNoLeader (a test
# must notice an alert that no longer fires).
rb=$tmp/rules-broken
mkdir -p "$rb/bad-rules" "$rb/bad-test" "$rb/bad-alert"
sed '0,/for: 1m/s//for: one minute/' "$rules" >"$rb/bad-rules/bridge-alerts.yml"
if cmp -s "$rules" "$rb/bad-rules/bridge-alerts.yml" || promtool check rules "$rb/bad-rules/bridge-alerts.yml" >/dev/null 2>&1; then
  fail "promtool check rules accepted a broken copy of bridge-alerts.yml"
else
  pass "promtool check rules rejects a broken copy of bridge-alerts.yml"
fi
cp "$rules" "$rb/bad-test/"
sed 's/runbook: docs\/troubleshooting.md#no-leader$/runbook: docs\/troubleshooting.md#no-leaders/' "$rules_test" >"$rb/bad-test/bridge-alerts.test.yml"
cp "$rules_test" "$rb/bad-alert/"
sed 's/ or absent(bridge_controller_is_leader)$//' "$rules" >"$rb/bad-alert/bridge-alerts.yml"
if cmp -s "$rules_test" "$rb/bad-test/bridge-alerts.test.yml" || promtool test rules "$rb/bad-test/bridge-alerts.test.yml" >/dev/null 2>&1; then
  fail "promtool test rules passed tests that expect the wrong annotations"
elif cmp -s "$rules" "$rb/bad-alert/bridge-alerts.yml" || promtool test rules "$rb/bad-alert/bridge-alerts.test.yml" >/dev/null 2>&1; then
  fail "promtool test rules passed rules whose BridgeNoLeader misses absent()"
else
  pass "promtool test rules rejects broken copies (a wrong expectation, an alert that no longer fires)"
fi

alert_structure() {
  python3 - "$1" <<'PY'
import glob, os, re, sys
import yaml

root = sys.argv[1]
deploy = os.path.join(root, "deploy")
rules_path = os.path.join(deploy, "prometheus", "bridge-alerts.yml")
tests_path = os.path.join(deploy, "prometheus", "bridge-alerts.test.yml")
docs_path = os.path.join(root, "docs", "troubleshooting.md")
fails, passes, notes = [], [], []
fail = fails.append

rules = yaml.safe_load(open(rules_path)) or {}
alerts = {}  # name -> [rule]
for g in rules.get("groups") or []:
    for r in g.get("rules") or []:
        if "alert" in r:
            alerts.setdefault(r["alert"], []).append(r)
if not alerts:
    fail("bridge-alerts.yml: no alerts")
anchors = set()
for name, rs in alerts.items():
    for r in rs:
        sev = (r.get("labels") or {}).get("severity")
        if sev not in ("critical", "warning"):
            fail(f"bridge-alerts.yml {name}: severity label is {sev!r}, not critical or warning")
        ann = r.get("annotations") or {}
        for k in ("summary", "description", "runbook"):
            if not str(ann.get(k, "")).strip():
                fail(f"bridge-alerts.yml {name}: no {k} annotation")
        rb = str(ann.get("runbook", ""))
        m = re.fullmatch(r"docs/troubleshooting\.md#([a-z0-9-]+)", rb)
        if rb and not m:
            fail(f"bridge-alerts.yml {name}: runbook {rb!r} is not docs/troubleshooting.md#anchor")
        elif m:
            anchors.add(m.group(1))

# The anchors, as GitHub makes them from headings (or explicit ids).
if os.path.exists(docs_path):
    have = set()
    for line in open(docs_path, encoding="utf-8"):
        h = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if h:
            slug = re.sub(r"[^\w\- ]", "", h.group(1).strip().lower()).replace(" ", "-")
            have.add(slug)
        have.update(re.findall(r'<a\s+(?:id|name)="([^"]+)"', line))
        have.update(re.findall(r"\{#([A-Za-z0-9_-]+)\}", line))
    for a in sorted(anchors - have):
        fail(f"bridge-alerts.yml: runbook anchor #{a} is not a heading of docs/troubleshooting.md")
    passes.append(f"bridge-alerts.yml: {len(anchors)} runbook anchors exist in docs/troubleshooting.md")
else:
    notes.append("docs/troubleshooting.md does not exist yet: runbook anchors not checked: "
                 + " ".join("#" + a for a in sorted(anchors)))

# Every alert fires in some test and stays quiet in another.
tests = yaml.safe_load(open(tests_path)) or {}
if "bridge-alerts.yml" not in [os.path.basename(f) for f in tests.get("rule_files") or []]:
    fail("bridge-alerts.test.yml does not load bridge-alerts.yml")
fires, quiet = set(), set()
for t in tests.get("tests") or []:
    for a in t.get("alert_rule_test") or []:
        (fires if a.get("exp_alerts") else quiet).add(a.get("alertname"))
for name in sorted(alerts):
    if name not in fires:
        fail(f"bridge-alerts.test.yml: no test where {name} fires")
    if name not in quiet:
        fail(f"bridge-alerts.test.yml: no test where {name} stays quiet")
for name in sorted((fires | quiet) - set(alerts)):
    fail(f"bridge-alerts.test.yml tests {name}, which is not an alert of bridge-alerts.yml")

# Every scrape config loads the rules; compose mounts them where its config
# points (rule_files are relative to the config file's directory).
want = os.path.realpath(rules_path)
for cfg in sorted(glob.glob(os.path.join(deploy, "prometheus*.yml"))):
    rf = (yaml.safe_load(open(cfg)) or {}).get("rule_files") or []
    found = [os.path.realpath(os.path.join(os.path.dirname(cfg), p)) for p in rf]
    if want not in found:
        fail(f"{os.path.basename(cfg)}: rule_files does not load prometheus/bridge-alerts.yml ({rf})")
compose = yaml.safe_load(open(os.path.join(deploy, "compose.yaml"))) or {}
for name, svc in (compose.get("services") or {}).items():
    mounts = []
    for v in svc.get("volumes") or []:
        if isinstance(v, str) and ":" in v:
            src, tgt = v.split(":")[:2]
            mounts.append((src, tgt.rstrip("/")))
    for src, tgt in mounts:
        if not (src.startswith("./prometheus") and src.endswith(".yml")):
            continue
        cfg = os.path.join(deploy, src)
        if not os.path.exists(cfg):
            continue  # the structure checks report it
        for p in (yaml.safe_load(open(cfg)) or {}).get("rule_files") or []:
            inside = os.path.normpath(os.path.join(os.path.dirname(tgt), p))
            host = None
            for s2, t2 in mounts:
                if inside == t2 or inside.startswith(t2 + "/"):
                    host = os.path.normpath(os.path.join(deploy, s2 + inside[len(t2):]))
            if host is None:
                fail(f"compose.yaml service {name}: {src} loads {p} ({inside}), which is not mounted")
            elif not glob.glob(host):
                fail(f"compose.yaml service {name}: {inside} is mounted from {host}, which does not exist")

if not fails:
    passes.append(f"bridge-alerts.yml: {len(alerts)} alerts with severity, summary, description and "
                  "runbook; each fires and stays quiet in the tests; every scrape config and "
                  "compose.yaml load it")
for p in passes if not fails else []:
    print(f"PASS: {p}")
for n in notes:
    print(f"NOTE: {n}")
for f in fails:
    print(f"FAIL: {f}")
sys.exit(1 if fails else 0)
PY
}

# run_py_check NAME FUNCTION ARGS...: prints its output; its FAIL lines count.
run_py_check() {
  local name=$1 out
  shift
  if out=$("$@"); then
    printf '%s\n' "$out"
  else
    printf '%s\n' "$out"
    failures=$((failures + $(grep -c '^FAIL' <<<"$out" || true)))
    grep -q '^FAIL' <<<"$out" || fail "$name crashed"
  fi
}

run_py_check "alert structure checks" alert_structure "$root"
# ... which must reject a broken copy: an alert without a runbook, an alert no
# test fires, a config that no longer loads the rules, compose not mounting them.
ab=$tmp/alerts-broken
mkdir -p "$ab/docs"
cp -r "$deploy" "$ab/deploy"
sed -i '0,/runbook: docs\/troubleshooting.md#worker-lost/{/runbook: docs\/troubleshooting.md#worker-lost/d}' "$ab/deploy/prometheus/bridge-alerts.yml"
sed -i 's/alertname: BridgeStoreSlow$/alertname: BridgeStoreSlw/; s/^rule_files: .*//' "$ab/deploy/prometheus/bridge-alerts.test.yml" "$ab/deploy/prometheus-up-cluster.yml"
sed -i '/- .\/prometheus:\/etc\/prometheus\/prometheus:ro/d' "$ab/deploy/compose.yaml"
broken_out=$(alert_structure "$ab" || true)
if grep -q 'BridgeWorkerLost: no runbook' <<<"$broken_out" && grep -q 'no test where BridgeStoreSlow fires' <<<"$broken_out" &&
   grep -q 'prometheus-up-cluster.yml: rule_files' <<<"$broken_out" && grep -q 'compose.yaml service prometheus: .* not mounted' <<<"$broken_out"; then
  pass "alert structure checks reject a broken copy (no runbook, an alert never fired, rules not loaded, not mounted)"
else
  fail "alert structure checks accepted a broken copy"
  printf '%s\n' "$broken_out" | indent
fi

# ---- Grafana dashboard ------------------------------------------------------
# deploy/grafana/bridge-dashboard.json: valid JSON; a title, the uid, a
# Prometheus datasource variable every panel and query uses; every panel has a
# title and a place on the grid; every query uses only bridge_ metrics, and is
# valid PromQL (promtool check rules on a rule file made of the queries, with
# Grafana's $__ variables replaced).

dashboard=$deploy/grafana/bridge-dashboard.json
dashboard_check() {
  python3 - "$1" "$2" "$root/tests/deploy" <<'PY'
import json, re, sys
sys.path.insert(0, sys.argv[3])
from used_metrics import all_panels, identifiers

path, rules_out = sys.argv[1], sys.argv[2]
fails = []
fail = fails.append
try:
    dash = json.load(open(path))
except ValueError as e:
    print(f"FAIL: bridge-dashboard.json is not JSON: {e}")
    sys.exit(1)
for k in ("title", "uid"):
    if not dash.get(k):
        fail(f"bridge-dashboard.json: no {k}")
if not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 36:
    fail(f"bridge-dashboard.json: schemaVersion {dash.get('schemaVersion')!r} (want 36 or later)")
ds_vars = [v["name"] for v in (dash.get("templating") or {}).get("list") or []
           if v.get("type") == "datasource" and v.get("query") == "prometheus"]
if not ds_vars:
    fail("bridge-dashboard.json: no datasource variable of type prometheus")
ds_uids = {f"${{{n}}}" for n in ds_vars} | {f"${n}" for n in ds_vars}

def uses_var(ds):
    uid = ds.get("uid") if isinstance(ds, dict) else ds
    return uid in ds_uids

ids, records, n_panels, n_targets = set(), [], 0, 0
cells = {}
for p in all_panels(dash.get("panels")):
    n_panels += 1
    kind, title = p.get("type"), p.get("title")
    where = f"panel {p.get('id')} ({title!r})"
    if not isinstance(title, str) or not title.strip():
        fail(f"bridge-dashboard.json: {where} has no title")
    if p.get("id") in ids or not isinstance(p.get("id"), int):
        fail(f"bridge-dashboard.json: {where}: id missing or not unique")
    ids.add(p.get("id"))
    g = p.get("gridPos") or {}
    if not all(isinstance(g.get(k), int) for k in "xywh") or g["w"] <= 0 or g["h"] <= 0 or g["x"] + g["w"] > 24:
        fail(f"bridge-dashboard.json: {where}: bad gridPos {g}")
    else:
        for cx in range(g["x"], g["x"] + g["w"]):
            for cy in range(g["y"], g["y"] + g["h"]):
                if (cx, cy) in cells:
                    fail(f"bridge-dashboard.json: {where} overlaps panel {cells[(cx, cy)]}")
                    break
                cells[(cx, cy)] = p.get("id")
            else:
                continue
            break
    if kind == "row":
        continue
    if kind == "text":
        if not (p.get("options") or {}).get("content", "").strip():
            fail(f"bridge-dashboard.json: {where}: empty text")
        continue
    if not uses_var(p.get("datasource")):
        fail(f"bridge-dashboard.json: {where}: datasource is not the datasource variable")
    targets = p.get("targets") or []
    if not targets:
        fail(f"bridge-dashboard.json: {where}: no queries")
    for t in targets:
        n_targets += 1
        expr = t.get("expr", "")
        tw = f"{where} query {t.get('refId')}"
        if not uses_var(t.get("datasource", p.get("datasource"))):
            fail(f"bridge-dashboard.json: {tw}: datasource is not the datasource variable")
        names = identifiers(expr)
        if not names:
            fail(f"bridge-dashboard.json: {tw}: no metric in {expr!r}")
        for n in names:
            if not re.fullmatch(r"bridge_[a-z0-9_]+", n):
                fail(f"bridge-dashboard.json: {tw}: {n} is not a bridge_ metric")
        e = re.sub(r"\$(__rate_interval|\{__rate_interval\})", "5m", expr)
        e = re.sub(r"\$(__interval|\{__interval\})", "1m", e)
        e = re.sub(r"\$(__range|\{__range\})", "1h", e)
        records.append({"record": f"dashboard:panel_{p.get('id')}:{t.get('refId')}", "expr": e})
# JSON is YAML: promtool reads it as a rule file.
json.dump({"groups": [{"name": "dashboard", "rules": records}]}, open(rules_out, "w"), indent=1)
if not fails:
    print(f"PASS: bridge-dashboard.json: {n_panels} panels, {n_targets} queries: titles, grid, "
          "datasource variable, bridge_ metrics only")
for f in fails:
    print(f"FAIL: {f}")
sys.exit(1 if fails else 0)
PY
}
# dashboard_promql RULES: promtool check rules on the queries.
dashboard_promql() {
  local out
  if out=$(promtool check rules "$1" 2>&1); then
    echo "PASS: bridge-dashboard.json: every query is valid PromQL (promtool check rules)"
  else
    echo "FAIL: bridge-dashboard.json: a query is not valid PromQL:"
    printf '%s\n' "$out" | indent
    return 1
  fi
}
run_py_check "dashboard checks" dashboard_check "$dashboard" "$tmp/dashboard-queries.yml"
[[ -s $tmp/dashboard-queries.yml ]] && run_py_check "dashboard PromQL check" dashboard_promql "$tmp/dashboard-queries.yml"
# Broken copies: not JSON; a panel without a title, a query on a metric not
# ours, a query that does not parse.
sed '$d' "$dashboard" >"$tmp/dashboard-truncated.json"
if dashboard_check "$tmp/dashboard-truncated.json" "$tmp/dq-truncated.yml" >/dev/null 2>&1; then
  fail "dashboard checks accepted a truncated copy of bridge-dashboard.json"
else
  pass "dashboard checks reject a truncated copy of bridge-dashboard.json (not JSON)"
fi
python3 - "$dashboard" "$tmp/dashboard-broken.json" <<'PY'
import json, sys
dash = json.load(open(sys.argv[1]))
queried = [p for p in dash["panels"] if p.get("targets")]
queried[0]["title"] = ""
queried[1]["targets"][0]["expr"] = "sum(rate(up[5m]))"
queried[2]["targets"][0]["expr"] = "sum(rate(bridge_gateway_webhooks_total[$__rate_interval])"
json.dump(dash, open(sys.argv[2], "w"))
PY
broken_out=$(dashboard_check "$tmp/dashboard-broken.json" "$tmp/dq-broken.yml" || true)
if grep -q 'has no title' <<<"$broken_out" && grep -q 'up is not a bridge_ metric' <<<"$broken_out" &&
   ! dashboard_promql "$tmp/dq-broken.yml" >/dev/null 2>&1; then
  pass "dashboard checks reject a broken copy (no title, a metric not ours, a query that does not parse)"
else
  fail "dashboard checks accepted a broken copy of bridge-dashboard.json"
  printf '%s\n' "$broken_out" | indent
fi

# ---- metrics the dashboard and the alerts use -------------------------------
# tests/deploy/used_metrics.py lists them (for the test that compares them with
# a running cluster's /metrics). Here: that it runs, and a note for any name
# no source file registers (a typo, or a metric not written yet).
if used=$(python3 "$root/tests/deploy/used_metrics.py" "$root" 2>&1) && [[ -n $used ]]; then
  pass "tests/deploy/used_metrics.py lists $(wc -l <<<"$used") metrics used by the dashboard and the alert rules"
  registered=$(grep -rhoE --include='*.cc' --include='*.h' '"bridge_[a-z0-9_]+"' \
    "$root/common" "$root/gateway" "$root/controller" "$root/media_worker" 2>/dev/null | tr -d '"' | sort -u)
  unknown=$(comm -23 <(sort -u <<<"$used") <(printf '%s\n' "$registered") | xargs)
  [[ -z $unknown ]] || note "used by the dashboard or the alerts but named in no source file: $unknown"
else
  fail "tests/deploy/used_metrics.py failed"
  printf '%s\n' "$used" | indent
fi

# ---- nginx ------------------------------------------------------------------
# bridge.conf is an http-context file. A wrapper nginx.conf includes a copy
# whose certificate paths point at a throwaway self-signed pair and whose ports
# 80/443 become 18080/18443 (nginx -t binds the listen addresses: a non-root
# user may not bind ports below 1024; an address already in use does not fail
# it). Every other path nginx -t opens is in the temp dir, so this runs as any
# user.

ng=$tmp/nginx
mkdir -p "$ng"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=bridge.example.com" \
  -keyout "$ng/key.pem" -out "$ng/cert.pem" >/dev/null 2>&1
cat >"$ng/nginx.conf" <<EOF
worker_processes 1;
pid $ng/nginx.pid;
error_log $ng/error.log;
events {}
http {
  access_log $ng/access.log;
  client_body_temp_path $ng/body;
  proxy_temp_path $ng/proxy;
  fastcgi_temp_path $ng/fastcgi;
  uwsgi_temp_path $ng/uwsgi;
  scgi_temp_path $ng/scgi;
  include $ng/bridge.conf;
}
EOF
# nginx_test CONF: nginx -t on the wrapper with CONF as bridge.conf.
nginx_test() {
  sed -e "s#^\([[:space:]]*ssl_certificate\)[[:space:]].*;#\1 $ng/cert.pem;#" \
      -e "s#^\([[:space:]]*ssl_certificate_key\)[[:space:]].*;#\1 $ng/key.pem;#" \
      -e 's#^\([[:space:]]*listen[[:space:]]\{1,\}\(.*:\)\{0,1\}\)80\([[:space:];]\)#\118080\3#' \
      -e 's#^\([[:space:]]*listen[[:space:]]\{1,\}\(.*:\)\{0,1\}\)443\([[:space:];]\)#\118443\3#' \
      "$1" >"$ng/bridge.conf"
  local out rc=0
  out=$(nginx -t -p "$ng/" -e "$ng/error.log" -c "$ng/nginx.conf" 2>&1) || rc=$?
  # Warnings about our file (e.g. a duplicate or ignored directive) fail too.
  if ((rc != 0)) || grep -q '\[warn\].*bridge\.conf' <<<"$out"; then
    printf '%s\n' "$out" | indent
    return 1
  fi
}
if grep -q 'ssl_certificate_key' "$deploy/nginx/bridge.conf" && nginx_test "$deploy/nginx/bridge.conf"; then
  pass "nginx -t deploy/nginx/bridge.conf"
else
  fail "nginx -t deploy/nginx/bridge.conf"
fi
sed 's/proxy_pass /proxy_pas /' "$deploy/nginx/bridge.conf" >"$tmp/bridge-broken.conf"
if nginx_test "$tmp/bridge-broken.conf" >/dev/null; then
  fail "nginx -t accepted a broken copy of bridge.conf"
else
  pass "nginx -t rejects a broken copy of bridge.conf"
fi

# ---- YAML -------------------------------------------------------------------

if out=$(yamllint --strict -c "$deploy/.yamllint" "$deploy" 2>&1); then
  pass "yamllint --strict -c deploy/.yamllint deploy/ ($(find "$deploy" -name '*.y*ml' | wc -l) files)"
else
  fail "yamllint deploy/"
  printf '%s\n' "$out" | indent
fi
printf 'a: 1\nb:\n  - x\n   - y\na: 2\n' >"$tmp/broken.yaml"
if yamllint --strict -c "$deploy/.yamllint" "$tmp/broken.yaml" >/dev/null 2>&1; then
  fail "yamllint accepted a broken YAML file"
else
  pass "yamllint rejects a broken YAML file"
fi

# ---- what the built binaries tell ------------------------------------------
# Flags per binary (from --helpfull) for the structure checks, and the Debian
# packages of the shared libraries they link, for the Containerfile.

declare -A bin_path=(
  [bridge-gateway]=$build/gateway/bridge-gateway
  [bridge-controller]=$build/controller/bridge-controller
  [bridge-worker]=$build/media_worker/bridge-worker
  [bridgectl]=$build/tools/bridgectl
)
flags_dir=$tmp/flags
mkdir -p "$flags_dir"
have_binaries=1
for b in "${!bin_path[@]}"; do
  if [[ -x ${bin_path[$b]} ]]; then
    # absl's --helpfull exits 1 after printing; lines look like "    --name (help...".
    { "${bin_path[$b]}" --helpfull 2>&1 || true; } >"$flags_dir/$b.help"
    sed -n 's/^ *--\([a-z0-9_]*\) (.*/\1/p' "$flags_dir/$b.help" | sort -u >"$flags_dir/$b"
    [[ -s $flags_dir/$b ]] || { fail "$b --helpfull listed no flags"; rm -f "$flags_dir/$b"; }
  else
    have_binaries=0
  fi
done
if ((!have_binaries)); then
  if ((build_required)); then
    fail "binaries missing in $build (bridge-gateway, bridge-controller, bridge-worker, bridgectl)"
  else
    note "binaries not built in $build: flags passed to them were not checked"
  fi
fi

# ---- Containerfile ----------------------------------------------------------

cf=$deploy/Containerfile
cf_ok=1
cf_fail() { fail "Containerfile: $*"; cf_ok=0; }
# Instructions with their continuation lines joined.
joined=$(sed -e ':a' -e '/\\$/N; s/\\\n/ /; ta' "$cf" | grep -v '^[[:space:]]*#')
froms=$(grep -E '^FROM ' <<<"$joined" || true)
[[ $(head -1 <<<"$froms") =~ ^FROM\ debian:12\ AS\ build$ ]] || cf_fail "the first stage is not 'FROM debian:12 AS build'"
[[ $(tail -1 <<<"$froms") =~ ^FROM\ debian:12-slim$ ]] || cf_fail "the final stage is not 'FROM debian:12-slim'"
final=$(awk '/^FROM /{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' <<<"$joined")
user=$(sed -n 's/^USER[[:space:]]\{1,\}//p' <<<"$final" | tail -1)
if [[ -z $user ]]; then
  cf_fail "the final stage sets no USER"
elif [[ ${user%%:*} =~ ^(0|root)$ || ! ${user%%:*} =~ ^[0-9]+$ ]]; then
  cf_fail "the final stage's USER '$user' is root or not numeric (runAsNonRoot needs a number)"
fi
grep -qE '^ENTRYPOINT' <<<"$final" && cf_fail "ENTRYPOINT set: the command should name the binary"
grep -qE '^CMD ' <<<"$final" || cf_fail "no default CMD"
for p in 3000 7000 7100 9100 9101; do
  grep -qE "^EXPOSE .*\\b$p\\b" <<<"$final" || cf_fail "port $p not in EXPOSE"
done
for b in bridge-gateway bridge-controller bridge-worker bridgectl; do
  grep -q "$b" "$cf" || cf_fail "$b is not built or copied"
done
grep -qE '^(COPY|ADD) +\. ' <<<"$final" && cf_fail "the final stage copies the build context"
secret_names='ELEVENLABS_API_KEY|WHATSAPP_ACCESS_TOKEN|WHATSAPP_WEBHOOK_VERIFY_TOKEN|WEBHOOK_SIGNATURE_SECRET|SESSION_SECRET|BRIDGE_CLUSTER_TOKEN|BRIDGE_ADMIN_TOKEN|SSL_KEY_PATH'
grep -qE "^(ENV|ARG|LABEL)\b.*\b($secret_names)\b" <<<"$joined" && cf_fail "sets a secret's env name (ENV/ARG/LABEL)"
ign=$deploy/Containerfile.dockerignore
if [[ -f $ign ]]; then
  for p in build '**/.env' '**/*.env'; do
    grep -qxF "$p" "$ign" || cf_fail "Containerfile.dockerignore does not exclude $p"
  done
else
  cf_fail "no deploy/Containerfile.dockerignore (the build context would carry build/ and .env)"
fi
# Build stage: every package tools/bridge.sh builds with (but etcd-server and
# curl, which only tests and `up --cluster` use).
build_stage=$(awk '/^FROM /{n++} n==1' <<<"$joined")
bridge_pkgs=$(sed -n '/^BUILD_PACKAGES=(/,/^)/p' "$root/tools/bridge.sh" | sed '1d;$d' | tr ' ' '\n' | grep -E '^[a-z0-9][a-z0-9.+-]+$' || true)
[[ -n $bridge_pkgs ]] || cf_fail "could not read BUILD_PACKAGES from tools/bridge.sh"
for p in $bridge_pkgs; do
  [[ $p == etcd-server || $p == curl ]] && continue
  grep -qE "(^|[[:space:]])$(sed 's/[+.]/\\&/g' <<<"$p")([[:space:]]|$)" <<<"$build_stage" ||
    cf_fail "build stage lacks $p (tools/bridge.sh BUILD_PACKAGES)"
done
# Runtime stage: the packages of every shared library the binaries link.
sanitize=$(sed -n 's/^BRIDGE_SANITIZE:[A-Z]*=//p' "$build/CMakeCache.txt" 2>/dev/null || true)
if ((have_binaries)) && [[ -z $sanitize ]] && command -v dpkg >/dev/null; then
  libs=$(for b in "${bin_path[@]}"; do ldd "$b"; done | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u)
  # usrmerge: dpkg may know a file under /lib or /usr/lib, by its link name or
  # its real name; ask for every spelling at once (dpkg -S is slow to start).
  candidates() { local real; real=$(readlink -f "$1"); printf '%s\n' "$1" "$real" "/usr$real" "${real#/usr}"; }
  owners=$(for lib in $libs; do candidates "$lib"; done | sort -u | xargs dpkg -S 2>/dev/null | grep -v '^diversion' || true)
  for lib in $libs; do
    found=0
    for c in $(candidates "$lib"); do grep -qF ": $c" <<<"$owners" && found=1 && break; done
    ((found)) || cf_fail "no Debian package owns $lib (linked by the built binaries)"
  done
  needed=$(sed 's/: .*//' <<<"$owners" | tr ',' '\n' | sed 's/^ *//; s/:.*//' | sort -u)
  for p in $needed; do
    # In every Debian image (libc6 is Essential and needs libgcc-s1).
    [[ $p == libc6 || $p == libgcc-s1 ]] && continue
    grep -qE "(^|[[:space:]])$(sed 's/[+.]/\\&/g' <<<"$p")([[:space:]]|$)" <<<"$final" ||
      cf_fail "runtime stage lacks $p (a library the built binaries link)"
  done
  [[ -n $needed ]] || cf_fail "ldd/dpkg found no libraries for the built binaries"
elif [[ -n $sanitize ]]; then
  note "$build is a sanitizer build: the runtime libraries were not compared"
fi
((cf_ok)) && pass "Containerfile structure (stages, non-root USER $user, no secrets, ports, build and runtime packages)"

# ---- structure of compose.yaml, kubernetes/, systemd flags -----------------

structure() {
  python3 - "$1" "$flags_dir" <<'PY'
import glob, os, re, sys
import yaml

deploy, flags_dir = sys.argv[1], sys.argv[2]
fails = []
passes = []

def fail(msg): fails.append(msg)

known = {}
for path in glob.glob(os.path.join(flags_dir, "*")):
    if path.endswith(".help"):
        continue
    known[os.path.basename(path)] = set(open(path).read().split())
BINARIES = {"bridge-gateway", "bridge-controller", "bridge-worker", "bridgectl"}

def check_flags(where, binary, args):
    if binary not in BINARIES:
        fail(f"{where}: '{binary}' is not one of the bridge binaries")
        return
    if binary not in known:
        return  # not built: nothing to compare with
    for a in args:
        m = re.match(r"--?([A-Za-z0-9_]+)", a)
        if a.startswith("-") and m and m.group(1) not in known[binary]:
            fail(f"{where}: {binary} has no flag --{m.group(1)}")

def dur_seconds(v):
    if isinstance(v, (int, float)):
        return v
    total, n = 0, 0
    for num, unit in re.findall(r"(\d+)(h|m|s)", str(v)):
        total += int(num) * {"h": 3600, "m": 60, "s": 1}[unit]
        n += 1
    return total if n else None

# --- kubernetes --------------------------------------------------------------
kdir = os.path.join(deploy, "kubernetes")
docs = {}  # file -> [docs]
for path in sorted(glob.glob(os.path.join(kdir, "*.yaml"))):
    docs[os.path.basename(path)] = [d for d in yaml.safe_load_all(open(path)) if d is not None]

kust = docs.pop("kustomization.yaml", [None])[0]
listed = set((kust or {}).get("resources", []))
present = set(docs) - {"secret.example.yaml"}
if not kust:
    fail("kubernetes/kustomization.yaml missing")
else:
    for f in sorted(present - listed):
        fail(f"kubernetes/{f} is not listed in kustomization.yaml")
    for f in sorted(listed - present):
        fail(f"kustomization.yaml lists {f}, which does not exist")
    if "secret.example.yaml" in listed:
        fail("kustomization.yaml ships secret.example.yaml's placeholder values")

objs = []
for f, ds in docs.items():
    for d in ds:
        for k in ("apiVersion", "kind"):
            if k not in d:
                fail(f"kubernetes/{f}: a document without {k}")
        if not d.get("metadata", {}).get("name"):
            fail(f"kubernetes/{f}: a {d.get('kind')} without metadata.name")
        objs.append((f, d))

def by_kind(kind):
    return [(f, d) for f, d in objs if d.get("kind") == kind]

secret = next((d for f, d in by_kind("Secret")), None)
secret_keys = set((secret or {}).get("stringData", {}) or {})
for name in ("ELEVENLABS_API_KEY", "WHATSAPP_ACCESS_TOKEN", "WHATSAPP_WEBHOOK_VERIFY_TOKEN",
             "WEBHOOK_SIGNATURE_SECRET", "SESSION_SECRET", "BRIDGE_CLUSTER_TOKEN", "BRIDGE_ADMIN_TOKEN"):
    if name not in secret_keys:
        fail(f"secret.example.yaml lacks {name}")
for k, v in ((secret or {}).get("stringData") or {}).items():
    if "EXAMPLE" not in str(v):
        fail(f"secret.example.yaml: {k} does not look like a placeholder")
cm = next((d for f, d in by_kind("ConfigMap")), None)
cm_keys = set((cm or {}).get("data", {}) or {})
for name in ("ELEVENLABS_AGENT_ID", "WHATSAPP_PHONE_NUMBER_ID"):
    if name not in cm_keys:
        fail(f"configmap.yaml lacks {name}")

workloads = by_kind("Deployment") + by_kind("StatefulSet")
for f, w in workloads:
    name = w["metadata"]["name"]
    where = f"kubernetes/{f} {w['kind']} {name}"
    spec = w["spec"]
    tpl = spec["template"]
    labels = tpl["metadata"].get("labels", {})
    sel = spec["selector"].get("matchLabels", {})
    if any(labels.get(k) != v for k, v in sel.items()):
        fail(f"{where}: selector does not match the pod labels")
    pod = tpl["spec"]
    psc = pod.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True:
        fail(f"{where}: pod securityContext.runAsNonRoot is not true")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        fail(f"{where}: pod seccompProfile is not RuntimeDefault")
    if pod.get("automountServiceAccountToken") is not False:
        fail(f"{where}: automountServiceAccountToken is not false")
    for c in pod.get("containers", []):
        cw = f"{where} container {c['name']}"
        sc = c.get("securityContext", {})
        if sc.get("readOnlyRootFilesystem") is not True:
            fail(f"{cw}: readOnlyRootFilesystem is not true")
        if sc.get("allowPrivilegeEscalation") is not False:
            fail(f"{cw}: allowPrivilegeEscalation is not false")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            fail(f"{cw}: capabilities do not drop ALL")
        res = c.get("resources", {})
        if not res.get("requests") or not res.get("limits", {}).get("memory"):
            fail(f"{cw}: resources need requests and a memory limit")
        env = {e["name"]: e for e in c.get("env", [])}
        for e in env.values():
            ref = e.get("valueFrom", {})
            if "secretKeyRef" in ref:
                r = ref["secretKeyRef"]
                if r.get("name") != (secret or {}).get("metadata", {}).get("name") or r.get("key") not in secret_keys:
                    fail(f"{cw}: env {e['name']} names secret key {r.get('name')}/{r.get('key')}, not in secret.example.yaml")
            if "configMapKeyRef" in ref:
                r = ref["configMapKeyRef"]
                if r.get("name") != (cm or {}).get("metadata", {}).get("name") or r.get("key") not in cm_keys:
                    fail(f"{cw}: env {e['name']} names config key {r.get('name')}/{r.get('key')}, not in configmap.yaml")
        args = [str(a) for a in c.get("command", []) + c.get("args", [])]
        for a in args:
            for var in re.findall(r"\$\(([A-Z_]+)\)", a):
                if var not in env:
                    fail(f"{cw}: $({var}) in its arguments is not in its env")
        port_names = {p.get("name") for p in c.get("ports", [])} | {p.get("containerPort") for p in c.get("ports", [])}
        for probe in ("readinessProbe", "livenessProbe"):
            p = c.get(probe, {})
            for kind in ("httpGet", "tcpSocket", "grpc"):
                if kind in p and p[kind].get("port") not in port_names:
                    fail(f"{cw}: {probe} port {p[kind].get('port')} is not a container port")
        if c.get("command") and c["command"][0] in BINARIES:
            check_flags(cw, c["command"][0], c.get("args", []))
            if not c.get("readinessProbe") or not c.get("livenessProbe"):
                fail(f"{cw}: needs a readiness and a liveness probe")
        if c["name"] == "controller":
            if c.get("readinessProbe", {}).get("grpc", {}).get("service") != "bridge.v1.Ingest":
                fail(f"{cw}: readiness must be the gRPC health of bridge.v1.Ingest (leader only)")
            if not any(a.startswith("--advertise=$(POD_IP)") for a in args):
                fail(f"{cw}: --advertise must be the pod IP")
            if not any(a.startswith("--store=etcd:") for a in args):
                fail(f"{cw}: no --store=etcd:")
        if c["name"] == "worker" and (pod.get("terminationGracePeriodSeconds") or 30) < 150:
            fail(f"{cw}: terminationGracePeriodSeconds below 150 s (the 2 min delivery budget)")
        if c["name"] == "gateway":
            if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
                fail(f"{cw}: readiness should be /readyz")
            if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
                fail(f"{cw}: liveness should be /healthz")
        if c["name"] == "etcd":
            for want in ("--auto-compaction-mode=periodic", "--auto-compaction-retention=1h",
                         "--quota-backend-bytes=2147483648"):
                if want not in args:
                    fail(f"{cw}: lacks {want}")

def matching_workloads(selector):
    return [(f, w) for f, w in workloads
            if selector and all(w["spec"]["template"]["metadata"].get("labels", {}).get(k) == v
                                for k, v in selector.items())]

for f, s in by_kind("Service"):
    where = f"kubernetes/{f} Service {s['metadata']['name']}"
    ws = matching_workloads(s["spec"].get("selector", {}))
    if not ws:
        fail(f"{where}: its selector matches no workload")
        continue
    names = set()
    for _, w in ws:
        for c in w["spec"]["template"]["spec"]["containers"]:
            names |= {p.get("name") for p in c.get("ports", [])} | {p.get("containerPort") for p in c.get("ports", [])}
    for p in s["spec"].get("ports", []):
        if p.get("targetPort", p.get("port")) not in names:
            fail(f"{where}: targetPort {p.get('targetPort')} is not a container port")
for f, p in by_kind("PodDisruptionBudget"):
    if not matching_workloads(p["spec"].get("selector", {}).get("matchLabels", {})):
        fail(f"kubernetes/{f} PodDisruptionBudget {p['metadata']['name']}: its selector matches no workload")
svc_names = {s["metadata"]["name"]: s for _, s in by_kind("Service")}
for f, i in by_kind("Ingress"):
    if not i["spec"].get("tls"):
        fail(f"kubernetes/{f} Ingress: no TLS")
    for rule in i["spec"].get("rules", []):
        for p in rule.get("http", {}).get("paths", []):
            b = p["backend"]["service"]["name"]
            if b not in svc_names:
                fail(f"kubernetes/{f} Ingress: backend Service {b} does not exist")
etcd_pdb = [p for _, p in by_kind("PodDisruptionBudget") if p["metadata"]["name"] == "bridge-etcd"]
if not etcd_pdb or etcd_pdb[0]["spec"].get("minAvailable") != 2:
    fail("kubernetes/etcd.yaml: the etcd PodDisruptionBudget must keep minAvailable: 2")
passes.append(f"kubernetes/: {len(objs)} objects: security contexts, probes, resources, "
              "secret/config keys, selectors, ports, kustomization, bridge flags")

# --- compose -----------------------------------------------------------------
compose_path = os.path.join(deploy, "compose.yaml")
compose = yaml.safe_load(open(compose_path))
services = compose.get("services", {})
for name, svc in services.items():
    where = f"compose.yaml service {name}"
    cmd = svc.get("command") or []
    if isinstance(cmd, str):
        cmd = cmd.split()
    if cmd and cmd[0] in BINARIES:
        check_flags(where, cmd[0], cmd[1:])
        if svc.get("restart") != "always":
            fail(f"{where}: restart is not always")
        for ef in svc.get("env_file", []):
            if not os.path.exists(os.path.join(deploy, ef + ".example")):
                fail(f"{where}: env_file {ef} has no {ef}.example beside it")
        if cmd[0] == "bridge-worker" and (dur_seconds(svc.get("stop_grace_period", "10s")) or 0) < 150:
            fail(f"{where}: stop_grace_period below 150 s (the 2 min delivery budget)")
        if cmd[0] == "bridge-controller":
            if "controller.env" not in svc.get("env_file", []):
                fail(f"{where}: the admin token (controller.env) is not given to it")
        elif "controller.env" in svc.get("env_file", []):
            fail(f"{where}: gets controller.env (the admin token) but is not a controller")
    for v in svc.get("volumes", []):
        src = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
        if src.startswith("./") and not os.path.exists(os.path.join(deploy, src)):
            fail(f"{where}: mounts {src}, which does not exist")
passes.append(f"compose.yaml: {len(services)} services: flags, restart, env files, grace periods, mounts")

# --- systemd ExecStart and the *_ARGS examples -------------------------------
for unit in sorted(glob.glob(os.path.join(deploy, "systemd", "*.service"))):
    for line in open(unit):
        if line.startswith("ExecStart="):
            words = line.split("=", 1)[1].split()
            check_flags(f"systemd/{os.path.basename(unit)}", os.path.basename(words[0]),
                        [w for w in words[1:] if not w.startswith("$")])
arg_vars = {"CONTROLLER_ARGS": "bridge-controller", "GATEWAY_ARGS": "bridge-gateway",
            "WORKER_ARGS": "bridge-worker"}
for line in open(os.path.join(deploy, "bridge.env.example")):
    m = re.match(r"#?\s*([A-Z_]+_ARGS)=\"?([^\"]*)\"?\s*$", line.strip())
    if m and m.group(1) in arg_vars:
        check_flags(f"bridge.env.example {m.group(1)}", arg_vars[m.group(1)], m.group(2).split())
passes.append("systemd units and bridge.env.example: flags given to the binaries")

# --- nginx body limit = the gateway's --max_body_bytes default ----------------
conf = open(os.path.join(deploy, "nginx", "bridge.conf")).read()
m = re.search(r"^\s*client_max_body_size\s+(\d+)([kKmM]?);", conf, re.M)
help_path = os.path.join(flags_dir, "bridge-gateway.help")
if not m:
    fail("nginx/bridge.conf: no client_max_body_size")
elif os.path.exists(help_path):
    size = int(m.group(1)) * {"": 1, "k": 1024, "m": 1 << 20}[m.group(2).lower()]
    h = re.search(r"--max_body_bytes \(.*?default: (\d+);", open(help_path).read(), re.S)
    if not h:
        fail("bridge-gateway --helpfull shows no --max_body_bytes default")
    elif int(h.group(1)) != size:
        fail(f"nginx/bridge.conf: client_max_body_size is {size} bytes, the gateway's --max_body_bytes {h.group(1)}")
    else:
        passes.append(f"nginx/bridge.conf: client_max_body_size = the gateway's --max_body_bytes ({size})")

for p in passes if not fails else []:
    print(f"PASS: {p}")
for f in fails:
    print(f"FAIL: {f}")
sys.exit(1 if fails else 0)
PY
}

if out=$(structure "$deploy"); then
  printf '%s\n' "$out"
else
  printf '%s\n' "$out"
  failures=$((failures + $(grep -c '^FAIL' <<<"$out" || true)))
  grep -q '^FAIL' <<<"$out" || fail "structure checks crashed"
fi
# ... and they must reject a broken copy: a writable root file system, a secret
# key that does not exist and (with the binaries built) a flag no binary has.
cp -r "$deploy" "$tmp/deploy-broken"
sed -i 's/readOnlyRootFilesystem: true/readOnlyRootFilesystem: false/' "$tmp/deploy-broken/kubernetes/gateway.yaml"
sed -i 's/key: SESSION_SECRET}/key: SESSION_SECRT}/' "$tmp/deploy-broken/kubernetes/worker.yaml"
sed -i 's/- --leader_lease=5s/- --leader_leese=5s/' "$tmp/deploy-broken/kubernetes/controller.yaml"
broken_out=$(structure "$tmp/deploy-broken" || true)
if grep -q 'readOnlyRootFilesystem' <<<"$broken_out" && grep -q 'SESSION_SECRT' <<<"$broken_out" &&
   { ((!have_binaries)) || grep -q 'no flag --leader_leese' <<<"$broken_out"; }; then
  pass "structure checks reject a broken copy (writable root, missing secret key$( ((have_binaries)) && echo ', unknown flag'))"
else
  fail "structure checks accepted a broken copy"
  printf '%s\n' "$broken_out" | indent
fi

# ---- result -----------------------------------------------------------------
if ((failures)); then
  echo "check_deploy: $failures check(s) failed"
  exit 1
fi
echo "check_deploy: all checks passed"
