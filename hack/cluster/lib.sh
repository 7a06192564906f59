# shellcheck shell=bash
# Shared settings and helpers of hack/cluster/{up,down,e2e}.sh.
#
# The e2e cluster is TEST INFRASTRUCTURE: a single-node Kubernetes v1.30.4
# with Knative Serving v0.42.2, every component a host process under one state
# directory. See docs/testing.md ("The Kubernetes e2e tier").

set -euo pipefail

CLUSTER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$CLUSTER_DIR/../.." && pwd)"

# Everything the cluster creates lives under STATE, except what the host's
# kernel keeps (an address on lo, a bridge, iptables chains, cgroups, network
# namespaces under /run/netns, sysctls), which down.sh removes or restores.
STATE="${KSTATE_CLUSTER_DIR:-/var/lib/kstate-cluster}"
BIN="$STATE/bin"
ETC="$STATE/etc"
PKI="$STATE/etc/pki"
LOG="$STATE/log"
RUN="$STATE/run"
IMAGES="$STATE/images"
KUBECONFIG_ADMIN="$STATE/kubeconfig"

K8S_VERSION=v1.30.4
KNATIVE_VERSION=v0.42.2

# Addresses. NODE_IP is a /32 on lo: the apiserver, kubelet, etcd, CoreDNS,
# the test ingress (and a test's redis-server) listen on it, so nothing
# listens on the machine's real interfaces. Pods live on the bridge; they get
# routes to NODE_IP and the service range only, no default route.
NODE_NAME=kstate-node
NODE_IP=10.200.0.1
BRIDGE=kstate0
POD_CIDR=10.201.0.0/24
POD_GW=10.201.0.1
SERVICE_CIDR=10.202.0.0/24
KUBERNETES_SVC_IP=10.202.0.1
CLUSTER_DOMAIN=cluster.local
INGRESS_ADDR="$NODE_IP:80"
INGRESS_CLASS=kstate-test-ingress.ingress.networking.knative.dev

CONTAINERD_SOCK="$STATE/containerd/containerd.sock"
CGROUP_ROOT=kstate
PAUSE_IMAGE=dev.local/kstate-e2e/pause:v1
KNATIVE_IMAGE_PREFIX=dev.local/knative
KSTATE_IMAGE_PREFIX=dev.local/kstate

# Sysctls that up.sh (or the kubelet and kube-proxy it starts) may change;
# their values before the first up are saved and restored by down.sh.
SYSCTLS=(
	net.ipv4.ip_forward
	net.bridge.bridge-nf-call-iptables
	vm.overcommit_memory
	vm.panic_on_oom
	kernel.panic
	kernel.panic_on_oops
	kernel.keys.root_maxkeys
	kernel.keys.root_maxbytes
)

export PATH="$BIN:/usr/sbin:/sbin:$PATH"

_T0=${_T0:-$(date +%s)}
_TLAST=$_T0

# step prints a progress line with the time since the start and since the
# previous step.
step() {
	local now
	now=$(date +%s)
	printf '[%4ds +%3ds] %s\n' "$((now - _T0))" "$((now - _TLAST))" "$*"
	_TLAST=$now
}

die() {
	echo "FAILED: $*" >&2
	exit 1
}

# logtail NAME prints the end of a component's log.
logtail() {
	local f="$LOG/$1.log"
	if [[ -f $f ]]; then
		echo "----- last 40 lines of $f -----" >&2
		tail -n 40 "$f" >&2
		echo "----- end of $f -----" >&2
	fi
}

# fail NAME MESSAGE prints NAME's log tail and exits non-zero.
fail() {
	local name=$1
	shift
	logtail "$name"
	die "$name: $*"
}

# pid_alive NAME: the process recorded in run/NAME.pid is running and its
# command line still names its binary (so a recycled PID is not taken for it).
pid_alive() {
	local pidf="$RUN/$1.pid" pid
	[[ -f $pidf ]] || return 1
	pid=$(cat "$pidf")
	[[ -n $pid && -d /proc/$pid ]] || return 1
	grep -qa -- "$(cat "$RUN/$1.cmd" 2>/dev/null || echo __none__)" "/proc/$pid/cmdline" 2>/dev/null
}

# start NAME BINARY ARGS... starts a host process in its own session, logging
# to log/NAME.log, unless it is already running.
start() {
	local name=$1
	shift
	if pid_alive "$name"; then
		step "$name already running (pid $(cat "$RUN/$name.pid"))"
		return 0
	fi
	mkdir -p "$LOG" "$RUN"
	echo "$1" >"$RUN/$name.cmd"
	{
		echo "===== $(date -u +%FT%TZ) starting: $*"
	} >>"$LOG/$name.log"
	# 8 and 9 are build.sh's and up.sh's lock files: a daemon must not hold them.
	setsid "$@" >>"$LOG/$name.log" 2>&1 </dev/null 8>&- 9>&- &
	echo $! >"$RUN/$name.pid"
	step "$name started (pid $!)"
}

# running PID: the process exists and is not a zombie (processes whose parent
# has exited are reaped by PID 1 only now and then).
running() {
	[[ -d /proc/$1 ]] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

# stop GRACE NAME... stops the processes recorded in run/NAME.pid: SIGTERM to
# all of them, then SIGKILL to those still running after GRACE seconds.
stop() {
	local grace=$1 name pid i left
	shift
	local -A pids=()
	for name in "$@"; do
		if pid_alive "$name"; then
			pids[$name]=$(cat "$RUN/$name.pid")
			kill -TERM "${pids[$name]}" 2>/dev/null || true
		fi
	done
	for ((i = 0; i < grace * 10; i++)); do
		left=0
		for pid in "${pids[@]}"; do running "$pid" && left=1; done
		((left)) || break
		sleep 0.1
	done
	for name in "$@"; do
		pid=${pids[$name]:-}
		if [[ -n $pid ]]; then
			if running "$pid"; then
				kill -KILL "$pid" 2>/dev/null || true
				step "$name killed after ${grace}s (pid $pid)"
			else
				step "$name stopped (pid $pid)"
			fi
		fi
		rm -f "$RUN/$name.pid" "$RUN/$name.cmd"
	done
}

# wait_for NAME TIMEOUT_SECONDS COMMAND... runs COMMAND until it succeeds; on
# timeout (or if NAME's process died) prints NAME's log tail and exits.
wait_for() {
	local name=$1 timeout=$2
	shift 2
	local deadline=$(($(date +%s) + timeout))
	until "$@" >/dev/null 2>&1; do
		if [[ -f $RUN/$name.pid ]] && ! pid_alive "$name"; then
			fail "$name" "process exited"
		fi
		if (($(date +%s) >= deadline)); then
			fail "$name" "not ready after ${timeout}s (check: $*)"
		fi
		sleep 0.5
	done
}

kc() { kubectl --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }
