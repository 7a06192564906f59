#!/usr/bin/env bash
# Builds everything the e2e cluster runs, offline, from the Go module proxy
# and this repository: Kubernetes v1.30.4 (hack/cluster/k8s), CoreDNS
# (hack/cluster/coredns), Knative Serving v0.42.2 + the test ingress + the
# image builder + pause (hack/cluster/knative), kstate's agent, controller,
# drop-in activator, kn-kstate and the examples (this repository), and the
# container images (docker-save tarballs under $STATE/images, loaded into
# containerd by up.sh).
#
# A wrapper module is rebuilt only when its go.mod, go.sum, Go files, the Go
# version or the flags change (a stamp under $STATE/bin). Builds run one at a
# time under `nice -n 10`: the machine is shared.
#
# Usage: hack/cluster/build.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

export CGO_ENABLED=0 GOFLAGS=-mod=readonly GOTOOLCHAIN=local
mkdir -p "$BIN" "$IMAGES"
# One build at a time per state directory (up.sh takes its own lock).
exec 8>"$STATE/.build.lock"
flock 8

# stamp DIR EXTRA... prints a hash of a module's inputs.
stamp() {
	local dir=$1
	shift
	{
		go version
		echo "$@"
		cd "$dir" && find . -name '*.go' -o -name go.mod -o -name go.sum | LC_ALL=C sort | xargs sha256sum
	} | sha256sum | cut -d' ' -f1
}

# gobuild NAME MODULE_DIR LDFLAGS PACKAGES... builds PACKAGES into $BIN
# unless the module's stamp is unchanged and every binary is there.
gobuild() {
	local name=$1 dir=$2 ldflags=$3
	shift 3
	local want have="" p missing=0
	want=$(stamp "$dir" "$ldflags" "$@")
	[[ -f $BIN/.stamp-$name ]] && have=$(cat "$BIN/.stamp-$name")
	for p in "$@"; do [[ -x $BIN/$(basename "$p") ]] || missing=1; done
	if [[ $want == "$have" && $missing == 0 ]]; then
		step "build $name: up to date"
		return 0
	fi
	step "build $name: go build $* (this is the slow part on a cold cache)"
	if ! (cd "$dir" && nice -n 10 go build -trimpath -ldflags "$ldflags" -o "$BIN/" "$@") >"$LOG/build-$name.log" 2>&1; then
		tail -n 40 "$LOG/build-$name.log" >&2
		die "build $name failed (log: $LOG/build-$name.log)"
	fi
	echo "$want" >"$BIN/.stamp-$name"
	step "build $name: done"
}

mkdir -p "$LOG"

K8S_LDFLAGS="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	K8S_LDFLAGS+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=30"
	K8S_LDFLAGS+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
gobuild kubernetes "$CLUSTER_DIR/k8s" "$K8S_LDFLAGS" \
	k8s.io/kubernetes/cmd/kube-apiserver \
	k8s.io/kubernetes/cmd/kube-controller-manager \
	k8s.io/kubernetes/cmd/kube-scheduler \
	k8s.io/kubernetes/cmd/kubelet \
	k8s.io/kubernetes/cmd/kube-proxy \
	k8s.io/kubernetes/cmd/kubectl

gobuild coredns "$CLUSTER_DIR/coredns" "-s -w" .
[[ -x $BIN/coredns ]] || die "coredns binary missing"

gobuild knative "$CLUSTER_DIR/knative" "-s -w" \
	knative.dev/serving/cmd/activator \
	knative.dev/serving/cmd/autoscaler \
	knative.dev/serving/cmd/controller \
	knative.dev/serving/cmd/webhook \
	knative.dev/serving/cmd/queue \
	./cmd/kingress ./cmd/mkimage ./cmd/pause ./cmd/hello

# kstate's own binaries come from the working tree; go build is incremental.
# kstate/activator is Knative's activator with the routing plugin inside (a
# drop-in for knative-serving/activator's image); kn-kstate runs on the host.
step "build kstate: kstate-agent, controller, activator, kn-kstate, the examples (from $REPO_ROOT)"
mkdir -p "$BIN/kstate"
if ! (cd "$REPO_ROOT" && GOFLAGS=-mod=readonly nice -n 10 go build -trimpath -ldflags "-s -w" -o "$BIN/kstate/" \
	./cmd/kstate-agent ./cmd/controller ./cmd/activator ./cmd/kn-kstate \
	./examples/counter/cmd/counter ./examples/cart/cmd/cart ./examples/visitors/cmd/visitors ./examples/join/cmd/join \
	./test/bench/cmd/stateless-counter ./test/bench/cmd/redis-delay) >"$LOG/build-kstate.log" 2>&1; then
	tail -n 40 "$LOG/build-kstate.log" >&2
	die "build kstate failed (log: $LOG/build-kstate.log)"
fi

# image NAME REF ENTRYPOINT FILE... writes $IMAGES/NAME.tar when one of its
# files is newer than the tarball or its arguments changed.
image() {
	local name=$1 ref=$2 entry=$3
	shift 3
	local tar="$IMAGES/$name.tar" f args=() stale=0 key="$ref $entry $*"
	[[ -f $tar && $(cat "$IMAGES/$name.args" 2>/dev/null) == "$key" ]] || stale=1
	for f in "$@"; do
		case $f in
		-symlink=* | -env=* | -user=*) args+=("$f") ;;
		*)
			args+=(-file "$f")
			[[ ${f%%:*} -nt $tar ]] && stale=1
			;;
		esac
	done
	if ((stale)); then
		"$BIN/mkimage" -o "$tar.tmp" -tag "$ref" -entrypoint "$entry" "${args[@]}" >/dev/null
		mv "$tar.tmp" "$tar"
		echo "$ref" >"$IMAGES/$name.ref"
		echo "$key" >"$IMAGES/$name.args"
	fi
}

step "images: building docker-save tarballs with go-containerregistry"
image pause "$PAUSE_IMAGE" /pause "$BIN/pause:/pause"
for c in activator autoscaler controller webhook queue; do
	image "knative-$c" "$KNATIVE_IMAGE_PREFIX/$c:$KNATIVE_VERSION" "/ko-app/$c" "$BIN/$c:/ko-app/$c"
done
image hello dev.local/kstate-e2e/hello:v1 /hello "$BIN/hello:/hello"
bb_links=()
for a in sh ls cat sleep env ps id echo grep; do bb_links+=("-symlink=/bin/$a=busybox"); done
# Debian's static busybox crashes in name lookups (glibc NSS), so the image
# has no network applets: it is a shell for debugging and sleep pods.
image busybox dev.local/kstate-e2e/busybox:v1 /bin/sh /usr/bin/busybox:/bin/busybox "${bb_links[@]}"
# kstate's images are tagged with their binary's hash: a rebuilt binary is a
# new reference, so applying the install again rolls the Deployments, and
# new revisions never run a stale image under an old tag. The tests and
# install-kstate.sh read the references from $IMAGES/NAME.ref.
kimage() {
	local name=$1 bin=$2 entry=$3
	image "$name" "$KSTATE_IMAGE_PREFIX/$name:$(sha256sum "$bin" | cut -c1-12)" "$entry" "$bin:$entry"
}
kimage kstate-agent "$BIN/kstate/kstate-agent" /kstate-agent
kimage kstate-controller "$BIN/kstate/controller" /ko-app/controller
kimage kstate-activator "$BIN/kstate/activator" /ko-app/activator
for e in counter cart visitors join; do kimage "$e" "$BIN/kstate/$e" "/$e"; done
# The benchmarks' stateless baseline (test/bench/stateless), not part of kstate.
# (redis-delay, the benchmarks' delay proxy, runs on the host, like kn-kstate.)
kimage stateless-counter "$BIN/kstate/stateless-counter" /stateless-counter
step "images: $(ls "$IMAGES"/*.tar | wc -l) tarballs in $IMAGES"
