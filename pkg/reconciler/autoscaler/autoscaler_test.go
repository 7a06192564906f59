package autoscaler

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	kubefake "k8s.io/client-go/kubernetes/fake"
	corev1listers "k8s.io/client-go/listers/core/v1"
	clientgotesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	clocktesting "k8s.io/utils/clock/testing"
	fakekubeclient "knative.dev/pkg/client/injection/kube/client/fake"
	"knative.dev/pkg/controller"
	"knative.dev/pkg/logging"
	logtesting "knative.dev/pkg/logging/testing"
	"knative.dev/pkg/reconciler"
	rtesting "knative.dev/pkg/reconciler/testing"
	"knative.dev/serving/pkg/apis/serving"
	v1 "knative.dev/serving/pkg/apis/serving/v1"
	servinglisters "knative.dev/serving/pkg/client/listers/serving/v1"
	"knative.dev/serving/pkg/networking"

	"github.com/kstate-dev/kstate/pkg/apis/kstate"
	"github.com/kstate-dev/kstate/pkg/placement"
	"github.com/kstate-dev/kstate/pkg/reconciler/autoscaler/resources"
	adminv1 "github.com/kstate-dev/kstate/proto/admin/v1"
)

const (
	ns      = "ns"
	revName = "cart-00001"
	slots   = 64
)

var (
	t0      = time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	revKey  = ns + "/" + revName
	revID   = types.NamespacedName{Namespace: ns, Name: revName}
	errDown = errors.New("connection refused")
)

// --- fixtures ---

func revision(annotations map[string]string) *v1.Revision {
	a := map[string]string{kstate.EnabledAnnotationKey: "true", kstate.SlotsAnnotationKey: fmt.Sprint(slots)}
	for k, v := range annotations {
		a[k] = v
	}
	return &v1.Revision{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: revName, Annotations: a}}
}

type podOpt func(*corev1.Pod)

func ready(p *corev1.Pod) {
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
}

func annotated(k, v string) podOpt {
	return func(p *corev1.Pod) {
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		p.Annotations[k] = v
	}
}

func startedAt(t time.Time) podOpt {
	return func(p *corev1.Pod) { p.Status.StartTime = &metav1.Time{Time: t} }
}

func pending(p *corev1.Pod) { p.Status.Phase = corev1.PodPending; p.Status.PodIP = "" }

// pod is a running, not yet Ready pod of the revision; name "pod-N" gets
// IP 10.0.0.N.
func pod(name string, ip string, opts ...podOpt) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(name),
			Labels: map[string]string{serving.RevisionLabelKey: revName}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, StartTime: &metav1.Time{Time: t0.Add(-time.Second)},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse}}},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

// endpoints lists the ready pods of the revision's private Service.
func endpoints(pods ...*corev1.Pod) *corev1.Endpoints {
	e := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: revName + "-private",
		Labels: map[string]string{serving.RevisionLabelKey: revName, networking.ServiceTypeKey: string(networking.ServiceTypePrivate)}}}
	if len(pods) == 0 {
		return e
	}
	ss := corev1.EndpointSubset{Ports: []corev1.EndpointPort{{Name: "http", Port: 8012}, {Name: "http-queueadm", Port: 8022}}}
	for _, p := range pods {
		ss.Addresses = append(ss.Addresses, corev1.EndpointAddress{IP: p.Status.PodIP,
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: p.Name}})
	}
	e.Subsets = []corev1.EndpointSubset{ss}
	return e
}

func addr(p *corev1.Pod) string { return resources.AdminAddr(p) }

func patch(p *corev1.Pod, key, value string) clientgotesting.PatchActionImpl {
	a := clientgotesting.PatchActionImpl{Name: p.Name, PatchType: types.MergePatchType, Patch: resources.AnnotationPatch(key, value)}
	a.Namespace = ns
	return a
}

// --- fake admin API ---

type prepareCall struct {
	addr  string
	slots []uint32
	req   *adminv1.PrepareRequest
}

type fakeAdmin struct {
	mu         sync.Mutex
	prepareErr map[string]error // by addr
	stats      map[string]*adminv1.StatsResponse
	statsErr   map[string]error
	prepares   []prepareCall
	statsCalls []string
}

func (f *fakeAdmin) Prepare(_ context.Context, addr string, req *adminv1.PrepareRequest) (*adminv1.PrepareResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.prepares = append(f.prepares, prepareCall{addr: addr, slots: req.GetSlots(), req: req})
	if err := f.prepareErr[addr]; err != nil {
		return nil, err
	}
	return &adminv1.PrepareResponse{EntitiesLoaded: 7}, nil
}

func (f *fakeAdmin) Stats(_ context.Context, addr string) (*adminv1.StatsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.statsCalls = append(f.statsCalls, addr)
	if err := f.statsErr[addr]; err != nil {
		return nil, err
	}
	if st, ok := f.stats[addr]; ok {
		return st, nil
	}
	return &adminv1.StatsResponse{}, nil
}

func (f *fakeAdmin) prepared() map[string][]uint32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string][]uint32{}
	for _, c := range f.prepares {
		out[c.addr] = c.slots
	}
	return out
}

// --- the factory ---

const (
	keyAdmin    = "admin"
	keyStatsAt  = "statsAt"  // map[types.UID]time.Time: earlier reads
	keyEnqueued = "enqueued" // *[]time.Duration, filled in
)

func newReconciler(ctx context.Context, objs []runtime.Object, admin AdminClient, clk *clocktesting.FakeClock) (*Reconciler, context.Context, *kubefake.Clientset) {
	revs := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	pods := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	eps := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	var kubeObjs []runtime.Object
	for _, o := range objs {
		switch o := o.(type) {
		case *v1.Revision:
			revs.Add(o)
		case *corev1.Pod:
			pods.Add(o)
			kubeObjs = append(kubeObjs, o)
		case *corev1.Endpoints:
			eps.Add(o)
			kubeObjs = append(kubeObjs, o)
		}
	}
	ctx, kc := fakekubeclient.With(ctx, kubeObjs...)
	r := &Reconciler{
		kubeClient:      kc,
		revisionLister:  servinglisters.NewRevisionLister(revs),
		podLister:       corev1listers.NewPodLister(pods),
		endpointsLister: corev1listers.NewEndpointsLister(eps),
		admin:           admin,
		clock:           clk,
		enqueueAfter:    func(types.NamespacedName, time.Duration) {},
		costRefresh:     DefaultCostRefresh,
		prepareTimeout:  DefaultPrepareTimeout,
		statsTimeout:    DefaultStatsTimeout,
		prepareWindow:   DefaultPrepareWindow,
	}
	r.Promote(reconciler.UniversalBucket(), func(reconciler.Bucket, types.NamespacedName) {})
	return r, ctx, kc
}

func factory(t *testing.T, row *rtesting.TableRow) (controller.Reconciler, rtesting.ActionRecorderList, rtesting.EventList) {
	ctx := row.Ctx
	if ctx == nil {
		ctx = context.Background()
	}
	ctx = logging.WithLogger(ctx, logtesting.TestLogger(t))
	if row.OtherTestData == nil {
		row.OtherTestData = map[string]interface{}{}
	}
	admin, ok := row.OtherTestData[keyAdmin].(*fakeAdmin)
	if !ok {
		admin = &fakeAdmin{}
		row.OtherTestData[keyAdmin] = admin
	}
	r, ctx, kc := newReconciler(ctx, row.Objects, admin, clocktesting.NewFakeClock(t0))
	if at, ok := row.OtherTestData[keyStatsAt].(map[types.UID]time.Time); ok {
		r.statsAt = map[types.NamespacedName]map[types.UID]time.Time{revID: at}
	}
	enq := &[]time.Duration{}
	row.OtherTestData[keyEnqueued] = enq
	r.enqueueAfter = func(_ types.NamespacedName, d time.Duration) { *enq = append(*enq, d) }
	for _, reactor := range row.WithReactors {
		kc.PrependReactor("*", "*", reactor)
	}
	recorder := record.NewFakeRecorder(10)
	ctx = controller.WithEventRecorder(ctx, recorder)
	row.Ctx = ctx
	return r, rtesting.ActionRecorderList{kc}, rtesting.EventList{Recorder: recorder}
}

// wantPrepared checks which agents were asked to prepare which slots.
func wantPrepared(want map[string][]uint32) func(*testing.T, *rtesting.TableRow) {
	return func(t *testing.T, row *rtesting.TableRow) {
		t.Helper()
		got := row.OtherTestData[keyAdmin].(*fakeAdmin).prepared()
		if len(got) != len(want) {
			t.Errorf("Prepare called on %v, want %v", keys(got), keys(want))
		}
		for a, w := range want {
			g, ok := got[a]
			if !ok {
				t.Errorf("no Prepare on %s", a)
				continue
			}
			if !slices.Equal(g, w) {
				t.Errorf("Prepare on %s: slots %v, want %v", a, g, w)
			}
		}
	}
}

func wantStatsCalls(want ...string) func(*testing.T, *rtesting.TableRow) {
	return func(t *testing.T, row *rtesting.TableRow) {
		t.Helper()
		f := row.OtherTestData[keyAdmin].(*fakeAdmin)
		got := slices.Clone(f.statsCalls)
		slices.Sort(got)
		w := slices.Clone(want)
		slices.Sort(w)
		if !slices.Equal(got, w) {
			t.Errorf("Stats called on %v, want %v", got, w)
		}
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func slotsOf(t *testing.T, members []string, pod string) []uint32 {
	t.Helper()
	table, err := placement.New(members, slots)
	if err != nil {
		t.Fatal(err)
	}
	return table.SlotsOf(pod)
}

func TestReconcile(t *testing.T) {
	p1 := pod("pod-1", "10.0.0.1", ready)
	p2 := pod("pod-2", "10.0.0.2", ready)
	joiner := pod("pod-3", "10.0.0.3")
	joiner4 := pod("pod-4", "10.0.0.4")
	joinerSlots := slotsOf(t, []string{"pod-1", "pod-2", "pod-3"}, "pod-3")
	joiner4Slots := slotsOf(t, []string{"pod-1", "pod-2", "pod-4"}, "pod-4")
	if len(joinerSlots) == 0 || len(joinerSlots) == slots {
		t.Fatalf("pod-3 owns %d of %d slots; the fixture needs a proper subset", len(joinerSlots), slots)
	}
	prepared := resources.PreparedValue(len(joinerSlots), &adminv1.PrepareResponse{EntitiesLoaded: 7})
	// Stats of the ready pods: pod-1 holds more than pod-2.
	statsOf := func() map[string]*adminv1.StatsResponse {
		return map[string]*adminv1.StatsResponse{
			// 500 + 10×20 = 700: entities of held slots count, hints not.
			addr(p1): {Entities: 500, DirtyEntities: 20, Slots: []*adminv1.SlotStats{{Slot: 1, Entities: 300}, {Slot: 2, Entities: 200}}},
			// 40 + 10×1 = 50, although it holds 900 preloaded hints.
			addr(p2): {Entities: 940, DirtyEntities: 1, Slots: []*adminv1.SlotStats{{Slot: 3, Entities: 40}}},
		}
	}
	recent := func() map[types.UID]time.Time {
		return map[types.UID]time.Time{p1.UID: t0.Add(-time.Second), p2.UID: t0.Add(-time.Second)}
	}

	table := rtesting.TableTest{{
		Name:    "bad key: permanent error",
		Key:     "too/many/parts",
		WantErr: true,
	}, {
		Name: "revision gone",
		Key:  revKey,
	}, {
		Name:           "not a kstate revision: nothing called",
		Key:            revKey,
		Objects:        []runtime.Object{&v1.Revision{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: revName}}, joiner, endpoints()},
		PostConditions: []func(*testing.T, *rtesting.TableRow){wantPrepared(nil), wantStatsCalls()},
	}, {
		Name:    "scale-up: the joining pod prepares the slots it will own; ready pods are not prepared",
		Key:     revKey,
		Objects: []runtime.Object{revision(nil), p1, p2, joiner, endpoints(p1, p2)},
		OtherTestData: map[string]interface{}{
			keyAdmin:   &fakeAdmin{},
			keyStatsAt: recent(),
		},
		WantPatches:    []clientgotesting.PatchActionImpl{patch(joiner, resources.PreparedAnnotationKey, prepared)},
		PostConditions: []func(*testing.T, *rtesting.TableRow){wantPrepared(map[string][]uint32{addr(joiner): joinerSlots}), wantStatsCalls()},
	}, {
		Name: "scale-up by two: each joining pod is placed with the ready pods",
		Key:  revKey,
		Objects: []runtime.Object{revision(nil), p1, p2, joiner, joiner4, pod("pod-5", "", pending),
			pod("pod-6", "10.0.0.6", func(p *corev1.Pod) { p.DeletionTimestamp = &metav1.Time{Time: t0} }),
			endpoints(p1, p2)},
		OtherTestData: map[string]interface{}{keyStatsAt: recent()},
		WantPatches: []clientgotesting.PatchActionImpl{
			patch(joiner, resources.PreparedAnnotationKey, prepared),
			patch(joiner4, resources.PreparedAnnotationKey, resources.PreparedValue(len(joiner4Slots), &adminv1.PrepareResponse{EntitiesLoaded: 7})),
		},
		PostConditions: []func(*testing.T, *rtesting.TableRow){
			wantPrepared(map[string][]uint32{addr(joiner): joinerSlots, addr(joiner4): joiner4Slots}),
		},
	}, {
		Name:           "only once: a prepared pod is not prepared again",
		Key:            revKey,
		Objects:        []runtime.Object{revision(nil), p1, p2, pod("pod-3", "10.0.0.3", annotated(resources.PreparedAnnotationKey, prepared)), endpoints(p1, p2)},
		OtherTestData:  map[string]interface{}{keyStatsAt: recent()},
		PostConditions: []func(*testing.T, *rtesting.TableRow){wantPrepared(nil)},
	}, {
		Name:           "a pod that started long ago is not prepared (its gate passed)",
		Key:            revKey,
		Objects:        []runtime.Object{revision(nil), p1, p2, pod("pod-3", "10.0.0.3", startedAt(t0.Add(-DefaultPrepareWindow-time.Second))), endpoints(p1, p2)},
		OtherTestData:  map[string]interface{}{keyStatsAt: recent()},
		PostConditions: []func(*testing.T, *rtesting.TableRow){wantPrepared(nil)},
	}, {
		Name:           "a Ready pod not yet in the Endpoints is not prepared",
		Key:            revKey,
		Objects:        []runtime.Object{revision(nil), p1, p2, pod("pod-3", "10.0.0.3", ready), endpoints(p1, p2)},
		OtherTestData:  map[string]interface{}{keyStatsAt: recent()},
		PostConditions: []func(*testing.T, *rtesting.TableRow){wantPrepared(nil), wantStatsCalls()},
	}, {
		Name:        "scale from zero: the first pod prepares every slot (empty list) within the annotated budget",
		Key:         revKey,
		Objects:     []runtime.Object{revision(map[string]string{kstate.PreloadAnnotationKey: "entities=500,bytes=1Mi"}), pod("pod-1", "10.0.0.1"), endpoints()},
		WantPatches: []clientgotesting.PatchActionImpl{patch(pod("pod-1", ""), resources.PreparedAnnotationKey, "slots=all,entities=7")},
		PostConditions: []func(*testing.T, *rtesting.TableRow){
			wantPrepared(map[string][]uint32{"10.0.0.1:9181": nil}),
			func(t *testing.T, row *rtesting.TableRow) {
				req := row.OtherTestData[keyAdmin].(*fakeAdmin).prepares[0].req
				if req.GetMaxEntities() != 500 || req.GetMaxBytes() != 1<<20 {
					t.Errorf("budget = %d entities, %d bytes; want 500, 1Mi", req.GetMaxEntities(), req.GetMaxBytes())
				}
			},
		},
	}, {
		Name:        "scale from zero without Endpoints yet; no annotated budget: the agent's own",
		Key:         revKey,
		Objects:     []runtime.Object{revision(nil), pod("pod-1", "10.0.0.1")},
		WantPatches: []clientgotesting.PatchActionImpl{patch(pod("pod-1", ""), resources.PreparedAnnotationKey, "slots=all,entities=7")},
		PostConditions: []func(*testing.T, *rtesting.TableRow){
			wantPrepared(map[string][]uint32{"10.0.0.1:9181": nil}),
			func(t *testing.T, row *rtesting.TableRow) {
				req := row.OtherTestData[keyAdmin].(*fakeAdmin).prepares[0].req
				if req.GetMaxEntities() != 0 || req.GetMaxBytes() != 0 {
					t.Errorf("budget = %d entities, %d bytes; want 0, 0 (the agent's)", req.GetMaxEntities(), req.GetMaxBytes())
				}
			},
		},
	}, {
		Name:    "prepare fails: error (retried with backoff), no annotation; the other joiner is still prepared",
		Key:     revKey,
		Objects: []runtime.Object{revision(nil), p1, p2, joiner, joiner4, endpoints(p1, p2)},
		OtherTestData: map[string]interface{}{
			keyAdmin:   &fakeAdmin{prepareErr: map[string]error{addr(joiner): errDown}},
			keyStatsAt: recent(),
		},
		WantErr: true,
		WantPatches: []clientgotesting.PatchActionImpl{
			patch(joiner4, resources.PreparedAnnotationKey, resources.PreparedValue(len(joiner4Slots), &adminv1.PrepareResponse{EntitiesLoaded: 7})),
		},
		PostConditions: []func(*testing.T, *rtesting.TableRow){
			wantPrepared(map[string][]uint32{addr(joiner): joinerSlots, addr(joiner4): joiner4Slots}),
		},
	}, {
		Name:          "annotating the prepared pod fails: error",
		Key:           revKey,
		Objects:       []runtime.Object{revision(nil), pod("pod-1", "10.0.0.1"), endpoints()},
		WithReactors:  []clientgotesting.ReactionFunc{rtesting.InduceFailure("patch", "pods")},
		WantErr:       true,
		WantPatches:   []clientgotesting.PatchActionImpl{patch(pod("pod-1", ""), resources.PreparedAnnotationKey, "slots=all,entities=7")},
		OtherTestData: map[string]interface{}{},
	}, {
		Name:    "deletion cost: the pod holding the least state gets the lowest cost",
		Key:     revKey,
		Objects: []runtime.Object{revision(nil), p1, p2, endpoints(p1, p2)},
		OtherTestData: map[string]interface{}{
			keyAdmin: &fakeAdmin{stats: statsOf()},
		},
		WantPatches: []clientgotesting.PatchActionImpl{
			patch(p1, resources.DeletionCostAnnotationKey, "700"),
			patch(p2, resources.DeletionCostAnnotationKey, "50"),
		},
		PostConditions: []func(*testing.T, *rtesting.TableRow){
			wantStatsCalls(addr(p1), addr(p2)),
			func(t *testing.T, row *rtesting.TableRow) {
				if got := *row.OtherTestData[keyEnqueued].(*[]time.Duration); !slices.Equal(got, []time.Duration{DefaultCostRefresh}) {
					t.Errorf("enqueued after %v, want [%v]", got, DefaultCostRefresh)
				}
			},
		},
	}, {
		Name: "deletion cost unchanged or barely changed: no patch",
		Key:  revKey,
		Objects: []runtime.Object{revision(nil),
			pod("pod-1", "10.0.0.1", ready, annotated(resources.DeletionCostAnnotationKey, "690")),
			pod("pod-2", "10.0.0.2", ready, annotated(resources.DeletionCostAnnotationKey, "50")),
			endpoints(p1, p2)},
		OtherTestData:  map[string]interface{}{keyAdmin: &fakeAdmin{stats: statsOf()}},
		PostConditions: []func(*testing.T, *rtesting.TableRow){wantStatsCalls(addr(p1), addr(p2))},
	}, {
		Name:    "rate limit: Stats read less than the refresh interval ago are not read again",
		Key:     revKey,
		Objects: []runtime.Object{revision(nil), p1, p2, endpoints(p1, p2)},
		OtherTestData: map[string]interface{}{
			keyAdmin: &fakeAdmin{stats: statsOf()},
			// pod-1 read 10s ago, pod-2 a full interval ago.
			keyStatsAt: map[types.UID]time.Time{p1.UID: t0.Add(-10 * time.Second), p2.UID: t0.Add(-DefaultCostRefresh)},
		},
		WantPatches: []clientgotesting.PatchActionImpl{patch(p2, resources.DeletionCostAnnotationKey, "50")},
		PostConditions: []func(*testing.T, *rtesting.TableRow){
			wantStatsCalls(addr(p2)),
			func(t *testing.T, row *rtesting.TableRow) {
				// pod-1 is due in 20s.
				if got := *row.OtherTestData[keyEnqueued].(*[]time.Duration); !slices.Equal(got, []time.Duration{DefaultCostRefresh - 10*time.Second}) {
					t.Errorf("enqueued after %v, want [20s]", got)
				}
			},
		},
	}, {
		Name:    "stats fail: error, the other pod's cost is still set",
		Key:     revKey,
		Objects: []runtime.Object{revision(nil), p1, p2, endpoints(p1, p2)},
		OtherTestData: map[string]interface{}{
			keyAdmin: &fakeAdmin{stats: statsOf(), statsErr: map[string]error{addr(p1): errDown}},
		},
		WantErr:     true,
		WantPatches: []clientgotesting.PatchActionImpl{patch(p2, resources.DeletionCostAnnotationKey, "50")},
	}}
	table.Test(t, factory)
}

// TestCostRefreshRateLimit runs one reconciler over time: Stats are read
// at most once per interval per pod however often the revision is
// reconciled, and a change of state is patched at the next read.
func TestCostRefreshRateLimit(t *testing.T) {
	p1 := pod("pod-1", "10.0.0.1", ready)
	admin := &fakeAdmin{stats: map[string]*adminv1.StatsResponse{addr(p1): {Entities: 100}}}
	clk := clocktesting.NewFakeClock(t0)
	ctx := logging.WithLogger(context.Background(), logtesting.TestLogger(t))
	r, ctx, kc := newReconciler(ctx, []runtime.Object{revision(nil), p1, endpoints(p1)}, admin, clk)

	reconcile := func() {
		t.Helper()
		if err := r.Reconcile(ctx, revKey); err != nil {
			t.Fatalf("Reconcile: %v", err)
		}
	}
	patches := func() int {
		n := 0
		for _, a := range kc.Actions() {
			if a.GetVerb() == "patch" {
				n++
			}
		}
		return n
	}
	reconcile()
	for i := 0; i < 5; i++ { // a burst of pod events within the interval
		clk.Step(time.Second)
		reconcile()
	}
	if len(admin.statsCalls) != 1 || patches() != 1 {
		t.Fatalf("after a burst: %d Stats calls, %d patches; want 1, 1", len(admin.statsCalls), patches())
	}
	admin.mu.Lock()
	admin.stats[addr(p1)] = &adminv1.StatsResponse{Entities: 300}
	admin.mu.Unlock()
	clk.Step(DefaultCostRefresh - 5*time.Second - time.Nanosecond)
	reconcile()
	if len(admin.statsCalls) != 1 {
		t.Fatalf("%d Stats calls before the interval passed, want 1", len(admin.statsCalls))
	}
	clk.Step(time.Nanosecond)
	reconcile()
	if len(admin.statsCalls) != 2 || patches() != 2 {
		t.Fatalf("after the interval: %d Stats calls, %d patches; want 2, 2", len(admin.statsCalls), patches())
	}
	// The pod is gone: nothing is remembered of it.
	r.forget(revID)
	if len(r.statsAt) != 0 {
		t.Errorf("statsAt = %v after forget, want empty", r.statsAt)
	}
}

func TestDeletionCost(t *testing.T) {
	for _, c := range []struct {
		// held: entities of each held slot; hints: entities preloaded for
		// slots held elsewhere (in Entities, not in Slots).
		held         []int64
		hints, dirty int64
		want         int32
	}{
		{nil, 0, 0, 0},
		{[]int64{10}, 0, 0, 10},
		{[]int64{4, 6}, 0, 3, 40},
		{[]int64{4, 6}, 900, 3, 40},
		{nil, 900, 0, 0},
		{[]int64{-1}, 0, -1, 0},
		{[]int64{math.MaxInt32}, 0, 1, math.MaxInt32},
		{nil, 0, math.MaxInt64, math.MaxInt32},
		{[]int64{math.MaxInt64}, 0, 0, math.MaxInt32},
	} {
		st := &adminv1.StatsResponse{Entities: c.hints, DirtyEntities: c.dirty}
		for i, e := range c.held {
			st.Slots = append(st.Slots, &adminv1.SlotStats{Slot: uint32(i), Entities: e})
			st.Entities += e
		}
		if got := resources.DeletionCost(st); got != c.want {
			t.Errorf("DeletionCost(held %v, hints %d, dirty %d) = %d, want %d", c.held, c.hints, c.dirty, got, c.want)
		}
	}
}

func TestCostChanged(t *testing.T) {
	for _, c := range []struct {
		current string
		cost    int32
		want    bool
	}{
		{"", 0, true},
		{"junk", 5, true},
		{"0", 0, false},
		{"0", 1, true},
		{"100", 109, false},
		{"100", 111, true},
		{"1000", 905, false},
		{"1000", 800, true},
	} {
		if got := resources.CostChanged(c.current, c.cost); got != c.want {
			t.Errorf("CostChanged(%q, %d) = %v, want %v", c.current, c.cost, got, c.want)
		}
	}
}

// A joining pod is prepared once, even when the next reconcile still sees
// it without the kstate.dev/prepared annotation (the lister lags the
// patch); a replica that restarts relies on the annotation.
func TestPreparedOnceBeforeTheAnnotationIsSeen(t *testing.T) {
	p1, p2, joiner := pod("pod-1", "10.0.0.1", ready), pod("pod-2", "10.0.0.2", ready), pod("pod-3", "10.0.0.3")
	admin := &fakeAdmin{}
	ctx := logging.WithLogger(context.Background(), logtesting.TestLogger(t))
	r, ctx, _ := newReconciler(ctx, []runtime.Object{revision(nil), p1, p2, joiner, endpoints(p1, p2)}, admin, clocktesting.NewFakeClock(t0))
	for range 3 {
		if err := r.Reconcile(ctx, revKey); err != nil {
			t.Fatalf("Reconcile: %v", err)
		}
	}
	if n := len(admin.prepares); n != 1 {
		t.Errorf("%d Prepare calls for one joining pod over three reconciles, want 1", n)
	}
	r.forget(revID)
	if len(r.prepared) != 0 {
		t.Errorf("prepared = %v after forget, want empty", r.prepared)
	}
}
