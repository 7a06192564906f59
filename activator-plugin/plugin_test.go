package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	activatorhandler "knative.dev/serving/pkg/activator/handler"
	v1 "knative.dev/serving/pkg/apis/serving/v1"
	asmetrics "knative.dev/serving/pkg/autoscaler/metrics"
	fakeservingclient "knative.dev/serving/pkg/client/injection/client/fake"

	"github.com/kstate-dev/kstate/activator-plugin/affinity"
	"github.com/kstate-dev/kstate/pkg/keyspec"
	"github.com/kstate-dev/kstate/pkg/placement"
)

// TestAffinityAndBalance: 10,000 requests over 1,000 keys through the
// activator chain; every key always reaches the same backend, the one the
// placement table names, and the table keeps placement's load bound.
func TestAffinityAndBalance(t *testing.T) {
	e := newEnv(t, envOpts{})
	var backends []*backend
	for i := 0; i < 10; i++ {
		backends = append(backends, newBackend(t, fmt.Sprintf("cart-00001-deployment-%d", i)))
	}
	e.createRevision(revision("cart-00001", withKstate(), withCC(10)))
	e.setEndpoints(privateEndpoints("cart-00001", backends))
	router := e.waitForPods("cart-00001", backends...)

	ks := keys(1000)
	servedBy := make([]string, len(ks))
	var mu sync.Mutex
	var wg sync.WaitGroup
	const workers = 8
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < 10000; i += workers {
				k := i % len(ks)
				rec := e.do(request(context.Background(), "cart-00001", ks[k], ks[k]))
				if rec.Code != http.StatusOK || rec.Body.String() != ks[k] {
					t.Errorf("request %d (%s) = %d %q", i, ks[k], rec.Code, rec.Body.String())
					continue
				}
				pod := rec.Header().Get("Kstate-Pod")
				mu.Lock()
				if servedBy[k] != "" && servedBy[k] != pod {
					t.Errorf("key %s reached %s and %s", ks[k], servedBy[k], pod)
				}
				servedBy[k] = pod
				mu.Unlock()
			}
		}()
	}
	wg.Wait()

	names := make([]string, len(backends))
	for i, b := range backends {
		names[i] = b.name
	}
	table, err := placement.New(names, placement.DefaultSlots)
	if err != nil {
		t.Fatal(err)
	}
	keysPerPod := map[string]int{}
	for i, k := range ks {
		if _, want := table.OwnerOfKey(k); servedBy[i] != want {
			t.Errorf("key %s reached %s, placement says %s", k, servedBy[i], want)
		}
		keysPerPod[servedBy[i]]++
	}
	// The table itself is load-bounded: max(ceil(S/N), floor(1.05*S/N)).
	s, n := placement.DefaultSlots, len(backends)
	bound := max((s+n-1)/n, s*105/(100*n))
	for pod, c := range router.Table().Counts() {
		if c > bound {
			t.Errorf("%s owns %d slots, above the bound %d", pod, c, bound)
		}
	}
	// 1,000 fixed keys over 10 pods: every pod gets a fair share (the keys
	// are fixed, so this is deterministic, not a statistical test).
	for _, b := range backends {
		if c := keysPerPod[b.name]; c < 50 || c > 150 {
			t.Errorf("%s got %d of 1000 keys, want 50..150", b.name, c)
		}
	}
}

// TestChurnUnderLoad adds and removes backends while requests run: every
// request succeeds, requests held at a pod that leaves finish there, and a
// key only reaches a pod that owned it in a table current during the
// request.
func TestChurnUnderLoad(t *testing.T) {
	e := newEnv(t, envOpts{})
	var all []*backend
	for i := 0; i < 8; i++ {
		all = append(all, newBackend(t, fmt.Sprintf("cart-00001-deployment-%d", i)))
	}
	steps := [][]int{ // indexes into all: the ready set, one step at a time
		{0, 1, 2, 3},
		{0, 1, 2, 3, 4},
		{1, 2, 3, 4},
		{1, 2, 3, 4, 5, 6},
		{1, 3, 4, 5, 6},
		{3, 4, 5, 6, 7},
		{0, 3, 4, 5, 6, 7},
	}
	tables := make([]*placement.Table, len(steps))
	sets := make([][]*backend, len(steps))
	for i, st := range steps {
		var names []string
		for _, j := range st {
			sets[i] = append(sets[i], all[j])
			names = append(names, all[j].name)
		}
		var err error
		if tables[i], err = placement.New(names, placement.DefaultSlots); err != nil {
			t.Fatal(err)
		}
	}

	e.createRevision(revision("cart-00001", withKstate(), withCC(4)))
	e.setEndpoints(privateEndpoints("cart-00001", sets[0]))
	router := e.waitForPods("cart-00001", sets[0]...)
	var applied atomic.Int64 // the last step the router is known to have

	// Requests held at pods 0 and 2, which leave in the steps below.
	ks := keys(200)
	type heldReq struct {
		b   *backend
		rec chan *httptest.ResponseRecorder
	}
	var holds []heldReq
	for _, b := range []*backend{all[0], all[2]} {
		key := ""
		for _, k := range ks {
			if _, o := tables[0].OwnerOfKey(k); o == b.name {
				key = k
				break
			}
		}
		h := heldReq{b: b, rec: make(chan *httptest.ResponseRecorder, 1)}
		go func() {
			req := request(context.Background(), "cart-00001", key, "held")
			req.Header.Set("X-Hold", "1")
			h.rec <- e.do(req)
		}()
		holds = append(holds, h)
		if err := wait.PollUntilContextTimeout(e.ctx, time.Millisecond, testTimeout, true, func(context.Context) (bool, error) {
			return b.held.Load() == 1, nil
		}); err != nil {
			t.Fatalf("the held request never reached %s", b.name)
		}
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var sent atomic.Int64
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewSource(int64(w)))
			for {
				select {
				case <-stop:
					return
				default:
				}
				k := ks[rnd.Intn(len(ks))]
				from := applied.Load()
				rec := e.do(request(context.Background(), "cart-00001", k, k))
				to := min(applied.Load()+1, int64(len(steps)-1))
				sent.Add(1)
				if rec.Code != http.StatusOK || rec.Body.String() != k {
					t.Errorf("request for %s during steps %d..%d = %d %q", k, from, to, rec.Code, rec.Body.String())
					continue
				}
				got := rec.Header().Get("Kstate-Pod")
				ok := false
				for v := from; v <= to; v++ {
					if _, o := tables[v].OwnerOfKey(k); o == got {
						ok = true
					}
				}
				if !ok {
					t.Errorf("key %s reached %s, which owned it in none of steps %d..%d", k, got, from, to)
				}
			}
		}()
	}

	for i := 1; i < len(steps); i++ {
		// Let some load run on every table.
		target := sent.Load() + 300
		if err := wait.PollUntilContextTimeout(e.ctx, time.Millisecond, testTimeout, true, func(context.Context) (bool, error) {
			return sent.Load() >= target, nil
		}); err != nil {
			t.Fatal("the load stalled at step", i-1)
		}
		e.setEndpoints(privateEndpoints("cart-00001", sets[i]))
		e.waitForPods("cart-00001", sets[i]...)
		applied.Store(int64(i))
	}
	close(stop)
	wg.Wait()

	// The held requests were sent to pods that have left; they finish there.
	for _, h := range holds {
		h.b.releaseHeld()
		rec := <-h.rec
		if rec.Code != http.StatusOK || rec.Body.String() != "held" || rec.Header().Get("Kstate-Pod") != h.b.name {
			t.Errorf("held request at %s = %d %q from %q", h.b.name, rec.Code, rec.Body.String(), rec.Header().Get("Kstate-Pod"))
		}
	}
	for _, b := range all {
		if n := router.InFlight(b.name); n != 0 {
			t.Errorf("InFlight(%s) = %d after the load, want 0", b.name, n)
		}
	}
	t.Logf("%d requests over %d table changes", sent.Load(), len(steps)-1)
}

// TestScaleFromZero: with no ready endpoint, requests wait in the plugin,
// are reported to the autoscaler as concurrency by Knative's concurrency
// reporter, and all go through once a pod is ready.
func TestScaleFromZero(t *testing.T) {
	revID := types.NamespacedName{Namespace: testNamespace, Name: "cart-00001"}
	var (
		statsMu sync.Mutex
		stats   []asmetrics.Stat // what the reporter sent for revID
	)
	e := newEnv(t, envOpts{reporterFor: func(ctx context.Context) *activatorhandler.ConcurrencyReporter {
		statCh := make(chan []asmetrics.StatMessage)
		cr := activatorhandler.NewConcurrencyReporter(ctx, "activator-0", statCh)
		go cr.Run(ctx.Done())
		go func() { // the autoscaler's end of the stat stream
			for {
				select {
				case msgs := <-statCh:
					statsMu.Lock()
					for _, m := range msgs {
						if m.Key == revID {
							stats = append(stats, m.Stat)
						}
					}
					statsMu.Unlock()
				case <-ctx.Done():
					return
				}
			}
		}()
		return cr
	}})
	b := newBackend(t, "cart-00001-deployment-0")
	e.createRevision(revision("cart-00001", withKstate(), withCC(0)))
	e.setEndpoints(privateEndpoints("cart-00001", nil, b)) // the pod exists but is not ready yet
	router := e.waitForPods("cart-00001")

	const n = 5
	recs := make(chan *httptest.ResponseRecorder, n)
	for i := 0; i < n; i++ {
		go func() { recs <- e.do(request(context.Background(), "cart-00001", fmt.Sprint("k", i), "buffered")) }()
	}
	if err := wait.PollUntilContextTimeout(e.ctx, time.Millisecond, testTimeout, true, func(context.Context) (bool, error) {
		return router.Waiting() == n, nil
	}); err != nil {
		t.Fatalf("Waiting() = %d, want %d", router.Waiting(), n)
	}

	// The reporter sends 1 at once on the first request (the scale-from-zero
	// poke), then every second the average concurrency: the n buffered
	// requests, minus the one already reported.
	if err := wait.PollUntilContextTimeout(e.ctx, time.Millisecond, testTimeout, true, func(context.Context) (bool, error) {
		statsMu.Lock()
		defer statsMu.Unlock()
		sawPoke, sawLoad := false, false
		for _, s := range stats {
			sawPoke = sawPoke || (s.RequestCount == 1 && s.AverageConcurrentRequests == 1)
			sawLoad = sawLoad || s.AverageConcurrentRequests >= n-1
		}
		return sawPoke && sawLoad, nil
	}); err != nil {
		statsMu.Lock()
		defer statsMu.Unlock()
		t.Fatalf("the concurrency reporter never reported the buffered requests; it sent %+v", stats)
	}
	select {
	case rec := <-recs:
		t.Fatalf("a request finished (%d %q) before any pod was ready", rec.Code, rec.Body.String())
	default:
	}

	e.setEndpoints(privateEndpoints("cart-00001", []*backend{b}))
	for i := 0; i < n; i++ {
		if rec := <-recs; rec.Code != http.StatusOK || rec.Body.String() != "buffered" {
			t.Errorf("buffered request = %d %q, want 200 \"buffered\"", rec.Code, rec.Body.String())
		}
	}
	if got := router.Waiting(); got != 0 {
		t.Errorf("Waiting() = %d after the pod became ready, want 0", got)
	}
}

// TestBufferedUntilDeadline: a request buffered at zero ends with the
// request context, answered 503 like Knative's throttler does.
func TestBufferedUntilDeadline(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.createRevision(revision("cart-00001", withKstate()))
	e.setEndpoints(privateEndpoints("cart-00001", nil))
	e.waitForPods("cart-00001")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	rec := e.do(request(ctx, "cart-00001", "k", ""))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("status = %d, want 503", rec.Code)
	}
	if !strings.Contains(rec.Body.String(), "no ready pod for the revision") {
		t.Errorf("body = %q, want it to say there was no ready pod", rec.Body.String())
	}
}

// TestRedirect421 runs the agents' 421 through the activator chain.
func TestRedirect421(t *testing.T) {
	e := newEnv(t, envOpts{})
	a, b := newBackend(t, "pod-a"), newBackend(t, "pod-b")
	e.createRevision(revision("cart-00001", withKstate(), withCC(2)))
	e.setEndpoints(privateEndpoints("cart-00001", []*backend{a, b}))
	router := e.waitForPods("cart-00001", a, b)
	key := ""
	for _, k := range keys(100) {
		if _, p, _ := router.Pick(k); p.Name == "pod-a" {
			key = k
			break
		}
	}

	t.Run("follows the holder", func(t *testing.T) {
		a.redirectTo("pod-b") // with an unroutable Kstate-Holder-Addr: the ready pod's address must win
		rec := e.do(request(context.Background(), "cart-00001", key, "body"))
		if rec.Code != http.StatusOK || rec.Body.String() != "body" || rec.Header().Get("Kstate-Pod") != "pod-b" {
			t.Errorf("got %d %q from %q, want 200 \"body\" from pod-b", rec.Code, rec.Body.String(), rec.Header().Get("Kstate-Pod"))
		}
	})
	t.Run("gives up after the bound", func(t *testing.T) {
		a.redirectTo("pod-b")
		b.redirectTo("pod-a")
		rec := e.do(request(context.Background(), "cart-00001", key, "body"))
		if rec.Code != http.StatusServiceUnavailable {
			t.Fatalf("status = %d, want 503; body %q", rec.Code, rec.Body.String())
		}
		var got struct{ Error string }
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
			t.Fatalf("body %q: %v", rec.Body.String(), err)
		}
		want := fmt.Sprintf("slot %d of key %q is moving between pods: gave up after following 3 redirect(s), holders named: pod-b, pod-a, pod-b, pod-a; nothing was applied, retry shortly",
			placement.SlotOf(key, placement.DefaultSlots), key)
		if got.Error != want {
			t.Errorf("error = %q\nwant    %q", got.Error, want)
		}
		if rec.Header().Get("Retry-After") != "1" {
			t.Errorf("Retry-After = %q, want 1", rec.Header().Get("Retry-After"))
		}
	})
	for _, p := range []string{"pod-a", "pod-b"} {
		if n := router.InFlight(p); n != 0 {
			t.Errorf("InFlight(%s) = %d, want 0", p, n)
		}
	}
}

// recordingThrottler stands in for Knative's throttler and records calls.
type recordingThrottler struct {
	mu    sync.Mutex
	calls []types.NamespacedName
	dest  string
	route []bool // whether the ctx of each call carried an affinity.Route
}

func (r *recordingThrottler) Try(ctx context.Context, revID types.NamespacedName, fn func(string) error) error {
	r.mu.Lock()
	r.calls = append(r.calls, revID)
	r.route = append(r.route, affinity.FromContext(ctx) != nil)
	r.mu.Unlock()
	return fn(r.dest)
}

// TestPassThrough: a revision without kstate annotations goes to Knative's
// throttler, with no key needed and the body untouched.
func TestPassThrough(t *testing.T) {
	t.Run("Knative's throttler", func(t *testing.T) {
		e := newEnv(t, envOpts{})
		b := newBackend(t, "plain-00001-deployment-0")
		e.createRevision(revision("plain-00001"))
		e.setEndpoints(privateEndpoints("plain-00001", []*backend{b}))
		// Knative's throttler gets the endpoints through its own watcher;
		// the request waits in it until then.
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		rec := e.do(request(ctx, "plain-00001", "", "plain body"))
		if rec.Code != http.StatusOK || rec.Body.String() != "plain body" {
			t.Errorf("got %d %q, want 200 \"plain body\"", rec.Code, rec.Body.String())
		}
		if r := e.plugin.Router(types.NamespacedName{Namespace: testNamespace, Name: "plain-00001"}); r != nil {
			t.Error("the plugin built a router for a revision without kstate.dev/enabled")
		}
	})
	t.Run("arguments unchanged", func(t *testing.T) {
		b := newBackend(t, "plain-00001-deployment-0")
		rt := &recordingThrottler{dest: b.addr()}
		e := newEnv(t, envOpts{delegate: rt})
		e.createRevision(revision("plain-00001", func(r *v1.Revision) { r.Annotations[AnnotationEnabled] = "false" }))
		e.createRevision(revision("cart-00001", withKstate()))
		e.setEndpoints(privateEndpoints("cart-00001", []*backend{b}))
		e.waitForPods("cart-00001", b)

		for _, rev := range []string{"plain-00001", "cart-00001"} {
			rec := e.do(request(context.Background(), rev, "k", "x"))
			if rec.Code != http.StatusOK || rec.Body.String() != "x" {
				t.Errorf("%s: got %d %q", rev, rec.Code, rec.Body.String())
			}
		}
		want := []types.NamespacedName{{Namespace: testNamespace, Name: "plain-00001"}}
		if diff := cmp.Diff(want, rt.calls); diff != "" {
			t.Errorf("delegate calls (-want,+got):\n%s", diff)
		}
		if diff := cmp.Diff([]bool{false}, rt.route); diff != "" {
			t.Errorf("delegate saw a Route (-want,+got):\n%s", diff)
		}
	})
}

// TestTwoActivators: two plugin instances (two activators, each with its
// own informers) see the endpoints of one revision change in different
// orders and with subsets listed differently, and end up agreeing on the
// owner of every slot.
func TestTwoActivators(t *testing.T) {
	var bs []*backend
	for i := 0; i < 6; i++ {
		bs = append(bs, newBackend(t, fmt.Sprintf("cart-00001-deployment-%d", i)))
	}
	pick := func(idx ...int) []*backend {
		var out []*backend
		for _, i := range idx {
			out = append(out, bs[i])
		}
		return out
	}
	sequences := [][][]*backend{
		{pick(0), pick(0, 1), pick(0, 1, 2, 3), pick(0, 1, 2, 3, 4, 5)},
		{pick(5, 4), pick(3, 5, 4, 1), pick(2, 0, 5, 3, 1, 4)},
	}
	var routers []*affinity.Router
	for _, seq := range sequences {
		e := newEnv(t, envOpts{})
		e.createRevision(revision("cart-00001", withKstate(), withCC(3)))
		for _, set := range seq {
			e.setEndpoints(privateEndpoints("cart-00001", set))
			e.waitForPods("cart-00001", set...)
		}
		routers = append(routers, e.waitForPods("cart-00001", bs...))
	}
	a, b := routers[0].Table(), routers[1].Table()
	if diff := cmp.Diff(a.Members(), b.Members()); diff != "" {
		t.Fatalf("members differ (-first,+second):\n%s", diff)
	}
	for s := uint32(0); s < uint32(a.Slots()); s++ {
		if a.Owner(s) != b.Owner(s) {
			t.Fatalf("slot %d: first activator says %s, second %s", s, a.Owner(s), b.Owner(s))
		}
	}
	for _, k := range keys(1000) {
		_, p1, _ := routers[0].Pick(k)
		_, p2, _ := routers[1].Pick(k)
		if p1 != p2 {
			t.Fatalf("key %s: first activator routes to %+v, second to %+v", k, p1, p2)
		}
	}
}

// TestKeyErrors: a kstate request without a usable key is answered 400 (or
// 413) with keyspec's message as a JSON error, before the throttler.
func TestKeyErrors(t *testing.T) {
	e := newEnv(t, envOpts{delegate: &recordingThrottler{}})
	b := newBackend(t, "pod-a")
	e.createRevision(revision("cart-00001", withKstate(AnnotationKey, "header:X-Cart-Id")))
	e.createRevision(revision("cart-00002", withKstate(AnnotationKey, "ce:partitionkey")))
	e.setEndpoints(privateEndpoints("cart-00001", []*backend{b}))
	e.waitForPods("cart-00001", b)

	spec := keyspec.MustParse("header:X-Cart-Id")
	_, wantErr := spec.FromRequest(httptest.NewRequest(http.MethodGet, "/", nil), 0)

	tests := []struct {
		name     string
		req      func() *http.Request
		wantCode int
		wantMsg  string
	}{{
		name:     "missing header",
		req:      func() *http.Request { return request(context.Background(), "cart-00001", "", "x") },
		wantCode: http.StatusBadRequest,
		wantMsg:  wantErr.Error(), // no entity key: header "X-Cart-Id" is missing or empty
	}, {
		name: "not a CloudEvent for a ce: spec",
		req: func() *http.Request {
			return request(context.Background(), "cart-00002", "", "x")
		},
		wantCode: http.StatusBadRequest,
		wantMsg:  "no entity key",
	}, {
		name: "batched CloudEvents",
		req: func() *http.Request {
			r := request(context.Background(), "cart-00002", "", "[]")
			r.Header.Set("Content-Type", "application/cloudevents-batch+json")
			return r
		},
		wantCode: http.StatusUnsupportedMediaType,
		wantMsg:  "batched CloudEvents have no single entity key",
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := e.do(tc.req())
			if rec.Code != tc.wantCode {
				t.Fatalf("status = %d, want %d; body %q", rec.Code, tc.wantCode, rec.Body.String())
			}
			var got struct{ Error string }
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatalf("body %q is not a JSON error: %v", rec.Body.String(), err)
			}
			if !strings.HasPrefix(got.Error, tc.wantMsg) {
				t.Errorf("error = %q, want it to start with %q", got.Error, tc.wantMsg)
			}
		})
	}
}

// TestStructuredCloudEvent: the key comes from a structured-mode body, and
// the pod still gets the whole body.
func TestStructuredCloudEvent(t *testing.T) {
	e := newEnv(t, envOpts{})
	b := newBackend(t, "pod-a")
	e.createRevision(revision("cart-00001", withKstate()))
	e.setEndpoints(privateEndpoints("cart-00001", []*backend{b}))
	e.waitForPods("cart-00001", b)
	body := `{"specversion":"1.0","id":"1","source":"s","type":"t","partitionkey":"cart-7","data":{"by":1}}`
	req := request(context.Background(), "cart-00001", "", body)
	req.Header.Set("Content-Type", "application/cloudevents+json")
	rec := e.do(req)
	if rec.Code != http.StatusOK || rec.Body.String() != body {
		t.Errorf("got %d %q, want 200 and the body echoed", rec.Code, rec.Body.String())
	}
}

// TestRevisionLifecycle: the router follows the revision: a config change
// replaces it, deletion closes it and wakes buffered requests.
func TestRevisionLifecycle(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.createRevision(revision("cart-00001", withKstate(AnnotationSlots, "64")))
	e.setEndpoints(privateEndpoints("cart-00001", nil))
	router := e.waitForPods("cart-00001")
	if router.Slots() != 64 {
		t.Errorf("Slots() = %d, want 64", router.Slots())
	}
	rec := make(chan *httptest.ResponseRecorder, 1)
	go func() { rec <- e.do(request(context.Background(), "cart-00001", "k", "")) }()
	if err := wait.PollUntilContextTimeout(e.ctx, time.Millisecond, testTimeout, true, func(context.Context) (bool, error) {
		return router.Waiting() == 1, nil
	}); err != nil {
		t.Fatal("the request never buffered")
	}
	deleteRevision(t, e, "cart-00001")
	if r := <-rec; r.Code != http.StatusInternalServerError {
		t.Errorf("buffered request after the revision went away = %d %q, want 500", r.Code, r.Body.String())
	}
	if err := wait.PollUntilContextTimeout(e.ctx, time.Millisecond, testTimeout, true, func(context.Context) (bool, error) {
		return e.plugin.Router(types.NamespacedName{Namespace: testNamespace, Name: "cart-00001"}) == nil, nil
	}); err != nil {
		t.Fatal("the router outlived its revision")
	}
}

func deleteRevision(t *testing.T, e *env, rev string) {
	t.Helper()
	if err := fakeservingclient.Get(e.ctx).ServingV1().Revisions(testNamespace).Delete(e.ctx, rev, metav1.DeleteOptions{}); err != nil {
		t.Fatal("Deleting the revision:", err)
	}
}

// readyPods is tested on its own for the Endpoints shapes Kubernetes
// produces.
func TestReadyPods(t *testing.T) {
	ref := func(name string) *corev1.ObjectReference { return &corev1.ObjectReference{Kind: "Pod", Name: name} }
	tests := []struct {
		name string
		eps  *corev1.Endpoints
		port string
		want []affinity.Pod
	}{{
		name: "nil",
		port: "http",
	}, {
		name: "ready only, by port name",
		port: "http",
		eps: &corev1.Endpoints{Subsets: []corev1.EndpointSubset{{
			Addresses:         []corev1.EndpointAddress{{IP: "10.0.0.1", TargetRef: ref("p1")}, {IP: "10.0.0.2", TargetRef: ref("p2")}},
			NotReadyAddresses: []corev1.EndpointAddress{{IP: "10.0.0.3", TargetRef: ref("p3")}},
			Ports:             []corev1.EndpointPort{{Name: "http2", Port: 8013}, {Name: "http", Port: 8012}},
		}}},
		want: []affinity.Pod{{Name: "p1", Addr: "10.0.0.1:8012"}, {Name: "p2", Addr: "10.0.0.2:8012"}},
	}, {
		name: "h2c revision",
		port: "http2",
		eps: &corev1.Endpoints{Subsets: []corev1.EndpointSubset{{
			Addresses: []corev1.EndpointAddress{{IP: "10.0.0.1", TargetRef: ref("p1")}},
			Ports:     []corev1.EndpointPort{{Name: "http2", Port: 8013}, {Name: "http", Port: 8012}},
		}}},
		want: []affinity.Pod{{Name: "p1", Addr: "10.0.0.1:8013"}},
	}, {
		name: "no targetRef: the IP names the member; IPv6; duplicates once",
		port: "http",
		eps: &corev1.Endpoints{Subsets: []corev1.EndpointSubset{{
			Addresses: []corev1.EndpointAddress{{IP: "fd00::1"}, {IP: "10.0.0.2", TargetRef: ref("p2")}},
			Ports:     []corev1.EndpointPort{{Name: "http", Port: 8012}},
		}, {
			Addresses: []corev1.EndpointAddress{{IP: "10.0.0.2", TargetRef: ref("p2")}},
			Ports:     []corev1.EndpointPort{{Name: "http", Port: 8012}},
		}}},
		want: []affinity.Pod{{Name: "fd00::1", Addr: "[fd00::1]:8012"}, {Name: "p2", Addr: "10.0.0.2:8012"}},
	}, {
		name: "other port only",
		port: "http",
		eps: &corev1.Endpoints{Subsets: []corev1.EndpointSubset{{
			Addresses: []corev1.EndpointAddress{{IP: "10.0.0.1", TargetRef: ref("p1")}},
			Ports:     []corev1.EndpointPort{{Name: "metrics", Port: 9090}},
		}}},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, readyPods(tc.eps, tc.port)); diff != "" {
				t.Errorf("readyPods (-want,+got):\n%s", diff)
			}
		})
	}
}
