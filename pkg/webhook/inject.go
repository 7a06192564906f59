package webhook

import (
	"net"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/util/sets"
	"knative.dev/serving/pkg/apis/autoscaling"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/kstate-dev/kstate/pkg/apis/config"
	"github.com/kstate-dev/kstate/pkg/apis/kstate"
	"github.com/kstate-dev/kstate/pkg/placement"
	"github.com/kstate-dev/kstate/pkg/webhook/resources"
)

// ActivatorInPath is the target-burst-capacity that keeps Knative's
// activator in the request path whatever the load: kstate routes by key
// there.
const ActivatorInPath = "-1"

// reservedPorts are the ports the function may not listen on: the agent's,
// and those Knative reserves for the queue-proxy in every pod.
var reservedPorts = sets.New[int32](resources.AgentPort, resources.AdminPort, 8012, 8013, 8022, 8112, 9090, 9091, 8008)

// Inject makes svc a kstate Service when its revision template has
// kstate.dev/enabled: "true", and undoes an earlier injection when it no
// longer has. old is the Service this update replaces (nil on create); d is
// config-kstate.
//
// On a kstate Service it:
//   - pins kstate.dev/slots and kstate.dev/space to their values (from old
//     when the update leaves them out, else the defaults), so that neither
//     changes behind the user's back (the validating webhook refuses a
//     change);
//   - sets autoscaling.knative.dev/target-burst-capacity: "-1" unless set
//     (validation rejects another value);
//   - sets timeoutSeconds, unless set, to config-kstate's
//     revision-timeout-seconds: Knative makes it the grace period;
//   - takes the function container (see functionIndex), removes its port
//     and sets KSTATE_FUNCTION_ADDR=127.0.0.1:PORT on it, PORT being its
//     declared port, or 9081 when it declared none or one the pod reserves;
//   - adds the agent container, or brings an earlier one up to date
//     (image, port, env, probes and config-kstate's resources; fields it
//     does not own, such as what Knative's defaulting added, are kept).
//
// Inject changes nothing when the annotations or config-kstate are invalid
// or the function container cannot be told: the validating webhook rejects
// those with the reason. Inject(Inject(x)) == Inject(x).
func Inject(svc *servingv1.Service, old *servingv1.Service, d *config.Defaults) {
	tmpl := &svc.Spec.Template
	if !kstate.Enabled(tmpl.Annotations) {
		uninject(&tmpl.Spec.PodSpec)
		return
	}
	if d.AgentImage == "" {
		return
	}
	if old != nil {
		for _, k := range []string{kstate.SlotsAnnotationKey, kstate.SpaceAnnotationKey} {
			if v, ok := value(old.Spec.Template.Annotations, k); ok {
				if _, set := value(tmpl.Annotations, k); !set {
					tmpl.Annotations[k] = v
				}
			}
		}
	}
	spec, errs := kstate.ParseSpec(svc.Namespace, svc.Name, tmpl.Annotations, d)
	if errs != nil || kstate.ValidateSpace(svc.Namespace, spec.Space) != nil {
		// Bad annotations, or no name to name the space after (generateName):
		// the validating webhook says which.
		return
	}
	containers := tmpl.Spec.Containers
	fn := functionIndex(containers)
	if fn < 0 {
		return
	}

	if _, set := value(tmpl.Annotations, kstate.SlotsAnnotationKey); !set {
		tmpl.Annotations[kstate.SlotsAnnotationKey] = strconv.Itoa(spec.Slots)
	}
	if _, set := value(tmpl.Annotations, kstate.SpaceAnnotationKey); !set {
		tmpl.Annotations[kstate.SpaceAnnotationKey] = spec.Space
	}
	if _, _, set := autoscaling.TargetBurstCapacityAnnotation.Get(tmpl.Annotations); !set {
		tmpl.Annotations[autoscaling.TargetBurstCapacityKey] = ActivatorInPath
	}
	if tmpl.Spec.TimeoutSeconds == nil || *tmpl.Spec.TimeoutSeconds == 0 {
		ts := d.RevisionTimeoutSeconds
		tmpl.Spec.TimeoutSeconds = &ts
	}

	port := functionPort(&containers[fn])
	containers[fn].Ports = nil
	setEnv(&containers[fn], resources.EnvFunctionAddr, resources.FunctionAddr(port))
	if isKnativeDefaultProbe(containers[fn].ReadinessProbe) {
		// Knative's defaulting gave the then serving container its default
		// TCP probe. As a sidecar it may not have one (unless Knative's
		// multi-container-probing is on), and the agent's readiness already
		// includes the function's gRPC health.
		containers[fn].ReadinessProbe = nil
	}

	want := resources.MakeAgentContainer(spec, d, port)
	if i := agentIndex(containers); i >= 0 {
		updateAgent(&containers[i], &want)
	} else {
		tmpl.Spec.Containers = append(containers, want)
	}
}

// uninject removes an injected agent from a template whose kstate was
// turned off, and gives the function container its port back (the one in
// its KSTATE_FUNCTION_ADDR). Annotations stay: the pinned slots and space
// still describe the state in the store if kstate is turned on again.
func uninject(ps *corev1.PodSpec) {
	ai := agentIndex(ps.Containers)
	if ai < 0 {
		return
	}
	fn := markedFunctionIndex(ps.Containers)
	if fn < 0 {
		return // not our injection, or ambiguous: leave it
	}
	port := functionPort(&ps.Containers[fn])
	c := &ps.Containers[fn]
	c.Env = removeEnv(c.Env, resources.EnvFunctionAddr)
	c.Ports = []corev1.ContainerPort{{ContainerPort: port}}
	ps.Containers = append(ps.Containers[:ai:ai], ps.Containers[ai+1:]...)
}

// isKnativeDefaultProbe reports whether p is the readiness probe Knative's
// defaulting gives a serving container that has none: a TCP probe of the
// serving port, success threshold 1, nothing else.
func isKnativeDefaultProbe(p *corev1.Probe) bool {
	if p == nil || p.TCPSocket == nil {
		return false
	}
	return equality.Semantic.DeepEqual(*p, corev1.Probe{
		ProbeHandler:     corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{}},
		SuccessThreshold: p.SuccessThreshold,
	}) && p.SuccessThreshold <= 1
}

// agentIndex is the index of the injected agent container, or -1.
func agentIndex(cs []corev1.Container) int {
	for i := range cs {
		if cs[i].Name == resources.AgentContainerName {
			return i
		}
	}
	return -1
}

// markedFunctionIndex is the index of the one non-agent container with
// KSTATE_FUNCTION_ADDR set (by an earlier injection, or by the user to
// choose the port), or -1 when none or several have it.
func markedFunctionIndex(cs []corev1.Container) int {
	found := -1
	for i := range cs {
		if cs[i].Name != resources.AgentContainerName && hasEnv(&cs[i], resources.EnvFunctionAddr) {
			if found >= 0 {
				return -1
			}
			found = i
		}
	}
	return found
}

// functionIndex is the index of the container that runs the function: the
// one with KSTATE_FUNCTION_ADDR; else the only container besides the agent;
// else the only one with a port (Knative's serving container). -1 when it
// cannot be told.
func functionIndex(cs []corev1.Container) int {
	if i := markedFunctionIndex(cs); i >= 0 {
		return i
	}
	marked, others, withPort := 0, []int{}, []int{}
	for i := range cs {
		if cs[i].Name == resources.AgentContainerName {
			continue
		}
		if hasEnv(&cs[i], resources.EnvFunctionAddr) {
			marked++
		}
		others = append(others, i)
		if len(cs[i].Ports) > 0 {
			withPort = append(withPort, i)
		}
	}
	switch {
	case marked > 1:
		return -1
	case len(others) == 1:
		return others[0]
	case len(withPort) == 1:
		return withPort[0]
	}
	return -1
}

// functionPort is the port the function listens on: the one in its
// KSTATE_FUNCTION_ADDR, else its declared container port, else (or when
// that port is the agent's or reserved by Knative) DefaultFunctionPort.
func functionPort(c *corev1.Container) int32 {
	if p, ok := addrPort(envValue(c, resources.EnvFunctionAddr)); ok {
		return p
	}
	if len(c.Ports) > 0 {
		if p := c.Ports[0].ContainerPort; p > 0 && !reservedPorts.Has(p) {
			return p
		}
	}
	return resources.DefaultFunctionPort
}

// addrPort is the port of a host:port, if it has a valid one.
func addrPort(addr string) (int32, bool) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseInt(p, 10, 32)
	if err != nil || n < 1 || n > 65535 {
		return 0, false
	}
	return int32(n), true
}

// updateAgent brings an injected agent container to want in the fields
// kstate owns, keeping the rest (Knative's defaulting may have added
// resources and a security context; a user may have added mounts).
func updateAgent(c, want *corev1.Container) {
	c.Image = want.Image
	c.Ports = want.Ports
	c.Env = want.Env
	c.ReadinessProbe = want.ReadinessProbe
	c.LivenessProbe = want.LivenessProbe
	for _, r := range []struct{ from, to *corev1.ResourceList }{
		{&want.Resources.Requests, &c.Resources.Requests},
		{&want.Resources.Limits, &c.Resources.Limits},
	} {
		for name, q := range *r.from {
			if *r.to == nil {
				*r.to = corev1.ResourceList{}
			}
			(*r.to)[name] = q
		}
	}
}

func hasEnv(c *corev1.Container, name string) bool {
	for _, e := range c.Env {
		if e.Name == name {
			return true
		}
	}
	return false
}

func envValue(c *corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// setEnv sets name=value on c, in place when it is there.
func setEnv(c *corev1.Container, name, value string) {
	for i := range c.Env {
		if c.Env[i].Name == name {
			c.Env[i] = corev1.EnvVar{Name: name, Value: value}
			return
		}
	}
	c.Env = append(c.Env, corev1.EnvVar{Name: name, Value: value})
}

func removeEnv(env []corev1.EnvVar, name string) []corev1.EnvVar {
	out := env[:0:0]
	for _, e := range env {
		if e.Name != name {
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// value is the trimmed annotation value and whether it is set (non-blank),
// as pkg/apis/kstate reads it.
func value(annotations map[string]string, key string) (string, bool) {
	v := strings.TrimSpace(annotations[key])
	return v, v != ""
}

// effective is the value of an immutable routing annotation (slots or
// space) of a Service in its canonical form, and whether the Service has
// one: set explicitly, or implied by kstate being enabled.
func effective(svc *servingv1.Service, key string) (string, bool) {
	ann := svc.Spec.Template.Annotations
	v, set := value(ann, key)
	switch {
	case set && key == kstate.SlotsAnnotationKey:
		if n, err := kstate.ParseSlots(v); err == nil {
			return strconv.Itoa(n), true
		}
		return v, true
	case set:
		return v, true
	case !kstate.Enabled(ann):
		return "", false
	case key == kstate.SlotsAnnotationKey:
		return strconv.Itoa(placement.DefaultSlots), true
	default:
		return kstate.DefaultSpace(svc.Namespace, svc.Name), true
	}
}
