#!/usr/bin/env bash
# Installs kstate on the e2e cluster from this repository's config/, as a user
# would with ko (docs/install.md), with the images build.sh wrote in place of
# the ko:// references:
#   - config/core: the kstate-system namespace, RBAC, config-kstate and the
#     other ConfigMaps, the controller (webhooks + autoscaler plugin) and the
#     webhook configurations;
#   - config/knative: the activator image swapped for kstate's drop-in
#     activator, and the podspec-fieldref feature on.
# Applying it again changes nothing unless an image changed (the tags are
# content hashes), in which case the Deployments roll. It waits until the
# controller and the activator are Available and the webhooks answer.
#
# Usage: hack/cluster/install-kstate.sh [--uninstall]
#   --uninstall  deletes config/core and puts Knative's own activator image
#                back (as docs/install.md says to).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

UNINSTALL=0
for a in "$@"; do
	case $a in
	--uninstall) UNINSTALL=1 ;;
	*) die "unknown argument $a (usage: install-kstate.sh [--uninstall])" ;;
	esac
done

[[ -f $KUBECONFIG_ADMIN ]] || die "no cluster: bring it up with hack/cluster/up.sh"

ref() {
	local f="$IMAGES/$1.ref"
	[[ -s $f ]] || die "no image $1 ($f): run hack/cluster/build.sh"
	cat "$f"
}

# render FILE... prints the manifests with kstate's ko:// references replaced.
render() {
	local f
	for f in "$@"; do
		echo "---"
		sed -e "s#ko://github.com/kstate-dev/kstate/cmd/kstate-agent#$(ref kstate-agent)#g" \
			-e "s#ko://github.com/kstate-dev/kstate/cmd/controller#$(ref kstate-controller)#g" \
			-e "s#ko://github.com/kstate-dev/kstate/cmd/activator#$(ref kstate-activator)#g" "$f"
	done
}

# The same files, in the same order, as config/kustomization.yaml lists.
CORE=()
while read -r f; do CORE+=("$REPO_ROOT/config/$f"); done < <(sed -n 's/^- \(core\/.*\.yaml\)$/\1/p' "$REPO_ROOT/config/kustomization.yaml")
((${#CORE[@]} > 0)) || die "config/kustomization.yaml lists no core/ resources"

if ((UNINSTALL)); then
	step "uninstall: Knative's own activator image back"
	kc -n knative-serving set image deployment/activator activator="$KNATIVE_IMAGE_PREFIX/activator:$KNATIVE_VERSION"
	kc -n knative-serving rollout status deployment/activator --timeout=180s
	step "uninstall: deleting config/core"
	render "${CORE[@]}" | kc delete --ignore-not-found -f -
	exit 0
fi

M="$STATE/manifests/kstate"
mkdir -p "$M"
render "${CORE[@]}" >"$M/core.yaml"
render "$REPO_ROOT/config/knative/activator-image.yaml" >"$M/activator-image.yaml"
if grep -q 'ko://' "$M/core.yaml" "$M/activator-image.yaml"; then
	die "unreplaced ko:// references in $M"
fi

step "kstate: applying config/core (controller $(ref kstate-controller))"
# The namespace and CRD-free resources go in one apply; the webhook
# configurations are created before the controller serves, which is how a
# fresh install goes too: the controller fills in their CA bundles.
kc apply -f "$M/core.yaml" >"$LOG/kstate-apply.log" 2>&1 || fail kstate-apply "kubectl apply config/core failed"

step "kstate: Knative's activator image -> $(ref kstate-activator); podspec-fieldref on"
kc -n knative-serving patch deployment activator --type strategic --patch-file "$M/activator-image.yaml" >>"$LOG/kstate-apply.log" 2>&1 ||
	fail kstate-apply "patching knative-serving/activator failed"
kc -n knative-serving patch configmap config-features --type merge \
	-p '{"data":{"kubernetes.podspec-fieldref":"enabled"}}' >>"$LOG/kstate-apply.log" 2>&1 ||
	fail kstate-apply "patching knative-serving/config-features failed"

for d in kstate-system/kstate-controller knative-serving/activator; do
	if ! kc -n "${d%/*}" rollout status "deployment/${d#*/}" --timeout=300s >>"$LOG/kstate-apply.log" 2>&1; then
		kc -n "${d%/*}" get pods -o wide >&2 || true
		kc -n "${d%/*}" logs "deployment/${d#*/}" --all-containers --tail=40 >&2 || true
		fail kstate-apply "deployment $d did not roll out"
	fi
done

# The webhook is ready when the apiserver can call it: a dry-run create of a
# kstate Service with a bad annotation must come back denied by kstate.
probe='apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: kstate-install-probe, namespace: default}
spec:
  template:
    metadata:
      annotations: {kstate.dev/enabled: "true", kstate.dev/durability: "never"}
    spec:
      containers: [{image: dev.local/none}]'
webhook_answers() {
	local out
	out=$(kc apply --dry-run=server -f - <<<"$probe" 2>&1) && return 1
	grep -q 'validation.webhook.kstate.dev.*kstate.dev/durability' <<<"$out"
}
wait_for kstate-apply 120 webhook_answers
step "kstate: installed (controller, webhooks and activator answer)"
