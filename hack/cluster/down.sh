#!/usr/bin/env bash
# Tears down the e2e test cluster that up.sh started and removes what it
# created on the host: its processes (by the PIDs it recorded), every container
# and shim of its containerd, mounts under the state directory, network
# namespaces its pods used, cgroups under /kstate, iptables chains (KSTATE-*,
# KUBE-*, CNI-*), the bridge, the address on lo, and the sysctls it changed
# (restored to their values before the first up).
#
# Keeps the build outputs ($STATE/bin, $STATE/images) and the logs
# ($STATE/log) so the next up is warm and a failure can be read; --purge
# removes the whole state directory as well.
#
# Safe to run when nothing (or only part) is up. Exits non-zero if something
# could not be removed, naming it.
#
# Usage: hack/cluster/down.sh [--purge]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PURGE=0
for a in "$@"; do
	case $a in
	--purge) PURGE=1 ;;
	*) die "unknown argument $a (usage: down.sh [--purge])" ;;
	esac
done
[[ $(id -u) == 0 ]] || die "down.sh needs root"
problems=()

step "down: state directory $STATE"

# ------------------------------------------------------------- processes
# Clients of the apiserver first, the kubelet, then containers, containerd,
# the apiserver and etcd.
stop 10 kingress coredns kube-proxy kube-scheduler kube-controller-manager
stop 10 kubelet

# pids_under DIR... prints the PIDs of the processes in the cgroups under DIR.
pids_under() {
	local d
	for d in "$@"; do
		[[ -d $d ]] && find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null
	done | sort -u
}
# Containers: every process in a cgroup under /kstate (the kubelet's cgroup
# root) in any hierarchy, then the containerd shims of this state directory
# (found by their -address argument, killed by PID).
cg_dirs=()
for h in /sys/fs/cgroup/*/; do
	[[ -d $h$CGROUP_ROOT ]] && cg_dirs+=("$h$CGROUP_ROOT")
done
for round in 1 2 3 4 5; do
	pids=$(pids_under "${cg_dirs[@]}")
	[[ -z $pids ]] && break
	((round == 1)) && step "containers: killing $(wc -w <<<"$pids") processes in /$CGROUP_ROOT"
	# shellcheck disable=SC2086
	kill -KILL $pids 2>/dev/null || true
	sleep 0.5
done
shim_pids() {
	local p
	for p in /proc/[0-9]*; do
		{ tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -q "containerd-shim.*-address $CONTAINERD_SOCK" && echo "${p#/proc/}"
	done
	return 0
}
pids=$(shim_pids)
if [[ -n $pids ]]; then
	step "containers: stopping $(wc -w <<<"$pids") containerd shims"
	# shellcheck disable=SC2086
	kill -TERM $pids 2>/dev/null || true
	sleep 1
	pids=$(shim_pids)
	# shellcheck disable=SC2086
	[[ -n $pids ]] && kill -KILL $pids 2>/dev/null || true
fi

stop 15 containerd
stop 15 kube-apiserver
stop 15 etcd

# ---------------------------------------------------------------- mounts
# Deepest first: pod volumes, overlay rootfs, shm, then anything else.
umount_under() {
	local m
	for m in $(awk -v p="$1" 'index($2, p) == 1 { print $2 }' /proc/self/mounts | sort -r); do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || problems+=("mount $m")
	done
}
umount_under "$STATE/"
# Network namespaces of pods (containerd 1.6 keeps them in /run/netns).
before_netns=$(awk '$1 == "netns" { print $2 }' "$STATE/host.before" 2>/dev/null || true)
n=0
for ns in /run/netns/cni-*; do
	[[ -e $ns ]] || continue
	grep -qxF "$(basename "$ns")" <<<"$before_netns" && continue
	umount "$ns" 2>/dev/null || umount -l "$ns" 2>/dev/null || true
	rm -f "$ns" && n=$((n + 1))
done
((n)) && step "netns: removed $n pod network namespaces"
step "mounts: unmounted everything under $STATE"

# --------------------------------------------------------------- cgroups
for d in "${cg_dirs[@]}"; do
	find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
	[[ -d $d ]] && problems+=("cgroup $d")
done
step "cgroups: removed /$CGROUP_ROOT"

# -------------------------------------------------------------- iptables
# kube-proxy's own cleanup first, then every chain named KUBE-*, CNI-* or
# KSTATE-* in every table, after removing the rules that jump to them.
if [[ -x $BIN/kube-proxy ]]; then
	"$BIN/kube-proxy" --cleanup --v=0 >>"$LOG/kube-proxy-cleanup.log" 2>&1 || true
fi
for ipt in iptables ip6tables; do
	command -v "$ipt" >/dev/null || continue
	for t in filter nat mangle raw; do
		chains=$("$ipt" -w -t "$t" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^(KUBE-|CNI-|KSTATE-)/ { print $2 }')
		[[ -z $chains ]] && continue
		# Rules in the built-in (or other) chains that jump to ours.
		"$ipt" -w -t "$t" -S | grep -E -- '-j (KUBE-|CNI-|KSTATE-)' | grep -vE '^-A (KUBE-|CNI-|KSTATE-)' |
			while read -r rule; do
				eval "\"$ipt\" -w -t $t ${rule/-A /-D }" 2>/dev/null || true
			done || true
		for c in $chains; do "$ipt" -w -t "$t" -F "$c" 2>/dev/null || true; done
		for c in $chains; do "$ipt" -w -t "$t" -X "$c" 2>/dev/null || problems+=("$ipt -t $t chain $c"); done
	done
done
step "iptables: removed KUBE-*, CNI-* and KSTATE-* chains"

# ------------------------------------------------------------- addresses
if ip link show "$BRIDGE" >/dev/null 2>&1; then
	ip link del "$BRIDGE" || problems+=("bridge $BRIDGE")
fi
# veths left behind by pods whose namespace is gone vanish with it; any
# still attached to nothing are removed here.
for v in $(ip -o link show type veth 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
	ip -d link show "$v" 2>/dev/null | grep "master $BRIDGE" >/dev/null && ip link del "$v" 2>/dev/null || true
done
if ip addr show dev lo | grep "inet $NODE_IP/32" >/dev/null; then
	ip addr del "$NODE_IP/32" dev lo || problems+=("address $NODE_IP on lo")
fi
step "network: removed bridge $BRIDGE and $NODE_IP/32 from lo"

# --------------------------------------------------------------- sysctls
if [[ -f $STATE/host.before ]]; then
	while read -r kind kv; do
		[[ $kind == sysctl ]] || continue
		sysctl -qw "$kv" 2>/dev/null || problems+=("sysctl $kv")
	done <"$STATE/host.before"
	step "sysctls: restored $(grep -c '^sysctl' "$STATE/host.before")"
fi

# ------------------------------------------------------------ host paths
# Paths the kubelet or containerd create outside the state directory, removed
# when they did not exist before the first up.
if [[ -f $STATE/host.before ]]; then
	if [[ -d /var/log/containers ]]; then
		find /var/log/containers -maxdepth 1 -type l -lname "$STATE/*" -delete 2>/dev/null || true
	fi
	for d in /var/lib/kubelet /var/log/containers /var/log/pods /run/containerd /var/lib/cni /run/netns /etc/cni /opt/cni; do
		grep -qxF "path $d" "$STATE/host.before" && continue
		[[ -e $d ]] || continue
		umount_under "$d/"
		if [[ $d == /run/netns || $d == /var/log/containers ]]; then
			rmdir "$d" 2>/dev/null || true # only if empty: others may use it now
		else
			rm -rf "$d"
		fi
	done
fi

# ------------------------------------------------------------ state files
if ((PURGE)); then
	rm -rf "$STATE" || problems+=("$STATE")
	step "state: removed $STATE"
else
	for d in etcd containerd kubelet pod-logs cni etc run manifests kubeconfig host.before; do
		rm -rf "${STATE:?}/$d" || problems+=("$STATE/$d")
	done
	step "state: removed runtime state; kept $BIN, $IMAGES and $LOG (use --purge to remove them)"
fi

if ((${#problems[@]})); then
	echo "down: could not remove: ${problems[*]}" >&2
	exit 1
fi
step "down: done"
