#!/usr/bin/env bash
# The cluster variants of the benchmarks (P2 warm counter, P4 scale-up under
# load, P5 scale from zero, P7 drain; docs/performance.md): brings the e2e cluster up and installs
# kstate (as e2e.sh does), runs test/e2e's TestBench* with KSTATE_E2E_BENCH=1
# and prints one markdown table of ratios against baselines measured in the
# same run. About 7-8 minutes on a running cluster.
#
# Needs root, like e2e.sh. Usage: hack/cluster/bench.sh
#   BENCH_OUT=DIR  where the table and the test log go (default /tmp/kstate-cluster-bench-<time>)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

OUT=${BENCH_OUT:-/tmp/kstate-cluster-bench-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
"$CLUSTER_DIR/up.sh" || die "bench: the cluster did not come up"
"$CLUSTER_DIR/install-kstate.sh" || die "bench: kstate did not install"
step "bench: load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
set +e
(cd "$REPO_ROOT/test/e2e" && KUBECONFIG="$KUBECONFIG_ADMIN" KSTATE_CLUSTER_DIR="$STATE" KSTATE_E2E_BENCH=1 BENCH_OUT="$OUT" \
	go test -tags e2e -count=1 -v -timeout 30m -run '^TestBench' ./...) >"$OUT/bench-test.log" 2>&1
rc=$?
set -e
step "bench: load average after: $(cut -d' ' -f1-3 /proc/loadavg); go test exited $rc (log: $OUT/bench-test.log)"
echo
echo "kstate on the e2e cluster ($(nproc) cores), $(date -u +%FT%TZ)"
echo
cat "$OUT/cluster-bench.md" 2>/dev/null || echo "(no table: see $OUT/bench-test.log)"
grep -E '^\s+bench_test.go:[0-9]+: (round|[0-9]+ requests)' "$OUT/bench-test.log" | sed 's/^\s*bench_test.go:[0-9]*: /  /' || true
exit "$rc"
