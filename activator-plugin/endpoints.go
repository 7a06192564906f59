package plugin

import (
	"net"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	pkgnet "knative.dev/networking/pkg/apis/networking"
	v1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/kstate-dev/kstate/activator-plugin/affinity"
)

// portName is the private service port Knative's throttler sends a
// revision's requests to: "http" or "http2" by the revision's protocol.
func portName(rev *v1.Revision) string {
	return pkgnet.ServicePortName(rev.GetProtocol())
}

// readyPods lists the ready addresses of a revision's private Endpoints that
// serve portName, as Knative's throttler reads them (endpointsToDests in
// knative.dev/serving/pkg/activator/net), but all of them and named: the
// member name is the pod name from the address's targetRef, or the IP when
// an address has no pod behind it. Addresses listed in several subsets
// count once. Not-ready addresses are left out: for kstate revisions
// readiness is gated on preload, and a terminating pod's slots must move.
func readyPods(eps *corev1.Endpoints, portName string) []affinity.Pod {
	if eps == nil {
		return nil
	}
	var pods []affinity.Pod
	seen := map[string]bool{}
	for _, ss := range eps.Subsets {
		for _, port := range ss.Ports {
			if port.Name != portName {
				continue
			}
			portStr := strconv.Itoa(int(port.Port))
			for _, addr := range ss.Addresses {
				name := addr.IP
				if ref := addr.TargetRef; ref != nil && ref.Kind == "Pod" && ref.Name != "" {
					name = ref.Name
				}
				if seen[name] {
					continue
				}
				seen[name] = true
				pods = append(pods, affinity.Pod{Name: name, Addr: net.JoinHostPort(addr.IP, portStr)})
			}
			break
		}
	}
	return pods
}
