#!/usr/bin/env python3
"""Lists the metrics the Grafana dashboard and the Prometheus alert rules use.

Usage: tests/deploy/used_metrics.py REPO_ROOT

Prints, one per line and sorted, every metric name (bridge_[a-z0-9_]+, with
the _bucket/_sum/_count suffixes of histograms stripped) in the PromQL of
  deploy/grafana/bridge-dashboard.json   (every panel target's expr)
  deploy/prometheus/bridge-alerts.yml    (every rule's expr)
so that a test can compare them with the /metrics pages of a running cluster.
Exit 1 (with a message on stderr) if a file is missing or unreadable, or no
metric is found.

Also a module for tests/deploy/check_deploy.sh: dashboard_exprs(),
rule_exprs() and identifiers() (the metric names in one PromQL expression,
whatever their prefix).
"""
import json
import os
import re
import sys

DASHBOARD = os.path.join("deploy", "grafana", "bridge-dashboard.json")
RULES = os.path.join("deploy", "prometheus", "bridge-alerts.yml")

BRIDGE_METRIC = re.compile(r"\bbridge_[a-z0-9_]+")
HISTOGRAM_SUFFIX = re.compile(r"_(bucket|sum|count)$")


def all_panels(panels):
    """The panels of a dashboard, those inside rows included."""
    for p in panels or []:
        yield p
        yield from all_panels(p.get("panels"))


def dashboard_exprs(path):
    """(panel title, refId, expr) for every target of every panel."""
    with open(path) as f:
        dash = json.load(f)
    out = []
    for p in all_panels(dash.get("panels")):
        for t in p.get("targets") or []:
            if "expr" in t:
                out.append((p.get("title"), t.get("refId"), t["expr"]))
    return out


def rule_exprs(path):
    """(alert or record name, expr) for every rule of a Prometheus rule file."""
    import yaml  # python3-yaml; only the rules need it

    with open(path) as f:
        doc = yaml.safe_load(f) or {}
    out = []
    for g in doc.get("groups") or []:
        for r in g.get("rules") or []:
            out.append((r.get("alert") or r.get("record"), str(r.get("expr", ""))))
    return out


KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
            "group_left", "group_right", "inf", "nan", "atan2"}


def identifiers(expr):
    """The metric names in a PromQL expression (roughly: what is neither a
    function, an aggregation, a keyword, a label name nor a literal)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # strings
    e = re.sub(r"\{[^}]*\}", " ", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)  # ranges and subqueries
    e = re.sub(r"\$\{[^}]*\}|\$\w+", " ", e)  # Grafana variables
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = []
    for m in re.finditer(r"(?<![\w.:])[A-Za-z_:][A-Za-z0-9_:]*", e):
        if re.match(r"\s*\(", e[m.end():]) or m.group(0).lower() in KEYWORDS:
            continue  # a function or aggregation, or a keyword
        names.append(m.group(0))
    return names


def used_metrics(root):
    exprs = [e for _, _, e in dashboard_exprs(os.path.join(root, DASHBOARD))]
    exprs += [e for _, e in rule_exprs(os.path.join(root, RULES))]
    names = set()
    for e in exprs:
        for m in BRIDGE_METRIC.findall(e):
            names.add(HISTOGRAM_SUFFIX.sub("", m))
    return sorted(names)


def main(argv):
    if len(argv) != 2:
        print("usage: used_metrics.py REPO_ROOT", file=sys.stderr)
        return 2
    try:
        names = used_metrics(argv[1])
    except (OSError, ValueError) as e:
        print(f"used_metrics.py: {e}", file=sys.stderr)
        return 1
    if not names:
        print("used_metrics.py: no bridge_ metric found", file=sys.stderr)
        return 1
    print("\n".join(names))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
