#!/usr/bin/env bash
# Compares `make bench`'s benchmarks between a base revision and the working tree, on a quiet
# machine, in palindromic order (base, tree, tree, base), and prints a table of min/median/max
# per benchmark (hack/benchtable). Usage: hack/bench-compare.sh BASE_REV [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:?usage: hack/bench-compare.sh BASE_REV [OUT_DIR]}
out=${2:-$(mktemp -d)}
GO=${GO:-go}
COUNT=${COUNT:-3}
BENCHTIME=${BENCHTIME:-1s}
mkdir -p "$out"
tree=$(mktemp -d)
trap 'git worktree remove --force "$tree" >/dev/null 2>&1 || true' EXIT
git worktree add --detach "$tree" "$base" >/dev/null

# Each side runs the packages it has: benchmarks are matched by name, wherever they moved.
run() { # run <dir> <file>
  local pkgs=()
  for p in plugins reputation pkg/engine test/bench; do
    [ -d "$1/$p" ] && pkgs+=("./$p/...")
  done
  (cd "$1" && $GO test -run '^$' -bench . -benchmem -benchtime "$BENCHTIME" -count "$COUNT" "${pkgs[@]}") > "$out/$2"
}
run "$tree" base-1.txt
run "$PWD" tree-1.txt
run "$PWD" tree-2.txt
run "$tree" base-2.txt
$GO run ./hack/benchtable -a base -b tree "$out"/base-*.txt "$out"/tree-*.txt
echo "raw runs: $out" >&2
