package resources

import (
	"net"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kstate-dev/kstate/pkg/apis/config"
	"github.com/kstate-dev/kstate/pkg/apis/kstate"
)

const (
	// AgentContainerName is the name of the injected container; the webhook
	// finds an earlier injection by it.
	AgentContainerName = "kstate-agent"
	// AgentPort is the agent's serving port: the revision's container port.
	AgentPort = 8080
	// AgentPortName makes Knative speak HTTP/1 to the agent.
	AgentPortName = "http1"
	// AdminPort is the agent's admin gRPC port (AdminAddr), the agent's own
	// default port too (9091 would be the queue-proxy's user metrics port in
	// a Knative pod). The webhook sets it on every interface.
	AdminPort = 9181
	// AdminAddr is where the agent serves its admin gRPC API: every
	// interface of the pod (IPv4 and IPv6), so that the controller's
	// autoscaler plugin reaches it at <podIP>:9181 and tools inside the pod
	// still at 127.0.0.1:9181. It is not a container port: Knative routes
	// no traffic to it. See docs/operations.md on restricting it.
	AdminAddr = ":9181"
	// PreloadGate is KSTATE_PRELOAD_GATE: a new pod's agent stays unready
	// until the controller's Prepare call finished, or this long after it
	// started, whichever is first. It covers the controller noticing the
	// pod and the preload itself; without a controller a pod turns Ready
	// this much later and loads lazily.
	PreloadGate = 10 * time.Second
	// DefaultFunctionPort is the function's gRPC port on localhost when its
	// container declares no port, or declares the agent's.
	DefaultFunctionPort = 9081

	// ReadyzPath is the agent's readiness endpoint: ready once the store
	// answered and the function reports SERVING; not ready while draining
	// or after a store reset.
	ReadyzPath = "/.kstate/readyz"
	// HealthzPath is the agent's liveness endpoint.
	HealthzPath = "/.kstate/healthz"
)

// Agent environment variables (pkg/agent/config.go).
const (
	EnvPodName       = "KSTATE_POD_NAME"
	EnvPodIP         = "KSTATE_POD_IP" // only to build KSTATE_POD_ADDR
	EnvPodAddr       = "KSTATE_POD_ADDR"
	EnvAddr          = "KSTATE_ADDR"
	EnvAdminAddr     = "KSTATE_ADMIN_ADDR"
	EnvFunctionAddr  = "KSTATE_FUNCTION_ADDR" // also read by the SDK in the function container
	EnvSpace         = "KSTATE_SPACE"
	EnvSlots         = "KSTATE_SLOTS"
	EnvKey           = "KSTATE_KEY"
	EnvDurability    = "KSTATE_DURABILITY"
	EnvFlushInterval = "KSTATE_FLUSH_INTERVAL"
	EnvMaxDirtyBytes = "KSTATE_MAX_DIRTY_BYTES"
	EnvPreloadCount  = "KSTATE_PRELOAD_ENTITIES"
	EnvPreloadBytes  = "KSTATE_PRELOAD_BYTES"
	EnvPreloadGate   = "KSTATE_PRELOAD_GATE"
	EnvDedupWindow   = "KSTATE_DEDUP_WINDOW"
	EnvDrainTimeout  = "KSTATE_DRAIN_TIMEOUT"
	EnvStoreURL      = "KSTATE_STORE_URL"
)

// FunctionAddr is the function's address as the agent dials it and the SDK
// listens on it.
func FunctionAddr(port int32) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
}

// MakeAgentEnv maps a kstate Service's settings to the agent's environment.
// Every annotation has its variable:
//
//	kstate.dev/space           KSTATE_SPACE
//	kstate.dev/slots           KSTATE_SLOTS
//	kstate.dev/key             KSTATE_KEY (left out when unset: the agent's defaults)
//	kstate.dev/durability      KSTATE_DURABILITY
//	kstate.dev/flush-interval  KSTATE_FLUSH_INTERVAL
//	kstate.dev/max-dirty-bytes KSTATE_MAX_DIRTY_BYTES
//	kstate.dev/preload         KSTATE_PRELOAD_ENTITIES, KSTATE_PRELOAD_BYTES
//	kstate.dev/store           KSTATE_STORE_URL, from the Secret key
//	kstate.dev/dedup-window    KSTATE_DEDUP_WINDOW
//
// and config-kstate's drain-timeout is KSTATE_DRAIN_TIMEOUT.
// KSTATE_ADMIN_ADDR (AdminAddr) and KSTATE_PRELOAD_GATE (PreloadGate) are
// fixed: the controller's autoscaler plugin prepares joining pods over the
// admin API while the gate holds them unready. The pod's
// identity comes from the downward API: KSTATE_POD_NAME from
// metadata.name, KSTATE_POD_ADDR from status.podIP and the agent's port
// (Knative allows fieldRef only with its kubernetes.podspec-fieldref
// feature enabled; config/knative enables it).
func MakeAgentEnv(s *kstate.Spec, d *config.Defaults, functionPort int32) []corev1.EnvVar {
	port := strconv.Itoa(AgentPort)
	env := []corev1.EnvVar{
		{Name: EnvPodName, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
		{Name: EnvPodIP, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
		// $(VAR) is expanded by the kubelet from the variable above. An IPv6
		// pod IP would need brackets; see docs/install.md.
		{Name: EnvPodAddr, Value: "$(" + EnvPodIP + "):" + port},
		{Name: EnvAddr, Value: ":" + port},
		{Name: EnvAdminAddr, Value: AdminAddr},
		{Name: EnvFunctionAddr, Value: FunctionAddr(functionPort)},
		{Name: EnvSpace, Value: s.Space},
		{Name: EnvSlots, Value: strconv.Itoa(s.Slots)},
	}
	if k := s.Key.String(); k != "" {
		env = append(env, corev1.EnvVar{Name: EnvKey, Value: k})
	}
	env = append(env,
		corev1.EnvVar{Name: EnvDurability, Value: string(s.Durability)},
		corev1.EnvVar{Name: EnvFlushInterval, Value: s.FlushInterval.String()},
		corev1.EnvVar{Name: EnvMaxDirtyBytes, Value: strconv.FormatInt(s.MaxDirtyBytes, 10)},
		corev1.EnvVar{Name: EnvPreloadCount, Value: strconv.FormatInt(s.Preload.Entities, 10)},
		corev1.EnvVar{Name: EnvPreloadBytes, Value: strconv.FormatInt(s.Preload.Bytes, 10)},
		corev1.EnvVar{Name: EnvPreloadGate, Value: PreloadGate.String()},
		corev1.EnvVar{Name: EnvDedupWindow, Value: strconv.Itoa(s.DedupWindow)},
		corev1.EnvVar{Name: EnvDrainTimeout, Value: d.DrainTimeout.String()},
		corev1.EnvVar{Name: EnvStoreURL, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: s.Store.SecretName},
			Key:                  s.Store.Key,
		}}},
	)
	return env
}

// MakeAgentContainer returns the agent container of a kstate Service. It
// sets every probe field Knative's defaulting would, so that Knative's
// webhook and kstate's reach the same object in either order.
func MakeAgentContainer(s *kstate.Spec, d *config.Defaults, functionPort int32) corev1.Container {
	return corev1.Container{
		Name:  AgentContainerName,
		Image: d.AgentImage,
		Ports: []corev1.ContainerPort{{Name: AgentPortName, ContainerPort: AgentPort}},
		Env:   MakeAgentEnv(s, d, functionPort),
		// The port is left out: Knative fills in the serving port and
		// routes the probe through the queue-proxy. periodSeconds 0 is
		// Knative's aggressive probe (the queue-proxy polls every 50ms
		// until ready), as for a container without a probe: a pod from
		// zero takes traffic as soon as its preload is done, not up to a
		// period later. Knative forbids timeout and failure thresholds
		// with it.
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: ReadyzPath}},
			SuccessThreshold: 1,
		},
		LivenessProbe: &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: HealthzPath}},
			PeriodSeconds:    10,
			TimeoutSeconds:   1,
			SuccessThreshold: 1,
			FailureThreshold: 6,
		},
		Resources: *d.AgentResources.DeepCopy(),
	}
}
