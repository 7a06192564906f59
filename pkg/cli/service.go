package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	corev1 "k8s.io/api/core/v1"
	apierrs "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	pkgnet "knative.dev/networking/pkg/apis/networking"
	"knative.dev/serving/pkg/apis/serving"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	"knative.dev/serving/pkg/networking"

	"github.com/kstate-dev/kstate/pkg/agent"
	"github.com/kstate-dev/kstate/pkg/apis/config"
	"github.com/kstate-dev/kstate/pkg/apis/kstate"
	"github.com/kstate-dev/kstate/pkg/placement"
	"github.com/kstate-dev/kstate/pkg/webhook/resources"
	adminv1 "github.com/kstate-dev/kstate/proto/admin/v1"
)

// systemNamespace is where kstate is installed (config/core): the
// config-kstate ConfigMap with the defaults lives there.
const systemNamespace = "kstate-system"

// statsTimeout bounds one pod's /.kstate/stats call through the API
// server's pod proxy.
const statsTimeout = 5 * time.Second

// getService reads a Knative Service, with a not-found error that names it.
// service builds the clients and reads the named Service in the command's
// namespace: the first steps of every command that works on one Service.
func (p *Params) service(ctx context.Context, name string) (*Clients, string, *servingv1.Service, error) {
	c, err := p.Clients()
	if err != nil {
		return nil, "", nil, err
	}
	ns := p.namespace(c)
	svc, err := getService(ctx, c, ns, name)
	return c, ns, svc, err
}

func getService(ctx context.Context, c *Clients, ns, name string) (*servingv1.Service, error) {
	svc, err := c.Serving.ServingV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrs.IsNotFound(err):
		return nil, fmt.Errorf("service %q not found in namespace %q", name, ns)
	case err != nil:
		return nil, c.apiError(fmt.Sprintf("getting service %q in namespace %q", name, ns), err)
	}
	return svc, nil
}

// loadDefaults reads config-kstate; when it cannot (not installed, not
// allowed, invalid) the built-in defaults stand in, which are what an
// install that leaves config-kstate's settings out uses.
func loadDefaults(ctx context.Context, c *Clients) *config.Defaults {
	cm, err := c.Kube.CoreV1().ConfigMaps(systemNamespace).Get(ctx, config.ConfigName, metav1.GetOptions{})
	if err == nil {
		if d, err := config.NewDefaultsConfigFromConfigMap(cm); err == nil {
			return d
		}
	}
	return config.FromContextOrDefaults(ctx).Defaults
}

// serviceSpec reads the kstate annotations of a Service's revision
// template, with d's defaults for what they leave out.
func serviceSpec(svc *servingv1.Service, d *config.Defaults) (*kstate.Spec, error) {
	spec, errs := kstate.ParseSpec(svc.Namespace, svc.Name, svc.Spec.Template.Annotations, d)
	if errs != nil {
		return nil, fmt.Errorf("service %q in namespace %q has invalid kstate annotations: %s",
			svc.Name, svc.Namespace, strings.ReplaceAll(errs.Error(), "\n", "; "))
	}
	return spec, nil
}

// latestReadyRevision reads the Service's latest ready revision.
func latestReadyRevision(ctx context.Context, c *Clients, svc *servingv1.Service) (*servingv1.Revision, error) {
	name := svc.Status.LatestReadyRevisionName
	if name == "" {
		return nil, fmt.Errorf("service %q in namespace %q has no ready revision yet", svc.Name, svc.Namespace)
	}
	return getRevision(ctx, c, svc, name)
}

func getRevision(ctx context.Context, c *Clients, svc *servingv1.Service, name string) (*servingv1.Revision, error) {
	rev, err := c.Serving.ServingV1().Revisions(svc.Namespace).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrs.IsNotFound(err):
		return nil, fmt.Errorf("revision %q of service %q not found in namespace %q", name, svc.Name, svc.Namespace)
	case err != nil:
		return nil, c.apiError(fmt.Sprintf("getting revision %q in namespace %q", name, svc.Namespace), err)
	}
	return rev, nil
}

// errNotKstate: the revision does not have kstate.dev/enabled: "true".
var errNotKstate = errors.New("not a kstate revision")

// revisionRouting reads a revision's routing the way the activator plugin
// does (plugin.ConfigFromRevision): kstate.dev/enabled must be "true"
// (errNotKstate otherwise), and kstate.dev/key, kstate.dev/slots and
// kstate.dev/space are parsed by kstate.ParseRouting, the space defaulting
// after the revision's Service label.
func revisionRouting(rev *servingv1.Revision) (kstate.Routing, error) {
	if !kstate.Enabled(rev.Annotations) {
		return kstate.Routing{}, errNotKstate
	}
	r, err := kstate.ParseRouting(rev.Namespace, rev.Labels[serving.ServiceLabelKey], rev.Annotations)
	if err != nil {
		return kstate.Routing{}, fmt.Errorf("revision %q: %w", rev.Name, err)
	}
	if r.Space == "" {
		return kstate.Routing{}, fmt.Errorf("revision %q: %s is not set and the revision has no %s label to name the entity space after",
			rev.Name, kstate.SpaceAnnotationKey, serving.ServiceLabelKey)
	}
	return r, nil
}

// notKstateError words errNotKstate for the latest ready revision of svc.
func notKstateError(svc *servingv1.Service, rev *servingv1.Revision) error {
	if kstate.Enabled(svc.Spec.Template.Annotations) {
		return fmt.Errorf("service %q in namespace %q: its latest ready revision %q is not a kstate revision yet (%s is not \"true\" on it); "+
			"the revision with kstate on is not ready: see `kn service describe %s`", svc.Name, svc.Namespace, rev.Name, kstate.EnabledAnnotationKey, svc.Name)
	}
	return fmt.Errorf("service %q in namespace %q is not a kstate service (%s is not \"true\"); turn kstate on with `kn kstate enable %s`",
		svc.Name, svc.Namespace, kstate.EnabledAnnotationKey, svc.Name)
}

// endpointPod is one address of a revision's private Endpoints.
type endpointPod struct {
	// Name is the pod name from the address's targetRef, or the IP when
	// the address has no pod behind it (the activator plugin does the same).
	Name string
	IP   string
	// Pod is true when Name is a pod's name, so the pod proxy can reach it.
	Pod bool
}

// revisionPods lists the ready and not-ready addresses of a revision's
// private Endpoints (labelled serving.knative.dev/revisionUID and
// networking.internal.knative.dev/serviceType=Private) that serve the
// revision's port (http or http2 by its protocol). The ready ones are read
// exactly as the activator plugin's readyPods reads them: the first
// matching port of each subset, an address counted once.
func revisionPods(ctx context.Context, c *Clients, rev *servingv1.Revision) (ready, notReady []endpointPod, err error) {
	sel := labels.Set{
		serving.RevisionUID:       string(rev.UID),
		networking.ServiceTypeKey: string(networking.ServiceTypePrivate),
	}.AsSelector().String()
	list, err := c.Kube.CoreV1().Endpoints(rev.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return nil, nil, c.apiError(fmt.Sprintf("listing the endpoints of revision %q in namespace %q", rev.Name, rev.Namespace), err)
	}
	port := pkgnet.ServicePortName(rev.GetProtocol())
	seen := map[string]bool{}
	for i := range list.Items {
		for _, ss := range list.Items[i].Subsets {
			if !hasPort(ss.Ports, port) {
				continue
			}
			ready = appendAddrs(ready, ss.Addresses, seen)
			notReady = appendAddrs(notReady, ss.NotReadyAddresses, seen)
		}
	}
	return ready, notReady, nil
}

func hasPort(ports []corev1.EndpointPort, name string) bool {
	for _, p := range ports {
		if p.Name == name {
			return true
		}
	}
	return false
}

func appendAddrs(to []endpointPod, addrs []corev1.EndpointAddress, seen map[string]bool) []endpointPod {
	for _, a := range addrs {
		p := endpointPod{Name: a.IP, IP: a.IP}
		if ref := a.TargetRef; ref != nil && ref.Kind == "Pod" && ref.Name != "" {
			p.Name, p.Pod = ref.Name, true
		}
		if seen[p.Name] {
			continue
		}
		seen[p.Name] = true
		to = append(to, p)
	}
	return to
}

// placementOf builds the slot table over the ready pods, as every
// activator does from its own view of the same Endpoints.
func placementOf(ready []endpointPod, slots int) (*placement.Table, error) {
	names := make([]string, len(ready))
	for i, p := range ready {
		names[i] = p.Name
	}
	t, err := placement.New(names, slots)
	if err != nil {
		return nil, fmt.Errorf("building the placement of %d pods over %d slots: %w", len(names), slots, err)
	}
	return t, nil
}

// podStats reads a pod's /.kstate/stats through the API server's pod proxy
// (the agent's serving port).
func podStats(ctx context.Context, c *Clients, ns, pod string) (*adminv1.StatsResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, statsTimeout)
	defer cancel()
	b, err := c.Kube.CoreV1().Pods(ns).ProxyGet("http", pod, strconv.Itoa(resources.AgentPort), agent.StatsPath, nil).DoRaw(ctx)
	if err != nil {
		var se apierrs.APIStatus
		if errors.As(err, &se) && se.Status().Message != "" {
			return nil, errors.New(oneLine(se.Status().Message))
		}
		var ne net.Error
		if errors.As(err, &ne) {
			return nil, errors.New(oneLine(ne.Error()))
		}
		return nil, errors.New(oneLine(err.Error()))
	}
	var st adminv1.StatsResponse
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s did not answer kstate stats (is the kstate agent its serving container?): %v", agent.StatsPath, err)
	}
	return &st, nil
}

// oneLine keeps the first line of a message, trimmed: proxy errors can carry
// whole HTML pages.
func oneLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	const max = 200
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}

// heldEpoch returns the epoch at which st holds slot.
func heldEpoch(st *adminv1.StatsResponse, slot uint32) (uint64, bool) {
	for _, s := range st.GetSlots() {
		if s.GetSlot() == slot {
			return s.GetEpoch(), true
		}
	}
	return 0, false
}
