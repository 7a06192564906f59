//go:build tools

// Package k8s pins the Kubernetes components that hack/cluster/up.sh builds
// for the e2e test cluster. It is TEST INFRASTRUCTURE, not part of kstate,
// and it is its own module so that the product's go.mod stays clean.
package k8s

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
