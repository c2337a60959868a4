#!/usr/bin/env bash
# Prints docs/configuration.md, made from the built binaries' own flag help
# (absl's --helpfull), so that the reference cannot drift from the code:
#
#   tools/gen_configuration_doc.sh build > docs/configuration.md
#
# Only flags defined in this repository's sources are listed (absl's and
# gRPC's own are not): --helpfull groups flags under "Flags from FILE:", and a
# group is kept when FILE, less any leading directories of the machine it was
# built on, is a file of this checkout. Flags defined under common/ that every
# service has are listed once, in "Every service".
#
# The output is deterministic: flags sorted by name, no build or source paths
# (the compiled-in fixtures folder is written $BRIDGE_SHARED_DIR), no dates,
# no host names. The binaries run with an empty environment in an empty
# directory, so that neither a .env file nor an exported variable shows up as
# a current value.
#
# Usage: tools/gen_configuration_doc.sh BUILD_DIR
# Exit: 0 printed; 1 a binary is missing or its help could not be read
# (nothing is printed then).

# Markdown's backticks and $NAMEs in single quotes are meant literally.
# shellcheck disable=SC2016
set -euo pipefail
export LC_ALL=C

die() { printf 'gen_configuration_doc: %s\n' "$*" >&2; exit 1; }

[[ $# -eq 1 ]] || die "usage: tools/gen_configuration_doc.sh BUILD_DIR"
[[ -d $1 ]] || die "$1: no such build directory"
build=$(cd "$1" && pwd)
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/gen_configuration_doc.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/cwd"

# name -> path under the build directory, in the order of the document.
services=(bridge-gateway bridge-controller bridge-worker)
cli=(bridgectl)
sims=(whatsapp-sim elevenlabs-sim)
declare -A path_of=(
  [bridge-gateway]=gateway/bridge-gateway
  [bridge-controller]=controller/bridge-controller
  [bridge-worker]=media_worker/bridge-worker
  [bridgectl]=tools/bridgectl
  [whatsapp-sim]=tools/whatsapp_sim/whatsapp-sim
  [elevenlabs-sim]=tools/elevenlabs_sim/elevenlabs-sim
)
all=("${services[@]}" "${cli[@]}" "${sims[@]}")

# ---- the binaries' help ------------------------------------------------------

for b in "${all[@]}"; do
  bin=$build/${path_of[$b]}
  [[ -x $bin ]] || die "$bin is missing: build first (tools/bridge.sh build)"
  # absl prints the help on stdout and exits 1. Sanitizer settings pass
  # through (a sanitizer build's binaries are as good a source).
  keep=(PATH="$PATH" HOME="$tmp/cwd")
  for v in ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS TSAN_OPTIONS; do
    [[ -n ${!v:-} ]] && keep+=("$v=${!v}")
  done
  (cd "$tmp/cwd" && env -i "${keep[@]}" "$bin" --helpfull) >"$tmp/$b.help" 2>"$tmp/$b.err" || true
  grep -q '^  Flags from ' "$tmp/$b.help" ||
    die "$b --helpfull printed no flags: $(head -c 2000 "$tmp/$b.err")"
  if grep -q '^ *currently: ' "$tmp/$b.help"; then
    die "$b --helpfull shows a current value differing from the default (set by what?): $(grep -B1 '^ *currently: ' "$tmp/$b.help" | head -4)"
  fi
done

# ---- which "Flags from" files are this repository's ---------------------------
# absl names a file by its path at build time (leading '/' and './' dropped),
# e.g. "work/main/common/src/config.cc". Its longest suffix that is a file of
# this checkout (with a directory part) is its repository path.

cat "$tmp"/*.help | sed -n 's/^  Flags from \(.*\):$/\1/p' | sort -u >"$tmp/files"
: >"$tmp/filemap"
while IFS= read -r f; do
  rest=${f#./}
  while [[ $rest == */* ]]; do
    if [[ -f $root/$rest ]]; then
      printf '%s\t%s\n' "$f" "$rest" >>"$tmp/filemap"
      break
    fi
    rest=${rest#*/}
  done
done <"$tmp/files"
[[ -s $tmp/filemap ]] || die "no flag of the binaries is defined in $root (is it the checkout they were built from?)"

# ---- flags: one TSV line each: repo-file, name, description, default ------------

shared_dir=$(sed -n 's/^BRIDGE_SHARED_DIR:[A-Z]*=//p' "$build/CMakeCache.txt" 2>/dev/null || true)
[[ -n $shared_dir ]] && shared_dir=$(realpath -m -s "$shared_dir")

# re TEXT: TEXT as a sed regular expression (with '#' as the delimiter).
re() { sed 's/[]#\/.*^$[]/\\&/g' <<<"$1"; }

for b in "${all[@]}"; do
  awk -F'\t' -v bin="$b" '
    function flush(   name, rest, i, pos, desc, def) {
      if (buf == "" || cur == "") { buf = ""; return }
      if (!match(buf, /^--[A-Za-z0-9_]+ \(/)) { print bin ": cannot read: " buf > "/dev/stderr"; bad = 1; buf = ""; return }
      name = substr(buf, 3, RLENGTH - 4)
      rest = substr(buf, RLENGTH + 1)
      # The description ends at the last "); default: ".
      pos = 0
      for (i = index(rest, "); default: "); i > 0; i = index(substr(rest, pos + 1), "); default: ")) {
        pos += i
      }
      if (pos == 0 || substr(rest, length(rest)) != ";") {
        print bin ": cannot read: " buf > "/dev/stderr"; bad = 1; buf = ""; return
      }
      desc = substr(rest, 1, pos - 1)
      def = substr(rest, pos + 12, length(rest) - pos - 12)
      print cur "\t" name "\t" desc "\t" def
      buf = ""
    }
    FNR == NR { map[$1] = $2; next }
    /^  Flags from .*:$/ { flush(); f = substr($0, 14, length($0) - 14); cur = (f in map) ? map[f] : ""; next }
    /^    --/ { flush(); buf = substr($0, 5); next }
    /^      [^ ]/ && buf != "" { line = $0; sub(/^ +/, "", line); buf = buf " " line; next }
    { flush() }
    END { flush(); exit bad }
  ' "$tmp/filemap" "$tmp/$b.help" >"$tmp/$b.raw" || die "$b: unexpected --helpfull format"
  # Machine paths compiled into defaults, as names (build dir first: it may
  # sit inside the checkout).
  sed_args=(-e "s#$(re "$build")#\$BUILD_DIR#g")
  [[ -n $shared_dir ]] && sed_args+=(-e "s#$(re "$shared_dir")#\$BRIDGE_SHARED_DIR#g")
  sed_args+=(-e "s#$(re "$root")#\$REPO#g")
  sed "${sed_args[@]}" "$tmp/$b.raw" | sort -t $'\t' -k2,2 -k1,1 >"$tmp/$b.tsv"
  [[ -s $tmp/$b.tsv ]] || die "$b: --helpfull lists no flag from this repository"
done

# Flags under common/ that all services and simulators share: "Every service".
everyone=("${services[@]}" "${sims[@]}")
for b in "${everyone[@]}"; do
  awk -F'\t' '$1 ~ /^common\//' "$tmp/$b.tsv" >"$tmp/$b.common"
done
cp "$tmp/${everyone[0]}.common" "$tmp/shared.tsv"
for b in "${everyone[@]:1}"; do
  # Same name, file, help and default in every binary.
  grep -Fxf "$tmp/$b.common" "$tmp/shared.tsv" >"$tmp/shared.next" || true
  mv "$tmp/shared.next" "$tmp/shared.tsv"
done
for b in "${all[@]}"; do
  grep -vFxf "$tmp/shared.tsv" "$tmp/$b.tsv" >"$tmp/$b.own" || true
done

# ---- Markdown ----------------------------------------------------------------

# table FILE: the flags of FILE (TSV) as a Markdown table.
table() {
  printf '| flag | default | description |\n|---|---|---|\n'
  awk -F'\t' '
    # Escaped for a table cell: "|" always; "\", "*", "<" and "`" too, so that
    # no help text turns into emphasis, HTML or code (it renders unchanged).
    function cell(s) { gsub(/[\\|*<`]/, "\\\\&", s); return s }
    # In a code span only "|" needs it (GitHub tables honour "\|" there too).
    function code(s) { gsub(/\|/, "\\\\&", s); return s }
    {
      def = $4
      if (def ~ /^".*"$/) def = substr(def, 2, length(def) - 2)  # absl quotes strings
      if (def == "") shown = ""
      else if (index(def, "`") > 0) shown = cell(def)
      else shown = "`" code(def) "`"
      printf "| `--%s` | %s | %s |\n", $2, shown, cell($3)
    }' "$1"
}

# has_env_file BINARY: whether it reads a .env file (has --env_file).
has_env_file() { awk -F'\t' '$2 == "env_file" { found = 1 } END { exit !found }' "$tmp/$1.tsv"; }

section() {  # section LEVEL BINARY
  local level=$1 b=$2
  printf '\n%s %s\n\n' "$level" "$b"
  if [[ -s $tmp/$b.own ]]; then
    if [[ $b != bridgectl ]] && ! has_env_file "$b"; then
      printf 'Its own flags only (it has no `--env_file`: it reads no .env file).\n\n'
    elif [[ $b == bridgectl ]] && ! has_env_file "$b"; then
      printf 'Flags only: bridgectl has no `--env_file` and reads no .env file. It presents the\n'
      printf 'operator token from `BRIDGE_ADMIN_TOKEN` in its environment (and, for `talk --worker`,\n'
      printf 'the cluster token from `BRIDGE_CLUSTER_TOKEN`).\n\n'
    else
      printf 'With the flags of [every service](#every-service).\n\n'
    fi
    table "$tmp/$b.own"
  else
    printf 'Only the flags of [every service](#every-service).\n'
  fi
}

out=$tmp/configuration.md
{
  cat <<'EOF'
# Configuration reference

<!-- Generated by tools/gen_configuration_doc.sh from the binaries' --helpfull: do not edit. -->

Generated from the binaries' own flag help by
`tools/gen_configuration_doc.sh build > docs/configuration.md`: **do not edit it by hand**. To
change a text or a default, change the flag in the source, build, and run that command again
(`tests/docs/check_configuration_doc.sh` fails while this file is stale). Only the flags defined
in this repository are listed; `--helpfull` on a binary also shows Abseil's own (`--flagfile`,
`--fromenv`, ...).

**Environment variables.** A flag whose description says "(env NAME)" can also be set by the
environment variable NAME, or by a `NAME=VALUE` line in the `.env` file that `--env_file` names
(`KEY=VALUE` lines, `#` comments, `export`, quotes; read when it exists). A command-line flag wins
over the environment, which wins over the `.env` file, which wins over the default (the binaries'
usage line: "Flags override env vars, which override the .env file"). Secrets given either way are
redacted from every log line. The [index](#environment-variables) at the end lists every variable.

**Values.** Durations are written `300ms`, `5s`, `10m`, `24h`, `1h30m`; booleans
`--name=true|false` (`--name` alone is true, `--noname` false); lists are comma-separated. An empty default is
shown as an empty cell.
EOF
  if grep -qF '$BRIDGE_SHARED_DIR' "$tmp"/*.own "$tmp/shared.tsv"; then
    printf '\n`$BRIDGE_SHARED_DIR` in a default is the build'"'"'s `BRIDGE_SHARED_DIR` CMake cache variable\n'
    printf '(the `shared/` folder beside the checkout unless set), compiled in.\n'
  fi

  printf '\n## Every service\n\n'
  list=""
  for b in "${everyone[@]}"; do list+="${list:+, }\`$b\`"; done
  printf 'Flags that %s all take.\n\n' "$list"
  table "$tmp/shared.tsv"

  for b in "${services[@]}" "${cli[@]}"; do section '##' "$b"; done

  printf '\n## Simulators\n\n'
  printf 'Stand-ins for the WhatsApp Cloud API and the ElevenLabs agent, for tests and for\n'
  printf '`tools/bridge.sh up` without accounts (README.md, "Simulators").\n'
  for b in "${sims[@]}"; do section '###' "$b"; done

  printf '\n## Environment variables\n\n'
  printf 'Every "(env NAME)" of the tables above, by variable.\n\n'
  printf '| variable | flags |\n|---|---|\n'
  for b in "${all[@]}"; do
    awk -F'\t' -v bin="$b" '{
      s = $3
      while (match(s, /\(env [A-Z][A-Z0-9_]*/)) {
        print substr(s, RSTART + 5, RLENGTH - 5) "\t" bin "\t" $2
        s = substr(s, RSTART + RLENGTH)
      }
    }' "$tmp/$b.tsv"
  done | sort -u | sort -t $'\t' -k1,1 -s | awk -F'\t' '
    { entry = "`" $2 " --" $3 "`"
      if ($1 == var) row = row ", " entry
      else { if (var != "") print "| `" var "` | " row " |"; var = $1; row = entry } }
    END { if (var != "") print "| `" var "` | " row " |" }'
} >"$out"

# Nothing of this machine may remain.
for p in "$build" "$root" ${shared_dir:+"$shared_dir"}; do
  if grep -qF "$p" "$out"; then die "the document would contain the path $p"; fi
done
cat "$out"
