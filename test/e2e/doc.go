// Package e2e holds kstate's Kubernetes end-to-end tests. They run only with
// the build tag e2e, against the single-node Kubernetes + Knative Serving
// cluster that hack/cluster/up.sh brings up (hack/cluster/e2e.sh does both):
//
//	hack/cluster/up.sh
//	cd test/e2e && go test -tags e2e -count=1 -v ./...
//
// The tests use only the standard library: they drive the cluster with the
// cluster's own kubectl and reach Knative Services through the test ingress
// on the node address. See docs/testing.md.
//
// This is its own module so that the product's go.mod stays clean.
package e2e
