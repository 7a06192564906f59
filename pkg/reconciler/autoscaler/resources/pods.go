package resources

import (
	"encoding/json"
	"math"
	"net"
	"strconv"

	corev1 "k8s.io/api/core/v1"

	"github.com/kstate-dev/kstate/pkg/apis/kstate"
	webhookresources "github.com/kstate-dev/kstate/pkg/webhook/resources"
	adminv1 "github.com/kstate-dev/kstate/proto/admin/v1"
)

const (
	// PreparedAnnotationKey marks a pod whose agent finished the Prepare
	// call the controller made; its value says what was loaded. The
	// controller prepares a pod only while it is unset, so a pod is
	// prepared once, across controller restarts and leader changes.
	PreparedAnnotationKey = kstate.GroupName + "/prepared"
	// DeletionCostAnnotationKey is read by the ReplicaSet controller: on
	// scale-down, pods with a lower cost go first.
	DeletionCostAnnotationKey = "controller.kubernetes.io/pod-deletion-cost"
	// DirtyWeight is how much more a dirty entity costs than a clean one:
	// deleting its pod forces a flush and a reload, not only a reload.
	DirtyWeight = 10
)

// ReadyMembers lists the pods behind the ready addresses of a revision's
// private Endpoints that serve portName: the member set the activators
// place slots over (activator-plugin/endpoints.go reads them the same
// way). The name is the pod name from the address's targetRef, or the IP
// when an address has no pod behind it.
func ReadyMembers(eps *corev1.Endpoints, portName string) []string {
	if eps == nil {
		return nil
	}
	var out []string
	seen := map[string]bool{}
	for _, ss := range eps.Subsets {
		serves := false
		for _, p := range ss.Ports {
			if p.Name == portName {
				serves = true
				break
			}
		}
		if !serves {
			continue
		}
		for _, addr := range ss.Addresses {
			name := addr.IP
			if ref := addr.TargetRef; ref != nil && ref.Kind == "Pod" && ref.Name != "" {
				name = ref.Name
			}
			if !seen[name] {
				seen[name] = true
				out = append(out, name)
			}
		}
	}
	return out
}

// IsReady reports whether the pod's Ready condition is True.
func IsReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// IsJoining reports whether pod is about to join the placement and should
// preload: running with an IP, not terminating, neither Ready nor among the
// ready members, and not prepared before.
func IsJoining(pod *corev1.Pod, ready map[string]bool) bool {
	return pod.DeletionTimestamp == nil &&
		pod.Status.Phase == corev1.PodRunning &&
		pod.Status.PodIP != "" &&
		!IsReady(pod) &&
		!ready[pod.Name] &&
		pod.Annotations[PreparedAnnotationKey] == ""
}

// AdminAddr is the address of the pod's agent admin API.
func AdminAddr(pod *corev1.Pod) string {
	return net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(webhookresources.AdminPort))
}

// DeletionCost is the pod-deletion-cost of the state an agent holds:
// entities of the slots it holds + DirtyWeight × dirty entities, clamped to
// 0..MaxInt32 (the annotation is an int32). Entities preloaded as hints for
// slots held elsewhere do not count: they are in Redis already, and a pod
// that just joined with a preload of hints would otherwise look costlier
// than the pod that serves those keys.
func DeletionCost(st *adminv1.StatsResponse) int32 {
	var e int64
	for _, s := range st.GetSlots() {
		e += s.GetEntities()
	}
	d := st.GetDirtyEntities()
	if e < 0 {
		e = 0
	}
	if d < 0 {
		d = 0
	}
	if d > math.MaxInt32/DirtyWeight {
		return math.MaxInt32
	}
	c := e + DirtyWeight*d
	if c > math.MaxInt32 || c < 0 {
		return math.MaxInt32
	}
	return int32(c)
}

// CostChanged reports whether cost differs meaningfully from the pod's
// current annotation value: the annotation is missing or unreadable, or
// the value moved by at least a tenth of the larger of the two (and at
// least 1). Small drifts do not cost an API write; the ordering between
// pods with clearly different state is kept.
func CostChanged(current string, cost int32) bool {
	old, err := strconv.ParseInt(current, 10, 32)
	if err != nil {
		return true
	}
	diff := int64(cost) - old
	if diff < 0 {
		diff = -diff
	}
	big := max(old, int64(cost), -old)
	return diff >= max(1, big/10)
}

// PreparedValue describes a finished Prepare for PreparedAnnotationKey.
// slots is the number of slots asked for; 0 means all of them.
func PreparedValue(slots int, resp *adminv1.PrepareResponse) string {
	s := "all"
	if slots > 0 {
		s = strconv.Itoa(slots)
	}
	return "slots=" + s + ",entities=" + strconv.FormatInt(resp.GetEntitiesLoaded(), 10)
}

// AnnotationPatch is the JSON merge patch that sets one annotation.
func AnnotationPatch(key, value string) []byte {
	b, _ := json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": map[string]string{key: value}},
	})
	return b
}
