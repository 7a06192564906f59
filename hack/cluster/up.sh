#!/usr/bin/env bash
# Brings up the e2e test cluster: a single-node Kubernetes v1.30.4 with Knative
# Serving v0.42.2 and a test-only ingress, every component a host process
# under $KSTATE_CLUSTER_DIR (default /var/lib/kstate-cluster). No Docker, no
# registry: binaries are built from the Go module proxy (build.sh), images
# are written offline and imported into containerd.
#
# Needs root. Changes host networking until down.sh: an address on lo
# (10.200.0.1/32), a bridge (kstate0) with a route for the service range,
# iptables chains (KSTATE-*, KUBE-*, CNI-*), a few sysctls (saved first), and
# cgroups under /kstate.
#
# Safe to re-run: what is already running is left alone, what is missing is
# started. Prints progress lines with timings; when a component does not come
# up it prints that component's log tail and exits non-zero.
#
# Usage: hack/cluster/up.sh [--no-knative]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

WITH_KNATIVE=1
for a in "$@"; do
	case $a in
	--no-knative) WITH_KNATIVE=0 ;;
	*) die "unknown argument $a (usage: up.sh [--no-knative])" ;;
	esac
done

[[ $(id -u) == 0 ]] || die "up.sh needs root (it runs containerd, the kubelet and changes host networking)"
step "up: state directory $STATE"
mkdir -p "$STATE" "$BIN" "$ETC" "$PKI" "$LOG" "$RUN" "$IMAGES"
# Two up.sh at once (two demos, a demo and e2e.sh) would build the same
# images and start the same components: the second waits for the first.
exec 9>"$STATE/.up.lock"
flock 9

# ---------------------------------------------------------------- packages
PKGS=(containerd runc containernetworking-plugins etcd-server iptables conntrack busybox-static openssl curl)
missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
	step "apt: installing ${missing[*]}"
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >"$LOG/apt.log" 2>&1; then
		DEBIAN_FRONTEND=noninteractive apt-get update >>"$LOG/apt.log" 2>&1 || true
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >>"$LOG/apt.log" 2>&1 ||
			fail apt "apt-get install ${missing[*]} failed"
	fi
fi
step "apt: $(dpkg-query -W -f='${Package} ${Version}, ' containerd runc etcd-server containernetworking-plugins)"

# ------------------------------------------------------------------ build
"$CLUSTER_DIR/build.sh"
_TLAST=$(date +%s)

# ------------------------------------------------------------ host network
# Record, once, what existed on the host before the cluster, so down.sh
# removes only what the cluster created.
if [[ ! -f $STATE/host.before ]]; then
	{
		for s in "${SYSCTLS[@]}"; do
			v=$(sysctl -n "$s" 2>/dev/null) && echo "sysctl $s=$v"
		done
		for d in /var/lib/kubelet /var/log/containers /var/log/pods /run/containerd /var/lib/cni /run/netns /etc/cni /opt/cni; do
			[[ -e $d ]] && echo "path $d"
		done
		{ ls /run/netns 2>/dev/null || true; } | sed "s/^/netns /"
	} >"$STATE/host.before.tmp"
	mv "$STATE/host.before.tmp" "$STATE/host.before"
fi

sysctl -qw net.ipv4.ip_forward=1
[[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] || modprobe br_netfilter 2>/dev/null || true
sysctl -qw net.bridge.bridge-nf-call-iptables=1 || die "br_netfilter is not available"

ip addr show dev lo | grep "inet $NODE_IP/32" >/dev/null || ip addr add "$NODE_IP/32" dev lo
if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
	ip link add "$BRIDGE" type bridge
fi
ip addr show dev "$BRIDGE" | grep "inet $POD_GW/" >/dev/null || ip addr add "$POD_GW/${POD_CIDR#*/}" dev "$BRIDGE"
ip link set "$BRIDGE" up
# Service IPs not (yet) rewritten by kube-proxy go to the bridge, never to
# the default route.
ip route replace "$SERVICE_CIDR" dev "$BRIDGE" src "$POD_GW"

# Pods talk to each other, to the node address and to services, and to
# nothing else: forwarded traffic from or to the bridge that does not stay
# on it is dropped.
iptables -w -N KSTATE-FORWARD 2>/dev/null || iptables -w -F KSTATE-FORWARD
iptables -w -A KSTATE-FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT
iptables -w -A KSTATE-FORWARD -i "$BRIDGE" -j DROP
iptables -w -A KSTATE-FORWARD -o "$BRIDGE" -j DROP
iptables -w -C FORWARD -j KSTATE-FORWARD 2>/dev/null || iptables -w -I FORWARD 1 -j KSTATE-FORWARD

# The kubelet's cgroup root (cgroup v1, cgroupfs driver), in every hierarchy.
for h in /sys/fs/cgroup/*/; do
	mountpoint -q "$h" || continue
	mkdir -p "$h$CGROUP_ROOT"
done
if [[ -f /sys/fs/cgroup/cpuset/cpuset.cpus ]]; then
	cat /sys/fs/cgroup/cpuset/cpuset.cpus >"/sys/fs/cgroup/cpuset/$CGROUP_ROOT/cpuset.cpus"
	cat /sys/fs/cgroup/cpuset/cpuset.mems >"/sys/fs/cgroup/cpuset/$CGROUP_ROOT/cpuset.mems"
fi
step "host: $NODE_IP/32 on lo, bridge $BRIDGE $POD_GW, route $SERVICE_CIDR, iptables KSTATE-FORWARD, cgroup /$CGROUP_ROOT"

# writefile PATH writes stdin to PATH only when the content differs, so a
# re-run does not touch the config of a running component (kube-proxy exits
# when its config file changes).
writefile() {
	local tmp
	tmp=$(mktemp "$1.XXXXXX")
	cat >"$tmp"
	if cmp -s "$tmp" "$1"; then
		rm -f "$tmp"
	else
		mv "$tmp" "$1"
	fi
}

# -------------------------------------------------- certificates, kubeconfigs
# mkcert NAME CN ORG [SAN] writes NAME.crt/NAME.key signed by the cluster CA.
mkcert() {
	local name=$1 cn=$2 org=$3 san=${4:-}
	[[ -f $PKI/$name.crt ]] && return 0
	local ext="$PKI/$name.ext"
	{
		echo "basicConstraints=CA:FALSE"
		echo "keyUsage=critical,digitalSignature,keyEncipherment"
		echo "extendedKeyUsage=serverAuth,clientAuth"
		[[ -n $san ]] && echo "subjectAltName=$san"
	} >"$ext"
	local subj="/CN=$cn"
	[[ -n $org ]] && subj="/O=$org$subj"
	openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
		-keyout "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
	openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
		-days 3650 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
	rm -f "$PKI/$name.csr" "$ext"
}
if [[ ! -f $PKI/ca.crt ]]; then
	openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
		-keyout "$PKI/ca.key" -out "$PKI/ca.crt" -days 3650 -subj /CN=kstate-e2e-ca \
		-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
fi
if [[ ! -f $PKI/sa.key ]]; then
	openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
	openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
fi
mkcert apiserver kube-apiserver "" \
	"IP:$NODE_IP,IP:$KUBERNETES_SVC_IP,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN"
mkcert admin kstate-e2e-admin system:masters
mkcert controller-manager system:kube-controller-manager ""
mkcert scheduler system:kube-scheduler ""
mkcert kubelet "system:node:$NODE_NAME" system:nodes
mkcert kube-proxy system:kube-proxy ""

# kubeconfig NAME CERT writes $ETC/NAME.kubeconfig.
kubeconfig() {
	writefile "$2" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kstate-e2e
  cluster:
    server: https://$NODE_IP:6443
    certificate-authority: $PKI/ca.crt
users:
- name: $1
  user:
    client-certificate: $PKI/$1.crt
    client-key: $PKI/$1.key
contexts:
- name: kstate-e2e
  context: {cluster: kstate-e2e, user: $1}
current-context: kstate-e2e
EOF
}
kubeconfig admin "$KUBECONFIG_ADMIN"
for c in controller-manager scheduler kubelet kube-proxy; do kubeconfig "$c" "$ETC/$c.kubeconfig"; done
step "pki: CA, component certificates and kubeconfigs in $PKI"

# ------------------------------------------------------------------- etcd
start etcd /usr/bin/etcd --name kstate --data-dir "$STATE/etcd" \
	--listen-client-urls "http://$NODE_IP:2379" --advertise-client-urls "http://$NODE_IP:2379" \
	--listen-peer-urls "http://$NODE_IP:2380" --initial-advertise-peer-urls "http://$NODE_IP:2380" \
	--initial-cluster "kstate=http://$NODE_IP:2380" --unsafe-no-fsync --quota-backend-bytes 2147483648
wait_for etcd 60 curl -fsS "http://$NODE_IP:2379/health"
step "etcd ready"

# ------------------------------------------------------------ apiserver
start kube-apiserver "$BIN/kube-apiserver" \
	--advertise-address="$NODE_IP" --bind-address="$NODE_IP" --secure-port=6443 \
	--etcd-servers="http://$NODE_IP:2379" \
	--service-cluster-ip-range="$SERVICE_CIDR" \
	--client-ca-file="$PKI/ca.crt" \
	--tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
	--kubelet-client-certificate="$PKI/admin.crt" --kubelet-client-key="$PKI/admin.key" \
	--kubelet-preferred-address-types=InternalIP \
	--service-account-issuer="https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
	--service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
	--authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
	--allow-privileged=true --profiling=false --v=1
wait_for kube-apiserver 120 kc get --raw /readyz
step "kube-apiserver ready (https://$NODE_IP:6443)"

# ------------------------------------------ controller-manager, scheduler
start kube-controller-manager "$BIN/kube-controller-manager" \
	--kubeconfig="$ETC/controller-manager.kubeconfig" \
	--authentication-kubeconfig="$ETC/controller-manager.kubeconfig" \
	--authorization-kubeconfig="$ETC/controller-manager.kubeconfig" \
	--bind-address="$NODE_IP" --secure-port=10257 --leader-elect=false \
	--service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
	--use-service-account-credentials=true \
	--cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
	--service-cluster-ip-range="$SERVICE_CIDR" --allocate-node-cidrs=false \
	--profiling=false --v=1
start kube-scheduler "$BIN/kube-scheduler" \
	--kubeconfig="$ETC/scheduler.kubeconfig" \
	--authentication-kubeconfig="$ETC/scheduler.kubeconfig" \
	--authorization-kubeconfig="$ETC/scheduler.kubeconfig" \
	--bind-address="$NODE_IP" --secure-port=10259 --leader-elect=false --profiling=false --v=1
wait_for kube-controller-manager 60 curl -kfsS "https://$NODE_IP:10257/healthz"
wait_for kube-scheduler 60 curl -kfsS "https://$NODE_IP:10259/healthz"
step "kube-controller-manager and kube-scheduler ready"

# ------------------------------------------------------------ containerd
mkdir -p "$ETC/cni/net.d" "$STATE/containerd" "$STATE/cni"
writefile "$ETC/cni/net.d/10-kstate.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "kstate-e2e",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$STATE/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GW"}]],
        "routes": [{"dst": "$NODE_IP/32"}, {"dst": "$SERVICE_CIDR"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
writefile "$ETC/containerd.toml" <<EOF
version = 2
root = "$STATE/containerd/root"
state = "$STATE/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "$CONTAINERD_SOCK"

[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # The VM lacks CAP_SYS_RESOURCE: without this runc fails with
  # "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$STATE/containerd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$ETC/cni/net.d"
EOF
start containerd /usr/bin/containerd --config "$ETC/containerd.toml"
ctrc() { ctr --address "$CONTAINERD_SOCK" -n k8s.io "$@"; }
wait_for containerd 60 ctrc version
step "containerd ready ($CONTAINERD_SOCK)"

have_images=$(ctrc images ls -q 2>/dev/null || true)
n=0
for tar in "$IMAGES"/*.tar; do
	ref=$(cat "${tar%.tar}.ref")
	stamp="$STATE/containerd/imported-$(basename "${tar%.tar}")"
	if grep -qxF "$ref" <<<"$have_images" && [[ -f $stamp && ! $tar -nt $stamp ]]; then
		continue
	fi
	ctrc images import "$tar" >>"$LOG/containerd-import.log" 2>&1 ||
		fail containerd-import "ctr images import $tar failed"
	touch "$stamp"
	n=$((n + 1))
done
step "images: imported $n into containerd (namespace k8s.io)"

# --------------------------------------------------------------- kubelet
mkdir -p "$STATE/kubelet" "$STATE/pod-logs"
writefile "$ETC/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: $NODE_IP
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_ROOT
clusterDomain: $CLUSTER_DOMAIN
clusterDNS: [$NODE_IP]
resolvConf: ""
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
podLogsDir: $STATE/pod-logs
failSwapOn: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
serializeImagePulls: false
maxPods: 110
EOF
start kubelet "$BIN/kubelet" --config="$ETC/kubelet.yaml" --kubeconfig="$ETC/kubelet.kubeconfig" \
	--root-dir="$STATE/kubelet" --cert-dir="$STATE/kubelet/pki" \
	--hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --v=1
wait_for kubelet 60 curl -fsS "http://$NODE_IP:10248/healthz"
wait_for kubelet 90 kc wait --for=condition=Ready "node/$NODE_NAME" --timeout=2s
step "kubelet ready, node $NODE_NAME Ready"

# ------------------------------------------------------------ kube-proxy
writefile "$ETC/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $ETC/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
healthzBindAddress: $NODE_IP:10256
metricsBindAddress: $NODE_IP:10249
clusterCIDR: $POD_CIDR
nodePortAddresses: [$NODE_IP/32]
conntrack: {maxPerCore: 0}
iptables: {localhostNodePorts: false}
EOF
start kube-proxy "$BIN/kube-proxy" --config="$ETC/kube-proxy.yaml" --v=1
wait_for kube-proxy 60 curl -fsS "http://$NODE_IP:10256/healthz"
step "kube-proxy ready"

# --------------------------------------------------------------- CoreDNS
writefile "$ETC/Corefile" <<EOF
$CLUSTER_DOMAIN:53 in-addr.arpa:53 ip6.arpa:53 {
    bind $NODE_IP
    errors
    health $NODE_IP:8180
    ready $NODE_IP:8181
    kubernetes $CLUSTER_DOMAIN in-addr.arpa ip6.arpa {
        kubeconfig $KUBECONFIG_ADMIN
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 30
}
# Everything else is refused: nothing is forwarded off this machine.
.:53 {
    bind $NODE_IP
    errors
}
EOF
start coredns "$BIN/coredns" -conf "$ETC/Corefile"
wait_for coredns 60 curl -fsS "http://$NODE_IP:8181/ready"
step "coredns ready ($NODE_IP:53)"

if ((WITH_KNATIVE == 0)); then
	step "up: done without Knative; export KUBECONFIG=$KUBECONFIG_ADMIN"
	exit 0
fi

# ---------------------------------------------------------- Knative Serving
# Manifests come from the knative.dev/serving module's own config/core. The
# module zip drops symlinks, so the networking CRDs, config-network and the
# caching Image CRD come from the knative.dev/networking and knative.dev/caching
# module directories. ko:// references become the images build.sh wrote.
moddir() { (cd "$CLUSTER_DIR/knative" && GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' "$1"); }
SERVING=$(moddir knative.dev/serving)
NETWORKING=$(moddir knative.dev/networking)
CACHING=$(moddir knative.dev/caching)
M="$STATE/manifests"
rm -rf "$M"
mkdir -p "$M/1-crds" "$M/2-core"
cp "$SERVING/config/core/100-namespace.yaml" "$M/1-crds/100-namespace.yaml"
cp "$SERVING"/config/core/300-resources/*.yaml "$M/1-crds/"
for f in certificate domain-claim ingress serverlessservice; do cp "$NETWORKING/config/$f.yaml" "$M/1-crds/300-networking-$f.yaml"; done
cp "$CACHING/config/image.yaml" "$M/1-crds/300-caching-image.yaml"
cp "$SERVING/config/core/200-serviceaccount.yaml" "$M/2-core/200-serviceaccount.yaml"
for f in "$SERVING"/config/core/200-roles/*.yaml; do cp "$f" "$M/2-core/200-roles-$(basename "$f")"; done
cp "$SERVING/config/core/300-knativecertificate.yaml" "$M/2-core/"
for f in "$SERVING"/config/core/configmaps/*.yaml; do cp "$f" "$M/2-core/400-config-$(basename "$f")"; done
cp "$NETWORKING/config/config-network.yaml" "$M/2-core/400-config-network.yaml"
for f in activator autoscaler controller webhook; do cp "$SERVING/config/core/deployments/$f.yaml" "$M/2-core/500-$f.yaml"; done
for f in "$SERVING"/config/core/webhooks/*.yaml; do cp "$f" "$M/2-core/600-webhook-$(basename "$f")"; done
cp "$SERVING/config/core/999-cache.yaml" "$M/2-core/"
chmod -R u+w "$M"
sed -i "s#ko://knative.dev/serving/cmd/\([a-z-]*\)#$KNATIVE_IMAGE_PREFIX/\1:$KNATIVE_VERSION#g" "$M"/*/*.yaml
sed -i "s#^data:\$#data:\n  ingress-class: \"$INGRESS_CLASS\"#" "$M/2-core/400-config-network.yaml"
if grep -rq 'ko://' "$M"; then die "unreplaced ko:// references in $M"; fi

kc apply -f "$M/1-crds" >"$LOG/knative-apply.log" 2>&1 || fail knative-apply "kubectl apply $M/1-crds failed"
kc wait --for=condition=Established crd --all --timeout=60s >>"$LOG/knative-apply.log" 2>&1 ||
	fail knative-apply "CRDs not established"
applied=0
for i in $(seq 1 20); do
	if kc apply -f "$M/2-core" >>"$LOG/knative-apply.log" 2>&1; then
		applied=1
		break
	fi
	sleep 3 # a re-run may meet the webhook while it restarts
done
((applied)) || fail knative-apply "kubectl apply $M/2-core failed"
step "knative: manifests applied ($M)"

# The test ingress runs on the host: it reaches Services at their ClusterIP
# through kube-proxy's rules. Pods reach it at $NODE_IP (the KIngress load
# balancer IP).
start kingress "$BIN/kingress" -kubeconfig "$KUBECONFIG_ADMIN" -addr "$INGRESS_ADDR" -lb-ip "$NODE_IP"
wait_for kingress 30 bash -c "curl -sS -o /dev/null -w '%{http_code}' http://$INGRESS_ADDR/ | grep -q 404"
step "kingress (test-only ingress) ready on $INGRESS_ADDR"

if ! kc -n knative-serving wait --for=condition=Available deploy --all --timeout=300s >>"$LOG/knative-apply.log" 2>&1; then
	kc -n knative-serving get pods -o wide >&2 || true
	for p in $(kc -n knative-serving get pods -o name 2>/dev/null); do
		echo "----- $p" >&2
		kc -n knative-serving logs "$p" --all-containers --tail=20 >&2 || true
	done
	fail knative-apply "Knative Serving deployments not Available after 300s"
fi
step "knative: Serving $KNATIVE_VERSION Available"

echo
echo "Cluster is up. Use it with:"
echo "  export KUBECONFIG=$KUBECONFIG_ADMIN"
echo "  kubectl get pods -A          # kubectl is $BIN/kubectl ($K8S_VERSION)"
echo "Component logs: $LOG/<component>.log; ingress: http://$INGRESS_ADDR (Host: <ksvc host>)"
step "up: done"
