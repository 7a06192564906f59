#!/usr/bin/env bash
# Runs every fuzz target of the module for a fixed budget each, one after
# another (go test -fuzz takes one target per run).
#
#   hack/fuzz.sh                 # FUZZ_TIME=60s per target
#   FUZZ_TIME=10m hack/fuzz.sh   # a longer budget
#   hack/fuzz.sh FuzzIngress     # only the targets whose name matches
#
# A failing input is written by go test to <package>/testdata/fuzz/<Target>/
# and from then on runs as a seed in the normal test run (hack/test.sh):
# fix the bug, keep the file, commit both. The script lists such new files
# and exits 1 if a target failed.
set -uo pipefail
cd "$(dirname "$0")/.."
budget=${FUZZ_TIME:-60s}
filter=${1:-.}
failed=()
before=$(git ls-files --others --exclude-standard -- '*/testdata/fuzz/*' | sort)
# Each line: <package dir> <target>.
targets=$(grep -rlE --include='*_test.go' '^func Fuzz[A-Za-z0-9_]+\(f \*testing\.F\)' . |
  while read -r file; do
    dir=$(dirname "$file")
    grep -oE '^func Fuzz[A-Za-z0-9_]+' "$file" | sed "s|^func |$dir |"
  done | sort -u)
while read -r dir target; do
  [[ -z "$dir" ]] && continue
  [[ "$target" =~ $filter ]] || continue
  echo "== $target ($dir) for $budget"
  if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$budget" "$dir"; then
    failed+=("$target")
  fi
done <<< "$targets"
after=$(git ls-files --others --exclude-standard -- '*/testdata/fuzz/*' | sort)
new=$(comm -13 <(echo "$before") <(echo "$after") | sed '/^$/d')
if [[ -n "$new" ]]; then
  echo "new failing inputs (seeds once committed):"
  echo "$new"
fi
if ((${#failed[@]})); then
  echo "failed: ${failed[*]}"
  exit 1
fi
echo "all fuzz targets passed their $budget budget"
