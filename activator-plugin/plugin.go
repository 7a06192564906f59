package plugin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"

	"go.uber.org/zap"
	apierrs "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	endpointsinformer "knative.dev/pkg/client/injection/kube/informers/core/v1/endpoints"
	"knative.dev/pkg/controller"
	"knative.dev/pkg/kmeta"
	"knative.dev/pkg/logging"
	"knative.dev/pkg/logging/logkey"
	"knative.dev/pkg/reconciler"
	activatorhandler "knative.dev/serving/pkg/activator/handler"
	"knative.dev/serving/pkg/apis/serving"
	revisioninformer "knative.dev/serving/pkg/client/injection/informers/serving/v1/revision"
	servinglisters "knative.dev/serving/pkg/client/listers/serving/v1"
	"knative.dev/serving/pkg/networking"
	"knative.dev/serving/pkg/queue"
	"knative.dev/serving/pkg/reconciler/serverlessservice/resources/names"

	"github.com/kstate-dev/kstate/activator-plugin/affinity"
	"github.com/kstate-dev/kstate/pkg/keyspec"
)

// Options tune the plugin. The zero value of a field means its default.
type Options struct {
	// MaxBodyBytes bounds the request body kept for a re-send after a 421
	// and read for a structured-mode CloudEvent key
	// (keyspec.DefaultMaxBody, the agent's default limit, if 0).
	MaxBodyBytes int64
	// MaxRedirects bounds the 421 redirects of one request
	// (affinity.DefaultMaxRedirects if 0).
	MaxRedirects int
	// QueueDepth bounds the requests waiting per pod beyond
	// containerConcurrency (affinity.DefaultQueueDepth if 0).
	QueueDepth int
	// TLS is true when the activator talks to queue-proxies over
	// system-internal TLS, so redirects go to the HTTPS port as the
	// activation handler's first attempt does.
	TLS bool
}

// Plugin is kstate's key-affine routing inside Knative's activator. It is a
// handler.Throttler that routes kstate revisions itself and hands every
// other revision to Knative's throttler, an http middleware that reads the
// entity key (Handler), and the transport wrapper that follows 421 answers
// (Transport).
type Plugin struct {
	delegate activatorhandler.Throttler
	opts     Options
	logger   *zap.SugaredLogger

	revisionLister  servinglisters.RevisionLister
	endpointsLister corev1listers.EndpointsLister

	// syncMu serializes sync, so the last sync of a revision always reads
	// the newest lister state.
	syncMu sync.Mutex
	mu     sync.RWMutex
	revs   map[types.NamespacedName]*revState
}

// revState is a kstate revision's routing state.
type revState struct {
	cfg    *RevisionConfig
	router *affinity.Router
}

var _ activatorhandler.Throttler = (*Plugin)(nil)

// New returns the plugin in front of delegate, Knative's throttler
// (activatornet.NewThrottler). It watches revisions and the Endpoints of
// revisions' private services through the informers in ctx, the same
// informers the activator's throttler uses.
func New(ctx context.Context, delegate activatorhandler.Throttler, opts Options) *Plugin {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = keyspec.DefaultMaxBody
	}
	revisionInformer := revisioninformer.Get(ctx)
	endpointsInformer := endpointsinformer.Get(ctx)
	p := &Plugin{
		delegate:        delegate,
		opts:            opts,
		logger:          logging.FromContext(ctx).Named("kstate"),
		revisionLister:  revisionInformer.Lister(),
		endpointsLister: endpointsInformer.Lister(),
		revs:            map[types.NamespacedName]*revState{},
	}

	revisionInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    p.revisionChanged,
		UpdateFunc: controller.PassNew(p.revisionChanged),
		DeleteFunc: p.revisionChanged,
	})
	// The private services' Endpoints, filtered as Knative's
	// revisionBackendsManager filters them.
	endpointsInformer.Informer().AddEventHandler(cache.FilteringResourceEventHandler{
		FilterFunc: reconciler.ChainFilterFuncs(
			reconciler.LabelExistsFilterFunc(serving.RevisionUID),
			reconciler.LabelFilterFunc(networking.ServiceTypeKey, string(networking.ServiceTypePrivate), false),
		),
		Handler: cache.ResourceEventHandlerFuncs{
			AddFunc:    p.endpointsChanged,
			UpdateFunc: controller.PassNew(p.endpointsChanged),
			DeleteFunc: p.endpointsChanged,
		},
	})
	return p
}

// Try implements handler.Throttler. A request that Handler marked for key
// routing waits for the owner of its key (buffering while the revision has
// no ready pod, until ctx ends) and fn gets that pod's address; every other
// request goes to Knative's throttler unchanged.
func (p *Plugin) Try(ctx context.Context, revID types.NamespacedName, fn func(string) error) error {
	rt := affinity.FromContext(ctx)
	if rt == nil {
		return p.delegate.Try(ctx, revID, fn)
	}
	st, err := p.state(revID)
	if err != nil {
		return err
	}
	if err := rt.Acquire(ctx, st.router); err != nil {
		if errors.Is(err, affinity.ErrQueueFull) {
			// The activation handler answers 503 for this one.
			return fmt.Errorf("%w: %w", queue.ErrRequestQueueFull, err)
		}
		return err
	}
	defer rt.Release()
	return fn(rt.Ticket().Addr())
}

// Transport wraps the activation handler's transport: it follows the 421
// answers of key-routed requests (affinity.Transport) and passes every other
// request to base.
func (p *Plugin) Transport(base http.RoundTripper) http.RoundTripper {
	t := &affinity.Transport{Base: base, MaxRedirects: p.opts.MaxRedirects}
	if p.opts.TLS {
		t.TargetHost = securePort
	}
	return t
}

// securePort is the activation handler's useSecurePort: the queue-proxy's
// HTTPS port on the same host.
func securePort(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	return net.JoinHostPort(host, strconv.Itoa(networking.BackendHTTPSPort))
}

// Router returns the router of a kstate revision, or nil when the revision
// is not (or not yet) routed by key. For inspection and tests.
func (p *Plugin) Router(revID types.NamespacedName) *affinity.Router {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if st := p.revs[revID]; st != nil {
		return st.router
	}
	return nil
}

// state returns the routing state of a kstate revision, building it from the
// listers if no informer event has yet.
func (p *Plugin) state(revID types.NamespacedName) (*revState, error) {
	p.mu.RLock()
	st := p.revs[revID]
	p.mu.RUnlock()
	if st != nil {
		return st, nil
	}
	if err := p.sync(revID); err != nil {
		return nil, err
	}
	p.mu.RLock()
	st = p.revs[revID]
	p.mu.RUnlock()
	if st == nil {
		return nil, fmt.Errorf("revision %s is not routed by key (%s is not \"true\")", revID, AnnotationEnabled)
	}
	return st, nil
}

func (p *Plugin) revisionChanged(obj any) {
	acc, err := kmeta.DeletionHandlingAccessor(obj)
	if err != nil {
		p.logger.Warnw("Revision event without metadata", zap.Error(err))
		return
	}
	p.syncLogged(types.NamespacedName{Namespace: acc.GetNamespace(), Name: acc.GetName()})
}

func (p *Plugin) endpointsChanged(obj any) {
	acc, err := kmeta.DeletionHandlingAccessor(obj)
	if err != nil {
		p.logger.Warnw("Endpoints event without metadata", zap.Error(err))
		return
	}
	rev := acc.GetLabels()[serving.RevisionLabelKey]
	if rev == "" {
		return
	}
	p.syncLogged(types.NamespacedName{Namespace: acc.GetNamespace(), Name: rev})
}

func (p *Plugin) syncLogged(revID types.NamespacedName) {
	if err := p.sync(revID); err != nil {
		p.logger.Errorw("Failed to update the key routing of a revision", zap.String(logkey.Key, revID.String()), zap.Error(err))
	}
}

// sync makes the routing state of revID match the listers: no state for a
// revision that is gone or not kstate; otherwise a router for its
// configuration, fed the ready pods of its private service. Calls are
// serialized, and each reads the listers afresh, so the state after the
// last event is the state of the last lister contents whatever order
// events came in.
func (p *Plugin) sync(revID types.NamespacedName) error {
	p.syncMu.Lock()
	defer p.syncMu.Unlock()

	p.mu.RLock()
	old := p.revs[revID]
	p.mu.RUnlock()

	rev, err := p.revisionLister.Revisions(revID.Namespace).Get(revID.Name)
	if apierrs.IsNotFound(err) || (err == nil && !Enabled(rev)) {
		p.drop(revID, old)
		return nil
	}
	if err != nil {
		return fmt.Errorf("getting revision %s: %w", revID, err)
	}
	cfg, err := ConfigFromRevision(rev)
	if err != nil {
		// Keep routing with the last good configuration, if any.
		return fmt.Errorf("revision %s has an invalid kstate configuration: %w", revID, err)
	}

	st := old
	if st == nil || *st.cfg != *cfg {
		router, err := affinity.NewRouter(affinity.Options{
			Slots:       cfg.Slots,
			Concurrency: cfg.ContainerConcurrency,
			QueueDepth:  p.opts.QueueDepth,
		})
		if err != nil {
			return fmt.Errorf("revision %s: %w", revID, err)
		}
		st = &revState{cfg: cfg, router: router}
	}

	eps, err := p.endpointsLister.Endpoints(revID.Namespace).Get(names.PrivateService(revID.Name))
	if err != nil && !apierrs.IsNotFound(err) {
		return fmt.Errorf("getting the endpoints of revision %s: %w", revID, err)
	}
	pods := readyPods(eps, cfg.PortName)
	changed, err := st.router.Update(pods)
	if err != nil {
		return fmt.Errorf("revision %s: %w", revID, err)
	}

	if st != old {
		p.mu.Lock()
		p.revs[revID] = st
		p.mu.Unlock()
		if old != nil {
			old.router.Close()
		}
		p.logger.Infow("Routing revision by key", zap.String(logkey.Key, revID.String()),
			zap.String("space", cfg.Space), zap.Int("slots", cfg.Slots), zap.Stringer("keySpec", specText(cfg.Key)),
			zap.Int("containerConcurrency", cfg.ContainerConcurrency), zap.Int("pods", len(pods)))
	} else if changed {
		p.logger.Infow("Rebuilt the slot table", zap.String(logkey.Key, revID.String()), zap.Int("pods", len(pods)))
	}
	return nil
}

// drop forgets a revision that is gone or no longer kstate.
func (p *Plugin) drop(revID types.NamespacedName, st *revState) {
	if st == nil {
		return
	}
	p.mu.Lock()
	delete(p.revs, revID)
	p.mu.Unlock()
	st.router.Close()
	p.logger.Infow("Stopped routing revision by key", zap.String(logkey.Key, revID.String()))
}

// specText shows the zero Spec as "default".
type specText keyspec.Spec

func (s specText) String() string {
	if k := keyspec.Spec(s); !k.IsZero() {
		return k.String()
	}
	return "default (" + keyspec.DefaultHTTPSpec + ", " + keyspec.DefaultCloudEventSpec + " for CloudEvents)"
}
