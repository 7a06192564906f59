#!/usr/bin/env bash
# Fails when the committed generated code differs from what hack/update-codegen.sh makes.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -a proto "$tmp/before"
hack/update-codegen.sh >/dev/null
if ! diff -r "$tmp/before" proto >/dev/null; then
  diff -ru "$tmp/before" proto | head -40 >&2
  cp -a "$tmp/before/." proto/
  echo "verify-codegen: generated code is stale; run hack/update-codegen.sh and commit the result" >&2
  exit 1
fi
echo "verify-codegen: generated code is up to date"
