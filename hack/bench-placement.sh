#!/usr/bin/env bash
# Measures pkg/placement against other placement libraries and prints the
# markdown tables quoted in docs/routing.md ("Placement"), then runs the Go
# benchmarks of the same algorithms in one process so their ratios compare.
#
# Usage: hack/bench-placement.sh [-q]
#   -q  skip the go test -bench part (tables only)
#
# Takes about 5-10 minutes on 2 cores. Run it on an otherwise idle machine:
# the numbers are wall-clock.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

quick=false
if [[ "${1:-}" == "-q" ]]; then
  quick=true
fi

out="$(mktemp)"
trap 'rm -f "${out}"' EXIT

echo "## Placement comparison ($(date -u +%Y-%m-%d), $(go version | cut -d' ' -f3))" >&2
KSTATE_PLACEMENT_COMPARE=1 KSTATE_PLACEMENT_COMPARE_OUT="${out}" \
  go test -count=1 -run '^TestPlacementComparison$' -timeout 60m ./pkg/placement/ >&2
cat "${out}"

if [[ "${quick}" == false ]]; then
  echo
  echo '```'
  go test -count=1 -run '^$' -bench . -benchmem -timeout 60m ./pkg/placement/
  echo '```'
fi
