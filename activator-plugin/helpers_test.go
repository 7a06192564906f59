package plugin

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	netcfg "knative.dev/networking/pkg/config"
	fakekubeclient "knative.dev/pkg/client/injection/kube/client/fake"
	_ "knative.dev/pkg/client/injection/kube/informers/core/v1/endpoints/fake"
	_ "knative.dev/pkg/client/injection/kube/informers/core/v1/service/fake"
	"knative.dev/pkg/logging"
	rtesting "knative.dev/pkg/reconciler/testing"
	"knative.dev/serving/pkg/activator"
	activatorconfig "knative.dev/serving/pkg/activator/config"
	activatorhandler "knative.dev/serving/pkg/activator/handler"
	activatornet "knative.dev/serving/pkg/activator/net"
	"knative.dev/serving/pkg/apis/serving"
	v1 "knative.dev/serving/pkg/apis/serving/v1"
	fakeservingclient "knative.dev/serving/pkg/client/injection/client/fake"
	_ "knative.dev/serving/pkg/client/injection/informers/serving/v1/revision/fake"
	"knative.dev/serving/pkg/networking"
	"knative.dev/serving/pkg/reconciler/serverlessservice/resources/names"

	"github.com/kstate-dev/kstate/activator-plugin/affinity"
)

const (
	testNamespace = "shop"
	testTimeout   = 10 * time.Second
)

// env is one activator's world: fake informers and clients, the plugin in
// front of a delegate throttler, and the handler chain of cmd/activator
// without the timeout, tracing, logging and metrics layers.
type env struct {
	t      testing.TB
	ctx    context.Context
	plugin *Plugin
	chain  http.Handler

	// stock is Knative's throttler (nil with a fake delegate), and
	// stockChain the same chain without the plugin, for comparisons.
	stock      *activatornet.Throttler
	stockChain http.Handler
}

type envOpts struct {
	// delegate replaces Knative's throttler when set.
	delegate activatorhandler.Throttler
	// reporterFor, when set, builds a concurrency reporter from the env's
	// context; it wraps the chain as in cmd/activator.
	reporterFor func(ctx context.Context) *activatorhandler.ConcurrencyReporter
	opts        Options
}

func newEnv(t testing.TB, o envOpts) *env {
	t.Helper()
	ctx, cancel, informers := rtesting.SetupFakeContextWithCancel(t)
	waitInformers, err := rtesting.RunAndSyncInformers(ctx, informers...)
	if err != nil {
		t.Fatal("Failed to start informers:", err)
	}

	delegate := o.delegate
	var throttlerDone chan struct{}
	var stock *activatornet.Throttler
	if delegate == nil {
		// Knative's throttler, trusting Kubernetes readiness instead of
		// probing (mesh compatibility disabled), over the same transport.
		throttler := activatornet.NewThrottler(ctx, "10.0.0.254")
		throttlerDone = make(chan struct{})
		go func() {
			defer close(throttlerDone)
			throttler.Run(ctx, http.DefaultTransport, false, netcfg.MeshCompatibilityModeDisabled)
		}()
		delegate, stock = throttler, throttler
	}
	transport := &http.Transport{MaxIdleConnsPerHost: 100, DisableCompression: true}
	p := New(ctx, delegate, o.opts)

	logger := logging.FromContext(ctx)
	store := activatorconfig.NewStore(logger)
	store.OnConfigChanged(&corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "config-tracing"},
		Data:       map[string]string{"backend": "none"},
	})
	ah := activatorhandler.New(ctx, p, p.Transport(transport), false, logger, false)
	ah = p.Handler(ah)
	if o.reporterFor != nil {
		ah = o.reporterFor(ctx).Handler(ah)
	}
	ah = activatorhandler.NewContextHandler(ctx, ah, store)

	var stockChain http.Handler
	stockTransport := &http.Transport{MaxIdleConnsPerHost: 100, DisableCompression: true}
	if stock != nil {
		stockChain = activatorhandler.NewContextHandler(ctx,
			activatorhandler.New(ctx, stock, stockTransport, false, logger, false), store)
	}

	t.Cleanup(func() {
		cancel()
		waitInformers()
		if throttlerDone != nil {
			<-throttlerDone
		}
		transport.CloseIdleConnections()
		stockTransport.CloseIdleConnections()
	})
	return &env{t: t, ctx: ctx, plugin: p, chain: ah, stock: stock, stockChain: stockChain}
}

// revOpt changes a test revision.
type revOpt func(*v1.Revision)

func withKstate(annotations ...string) revOpt {
	return func(r *v1.Revision) {
		r.Annotations[AnnotationEnabled] = "true"
		for i := 0; i+1 < len(annotations); i += 2 {
			r.Annotations[annotations[i]] = annotations[i+1]
		}
	}
}

func withCC(cc int64) revOpt {
	return func(r *v1.Revision) { r.Spec.ContainerConcurrency = ptr.To(cc) }
}

func revision(name string, opts ...revOpt) *v1.Revision {
	r := &v1.Revision{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Namespace:   testNamespace,
			Annotations: map[string]string{},
			Labels: map[string]string{
				serving.ServiceLabelKey:       "cart",
				serving.ConfigurationLabelKey: "cart",
			},
		},
		Spec: v1.RevisionSpec{
			ContainerConcurrency: ptr.To[int64](0),
			TimeoutSeconds:       ptr.To[int64](60),
		},
	}
	for _, o := range opts {
		o(r)
	}
	return r
}

func (e *env) createRevision(rev *v1.Revision) {
	e.t.Helper()
	if _, err := fakeservingclient.Get(e.ctx).ServingV1().Revisions(rev.Namespace).Create(e.ctx, rev, metav1.CreateOptions{}); err != nil {
		e.t.Fatal("Creating the revision:", err)
	}
	// Wait until the informer has it, so the context handler finds it.
	if err := wait.PollUntilContextTimeout(e.ctx, time.Millisecond, testTimeout, true, func(context.Context) (bool, error) {
		_, err := e.plugin.revisionLister.Revisions(rev.Namespace).Get(rev.Name)
		return err == nil, nil
	}); err != nil {
		e.t.Fatalf("revision %s never reached the informer", rev.Name)
	}
}

// backend is an HTTP server standing in for one pod (its queue-proxy and
// agent): it answers with its name in Kstate-Pod and echoes the body. A
// request with X-Hold waits until release; an agent-like 421 can be set.
type backend struct {
	name string
	srv  *httptest.Server

	held    atomic.Int64
	hold    chan struct{}
	mu      sync.Mutex
	holder  string
	counter map[string]int
}

func newBackend(t testing.TB, name string) *backend {
	b := &backend{name: name, hold: make(chan struct{}), counter: map[string]int{}}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		b.mu.Lock()
		b.counter[r.Header.Get("Kstate-Key")]++
		holder := b.holder
		b.mu.Unlock()
		w.Header().Set("Kstate-Pod", name)
		if holder != "" {
			w.Header().Set(affinity.HeaderHolder, holder)
			w.Header().Set(affinity.HeaderHolderAddr, "192.0.2.1:9") // unroutable: ready pods' tracked addresses win
			affinity.WriteError(w, http.StatusMisdirectedRequest, "slot held by "+holder)
			return
		}
		if r.Header.Get("X-Hold") != "" {
			b.held.Add(1)
			<-b.hold
		}
		w.Write(body)
	}))
	t.Cleanup(func() {
		b.releaseHeld()
		b.srv.Close()
	})
	return b
}

func (b *backend) releaseHeld() {
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-b.hold:
	default:
		close(b.hold)
	}
}

func (b *backend) redirectTo(holder string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.holder = holder
}

func (b *backend) hostPort() (string, int32) {
	host, port, _ := net.SplitHostPort(strings.TrimPrefix(b.srv.URL, "http://"))
	p, _ := strconv.Atoi(port)
	return host, int32(p)
}

func (b *backend) addr() string { return strings.TrimPrefix(b.srv.URL, "http://") }

// privateEndpoints is the Endpoints object of rev's private service with the
// backends ready. Every backend gets its own subset because each listens on
// its own port.
func privateEndpoints(rev string, ready []*backend, notReady ...*backend) *corev1.Endpoints {
	eps := &corev1.Endpoints{
		ObjectMeta: metav1.ObjectMeta{
			Name:      names.PrivateService(rev),
			Namespace: testNamespace,
			Labels: map[string]string{
				serving.RevisionUID:       "uid-" + rev,
				serving.RevisionLabelKey:  rev,
				networking.ServiceTypeKey: string(networking.ServiceTypePrivate),
			},
		},
	}
	subset := func(b *backend, ready bool) corev1.EndpointSubset {
		host, port := b.hostPort()
		addr := []corev1.EndpointAddress{{IP: host, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: b.name, Namespace: testNamespace}}}
		ss := corev1.EndpointSubset{Ports: []corev1.EndpointPort{{Name: "http", Port: port}}}
		if ready {
			ss.Addresses = addr
		} else {
			ss.NotReadyAddresses = addr
		}
		return ss
	}
	for _, b := range ready {
		eps.Subsets = append(eps.Subsets, subset(b, true))
	}
	for _, b := range notReady {
		eps.Subsets = append(eps.Subsets, subset(b, false))
	}
	return eps
}

func (e *env) setEndpoints(eps *corev1.Endpoints) {
	e.t.Helper()
	client := fakekubeclient.Get(e.ctx).CoreV1().Endpoints(eps.Namespace)
	if _, err := client.Update(e.ctx, eps, metav1.UpdateOptions{}); err != nil {
		if _, err := client.Create(e.ctx, eps, metav1.CreateOptions{}); err != nil {
			e.t.Fatal("Creating the endpoints:", err)
		}
	}
}

// waitForPods waits until the router of rev has exactly the given pods.
func (e *env) waitForPods(rev string, want ...*backend) *affinity.Router {
	e.t.Helper()
	wantPods := make([]affinity.Pod, 0, len(want))
	for _, b := range want {
		wantPods = append(wantPods, affinity.Pod{Name: b.name, Addr: b.addr()})
	}
	sortPods(wantPods)
	revID := types.NamespacedName{Namespace: testNamespace, Name: rev}
	var last []affinity.Pod
	err := wait.PollUntilContextTimeout(e.ctx, time.Millisecond, testTimeout, true, func(context.Context) (bool, error) {
		r := e.plugin.Router(revID)
		if r == nil {
			return false, nil
		}
		last = r.Pods()
		return cmp.Equal(wantPods, last, cmpopts.EquateEmpty()), nil
	})
	if err != nil {
		e.t.Fatalf("router of %s never had pods %v; last saw %v", rev, wantPods, last)
	}
	return e.plugin.Router(revID)
}

func sortPods(ps []affinity.Pod) {
	slices.SortFunc(ps, func(a, b affinity.Pod) int { return strings.Compare(a.Name, b.Name) })
}

// request builds a request for rev as the activator gets it.
func request(ctx context.Context, rev, key, body string) *http.Request {
	req := httptest.NewRequest(http.MethodPost, "http://cart.shop.example.com/", strings.NewReader(body)).WithContext(ctx)
	req.Header.Set(activator.RevisionHeaderName, rev)
	req.Header.Set(activator.RevisionHeaderNamespace, testNamespace)
	if key != "" {
		req.Header.Set("Kstate-Key", key)
	}
	return req
}

func (e *env) do(req *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	e.chain.ServeHTTP(rec, req)
	return rec
}

func keys(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("cart-%d", i)
	}
	return out
}
