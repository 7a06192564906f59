#!/usr/bin/env bash
# The Kubernetes e2e tier: brings the test cluster up (hack/cluster/up.sh:
# builds on first use, then starts what is not running), installs kstate on
# it from config/ (hack/cluster/install-kstate.sh), runs the Go e2e tests in
# test/e2e against it, and prints the results.
#
# Needs root; changes host networking (see up.sh). The plain test command,
# hack/test.sh, never does any of this.
#
# Usage: hack/cluster/e2e.sh [--down] [go test flags, e.g. -run TestHello]
#   --down   bring the cluster down (hack/cluster/down.sh) after the tests,
#            whatever their result. Without it the cluster stays up for the
#            next run or for a look with kubectl.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DOWN=0
args=()
for a in "$@"; do
	case $a in
	--down) DOWN=1 ;;
	*) args+=("$a") ;;
	esac
done

step "e2e: bringing the cluster up"
if ! "$CLUSTER_DIR/up.sh"; then
	((DOWN)) && "$CLUSTER_DIR/down.sh" || true
	die "e2e: the cluster did not come up"
fi
step "e2e: installing kstate from config/ (hack/cluster/install-kstate.sh)"
if ! "$CLUSTER_DIR/install-kstate.sh"; then
	((DOWN)) && "$CLUSTER_DIR/down.sh" || true
	die "e2e: kstate did not install"
fi
_TLAST=$(date +%s)

step "e2e: go test -tags e2e ./... in test/e2e ${args[*]}"
set +e
(cd "$REPO_ROOT/test/e2e" && KUBECONFIG="$KUBECONFIG_ADMIN" KSTATE_CLUSTER_DIR="$STATE" \
	go test -tags e2e -count=1 -v -timeout 20m "${args[@]}" ./...) 2>&1 | tee "$LOG/e2e-test.log"
rc=${PIPESTATUS[0]}
set -e

passed=$(grep -c -- '^--- PASS' "$LOG/e2e-test.log" || true)
failed=$(grep -c -- '^--- FAIL' "$LOG/e2e-test.log" || true)
skipped=$(grep -c -- '^--- SKIP' "$LOG/e2e-test.log" || true)
step "e2e: go test exited $rc"
echo "e2e: $passed passed, $failed failed, $skipped skipped"

if ((DOWN)); then
	"$CLUSTER_DIR/down.sh" || rc=1
fi
exit "$rc"
