#!/usr/bin/env bash
# Checks that docs/configuration.md is what tools/gen_configuration_doc.sh
# makes from the built binaries' flag help: a flag added, removed or
# reworded in the code without regenerating the document fails here.
#
# The comparison is first shown documents it must refuse (a copy with one
# flag's row removed, one with a default changed, one with a line added), and
# the generator is run twice to show that its output does not vary: a check
# that passes everything proves nothing.
#
# Usage: tests/docs/check_configuration_doc.sh REPO_ROOT BUILD_DIR
# Exit: 0 current; 1 stale (the diff is printed), or a self-check failed, or
# the generator could not run (e.g. binaries missing in BUILD_DIR).

# Markdown's backticks in single quotes are meant literally.
# shellcheck disable=SC2016
set -euo pipefail
export LC_ALL=C

root=$(cd "${1:?usage: check_configuration_doc.sh REPO_ROOT BUILD_DIR}" && pwd)
build=${2:?usage: check_configuration_doc.sh REPO_ROOT BUILD_DIR}
doc=$root/docs/configuration.md
gen=$root/tools/gen_configuration_doc.sh

failures=0
pass() { printf 'PASS: %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*"; failures=$((failures + 1)); }
indent() { sed 's/^/    /'; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/check_configuration_doc.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# compare DOC GENERATED: 0 when DOC is GENERATED; else prints the diff.
compare() { diff -u --label "docs/configuration.md" --label "generated" "$1" "$2"; }

# ---- the generator ---------------------------------------------------------

if ! "$gen" "$build" >"$tmp/generated.md" 2>"$tmp/gen.err"; then
  printf 'FAIL: %s %s did not run:\n' "${gen#"$root"/}" "$build"
  indent <"$tmp/gen.err"
  exit 1
fi
# Every binary has a section with a table of flags.
missing=""
for section in '## Every service' '## bridge-gateway' '## bridge-controller' '## bridge-worker' \
               '## bridgectl' '### whatsapp-sim' '### elevenlabs-sim' '## Environment variables'; do
  awk -v s="$section" '$0 == s { on = 1; next } on && /^#/ { exit } on && /^\| `/ { found = 1 }
                       END { exit !found }' "$tmp/generated.md" || missing+=" '$section'"
done
if [[ -z $missing ]]; then
  pass "the generated document has every section, each with a table ($(grep -c '^| `--' "$tmp/generated.md") flag rows)"
else
  fail "the generated document lacks a section or its table:$missing"
fi
"$gen" "$build" >"$tmp/again.md" 2>/dev/null || true
if cmp -s "$tmp/generated.md" "$tmp/again.md"; then
  pass "the generator's output is the same on a second run"
else
  fail "the generator's output varies between runs:"
  compare "$tmp/generated.md" "$tmp/again.md" | indent
fi

# ---- the comparison refuses altered documents ------------------------------

# (No "| head" here: with pipefail, grep's SIGPIPE would fail the script.)
first_row=$(awk '/^\| `--/ { print NR; exit }' "$tmp/generated.md")
sed "${first_row}d" "$tmp/generated.md" >"$tmp/row-removed.md"
# The first default in backticks, changed.
sed '0,/^\(| `--[a-z0-9_]*` | `\)\([^`]\)/s//\1X\2/' "$tmp/generated.md" >"$tmp/default-changed.md"
{ cat "$tmp/generated.md"; echo '| `--no_such_flag` |  | added by hand |'; } >"$tmp/line-added.md"
refused=0
for broken in row-removed default-changed line-added; do
  if cmp -s "$tmp/$broken.md" "$tmp/generated.md"; then
    fail "self-check: the $broken copy is not altered (the sed no longer matches)"
  elif compare "$tmp/$broken.md" "$tmp/generated.md" >/dev/null; then
    fail "self-check: the comparison accepted a $broken copy"
  else
    refused=$((refused + 1))
  fi
done
((refused == 3)) && pass "the comparison refuses altered copies (a row removed, a default changed, a line added)"

# ---- docs/configuration.md --------------------------------------------------

if [[ ! -f $doc ]]; then
  fail "docs/configuration.md does not exist: run tools/gen_configuration_doc.sh $build > docs/configuration.md"
elif compare "$doc" "$tmp/generated.md" >"$tmp/diff"; then
  pass "docs/configuration.md is current"
else
  cat "$tmp/diff"
  fail "docs/configuration.md is stale: run tools/gen_configuration_doc.sh $build > docs/configuration.md"
fi

if ((failures)); then
  echo "check_configuration_doc: $failures check(s) failed"
  exit 1
fi
echo "check_configuration_doc: all checks passed"
