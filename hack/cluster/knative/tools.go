//go:build tools

// Package knative pins what hack/cluster/up.sh builds for the e2e test
// cluster: Knative Serving's components (from knative.dev/serving's own
// cmd/), the test-only ingress, the image builder and the pause binary. It is
// TEST INFRASTRUCTURE, not part of kstate, and it is its own module so that
// the product's go.mod stays clean.
package knative

import (
	_ "knative.dev/serving/cmd/activator"
	_ "knative.dev/serving/cmd/autoscaler"
	_ "knative.dev/serving/cmd/controller"
	_ "knative.dev/serving/cmd/queue"
	_ "knative.dev/serving/cmd/webhook"
)
