package autoscaler

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrs "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
	pkgnet "knative.dev/networking/pkg/apis/networking"
	"knative.dev/pkg/controller"
	"knative.dev/pkg/logging"
	"knative.dev/pkg/reconciler"
	"knative.dev/serving/pkg/apis/serving"
	servinglisters "knative.dev/serving/pkg/client/listers/serving/v1"
	"knative.dev/serving/pkg/reconciler/serverlessservice/resources/names"

	"github.com/kstate-dev/kstate/pkg/apis/config"
	"github.com/kstate-dev/kstate/pkg/apis/kstate"
	"github.com/kstate-dev/kstate/pkg/placement"
	"github.com/kstate-dev/kstate/pkg/reconciler/autoscaler/resources"
	adminv1 "github.com/kstate-dev/kstate/proto/admin/v1"
)

const (
	// DefaultCostRefresh is how often, at most, a Ready pod's Stats are
	// read to refresh its deletion cost.
	DefaultCostRefresh = 30 * time.Second
	// DefaultPrepareTimeout bounds one Prepare call. The agent turns Ready
	// at its gate (KSTATE_PRELOAD_GATE) anyway; a longer preload still
	// warms the cache.
	DefaultPrepareTimeout = 30 * time.Second
	// DefaultStatsTimeout bounds one Stats call.
	DefaultStatsTimeout = 2 * time.Second
	// DefaultPrepareWindow: a pod that started longer ago than this is no
	// longer asked to preload (its gate passed long ago; it loads lazily),
	// so a pod whose agent never answers is not retried forever.
	DefaultPrepareWindow = 5 * time.Minute
)

// Reconciler is the autoscaler plugin's reconciler. Its key is a
// revision's namespace/name.
type Reconciler struct {
	reconciler.LeaderAwareFuncs

	kubeClient      kubernetes.Interface
	revisionLister  servinglisters.RevisionLister
	podLister       corev1listers.PodLister
	endpointsLister corev1listers.EndpointsLister
	admin           AdminClient
	clock           clock.PassiveClock
	// enqueueAfter schedules the next deletion-cost refresh of a revision.
	enqueueAfter func(key types.NamespacedName, after time.Duration)

	costRefresh    time.Duration
	prepareTimeout time.Duration
	statsTimeout   time.Duration
	prepareWindow  time.Duration

	mu sync.Mutex
	// statsAt: when each Ready pod's Stats were last read (or tried), by
	// revision and pod UID. In memory: losing it on a restart costs one
	// early refresh per pod, which is what the bound is about anyway.
	statsAt map[types.NamespacedName]map[types.UID]time.Time
	// prepared: the pods of each revision this replica prepared. The
	// kstate.dev/prepared annotation says the same and survives restarts,
	// but the pod update that carries it reaches the lister after the
	// reconcile that the pod's own status changes queue next, which
	// prepared the pod a second time (a second scan of the hot sets and a
	// second preload, while the pod joins).
	prepared map[types.NamespacedName]map[types.UID]bool
}

var _ controller.Reconciler = (*Reconciler)(nil)
var _ reconciler.LeaderAware = (*Reconciler)(nil)

// Reconcile prepares the revision's joining pods and refreshes the
// deletion cost of its Ready pods.
func (r *Reconciler) Reconcile(ctx context.Context, key string) error {
	namespace, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return controller.NewPermanentError(fmt.Errorf("invalid key %q: %w", key, err))
	}
	id := types.NamespacedName{Namespace: namespace, Name: name}
	if !r.IsLeaderFor(id) {
		return nil
	}
	logger := logging.FromContext(ctx)

	rev, err := r.revisionLister.Revisions(namespace).Get(name)
	if apierrs.IsNotFound(err) {
		r.forget(id)
		return nil
	} else if err != nil {
		return fmt.Errorf("getting revision: %w", err)
	}
	if rev.DeletionTimestamp != nil || !kstate.Enabled(rev.Annotations) {
		r.forget(id)
		return nil
	}
	routing, err := kstate.ParseRouting(namespace, "", rev.Annotations)
	if err != nil {
		// The webhook validates the annotations; a revision made before
		// it was installed may still have a bad one.
		return controller.NewPermanentError(fmt.Errorf("revision %s: %w", key, err))
	}
	budget := preloadBudget(rev.Annotations, logger)

	pods, err := r.podLister.Pods(namespace).List(labels.SelectorFromSet(labels.Set{serving.RevisionLabelKey: name}))
	if err != nil {
		return fmt.Errorf("listing pods: %w", err)
	}
	// Listers return cache order; sort for deterministic API writes.
	pods = slices.Clone(pods)
	slices.SortFunc(pods, func(a, b *corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	eps, err := r.endpointsLister.Endpoints(namespace).Get(names.PrivateService(name))
	if err != nil && !apierrs.IsNotFound(err) {
		return fmt.Errorf("getting endpoints: %w", err)
	}
	members := resources.ReadyMembers(eps, pkgnet.ServicePortName(rev.GetProtocol()))
	ready := make(map[string]bool, len(members))
	for _, m := range members {
		ready[m] = true
	}

	errPrepare := r.prepare(ctx, id, pods, members, ready, routing.Slots, budget)
	next, errCost := r.refreshCosts(ctx, id, pods, ready)
	if next > 0 {
		r.enqueueAfter(id, next)
	}
	return errors.Join(errPrepare, errCost)
}

// preloadBudget is the kstate.dev/preload annotation as Prepare's budget;
// parts it leaves out are 0: the agent's own budget, which the webhook set
// from the annotation and config-kstate's default when the revision was
// made (config-kstate changes do not touch running revisions).
func preloadBudget(annotations map[string]string, logger *zap.SugaredLogger) config.Preload {
	v := annotations[kstate.PreloadAnnotationKey]
	if v == "" {
		return config.Preload{}
	}
	p, err := config.ParsePreload(v, config.Preload{})
	if err != nil {
		logger.Warnw("ignoring the preload annotation; the agent's budget applies", zap.Error(err))
		return config.Preload{}
	}
	return p
}

// prepare asks every joining pod to preload the slots it will own once it
// is Ready: the placement over the ready members and that pod. It slightly
// over-approximates when several pods join at once (each is placed as if
// it joined alone), so whichever turns Ready first has its slots warm.
// With no ready member (scale from zero) the pod owns every slot and
// prepares all of them (an empty slot list). Calls run concurrently; each
// success is recorded on the pod, each failure is returned, so the key is
// retried with the workqueue's backoff. The agent's gate makes it Ready
// even if every call fails.
func (r *Reconciler) prepare(ctx context.Context, id types.NamespacedName, pods []*corev1.Pod, members []string, ready map[string]bool, slots int, budget config.Preload) error {
	now := r.clock.Now()
	done := r.preparedPods(id, pods)
	var joining []*corev1.Pod
	for _, p := range pods {
		if !resources.IsJoining(p, ready) || done[p.UID] {
			continue
		}
		if st := p.Status.StartTime; st != nil && now.Sub(st.Time) > r.prepareWindow {
			continue
		}
		joining = append(joining, p)
	}
	if len(joining) == 0 {
		return nil
	}
	errs := make([]error, len(joining))
	resps := make([]*adminv1.PrepareResponse, len(joining))
	asked := make([]int, len(joining))
	var wg sync.WaitGroup
	for i, pod := range joining {
		var want []uint32 // nil: every slot
		if len(members) > 0 {
			table, err := placement.New(append(slices.Clone(members), pod.Name), slots)
			if err != nil {
				errs[i] = fmt.Errorf("placement with pod %s: %w", pod.Name, err)
				continue
			}
			want = table.SlotsOf(pod.Name)
		}
		asked[i] = len(want)
		wg.Add(1)
		go func() {
			defer wg.Done()
			resps[i], errs[i] = r.prepareOne(ctx, pod, want, budget)
		}()
	}
	wg.Wait()
	// Record successes in pod order (deterministic writes).
	for i, pod := range joining {
		if errs[i] == nil {
			errs[i] = r.annotate(ctx, pod, resources.PreparedAnnotationKey, resources.PreparedValue(asked[i], resps[i]))
		}
		if errs[i] == nil {
			done[pod.UID] = true
		}
	}
	return errors.Join(errs...)
}

func (r *Reconciler) prepareOne(ctx context.Context, pod *corev1.Pod, slots []uint32, budget config.Preload) (*adminv1.PrepareResponse, error) {
	logger := logging.FromContext(ctx).With(zap.String("pod", pod.Name))
	cctx, cancel := context.WithTimeout(ctx, r.prepareTimeout)
	defer cancel()
	start := r.clock.Now()
	resp, err := r.admin.Prepare(cctx, resources.AdminAddr(pod), &adminv1.PrepareRequest{
		Slots: slots, MaxEntities: budget.Entities, MaxBytes: budget.Bytes,
	})
	if err != nil {
		logger.Warnw("preload failed; retrying (the pod turns Ready at its gate regardless)", zap.Error(err))
		return nil, fmt.Errorf("prepare of pod %s: %w", pod.Name, err)
	}
	logger.Infow("pod preloaded", zap.Int("slots", len(slots)), zap.Int64("entities", resp.GetEntitiesLoaded()),
		zap.Int64("bytes", resp.GetBytesLoaded()), zap.Duration("took", r.clock.Since(start)))
	return resp, nil
}

func (r *Reconciler) annotate(ctx context.Context, pod *corev1.Pod, key, value string) error {
	_, err := r.kubeClient.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType,
		resources.AnnotationPatch(key, value), metav1.PatchOptions{})
	if apierrs.IsNotFound(err) {
		return nil // gone meanwhile
	}
	if err != nil {
		return fmt.Errorf("annotating pod %s with %s: %w", pod.Name, key, err)
	}
	return nil
}

type costResult struct {
	pod  *corev1.Pod
	cost int32
	err  error
}

// refreshCosts reads the Stats of each Ready pod whose last read is at
// least costRefresh old and patches its deletion cost when it changed
// meaningfully. It returns when the next read is due (0: no Ready pod).
func (r *Reconciler) refreshCosts(ctx context.Context, id types.NamespacedName, pods []*corev1.Pod, ready map[string]bool) (time.Duration, error) {
	now := r.clock.Now()
	r.mu.Lock()
	last := r.statsAt[id]
	seen := make(map[types.UID]time.Time, len(pods))
	var due []*corev1.Pod
	next := time.Duration(0)
	for _, p := range pods {
		if p.DeletionTimestamp != nil || p.Status.PodIP == "" || !ready[p.Name] {
			continue
		}
		at, ok := last[p.UID]
		if ok && now.Sub(at) < r.costRefresh {
			seen[p.UID] = at
			if wait := r.costRefresh - now.Sub(at); next == 0 || wait < next {
				next = wait
			}
			continue
		}
		seen[p.UID] = now
		due = append(due, p)
		if next == 0 || r.costRefresh < next {
			next = r.costRefresh
		}
	}
	if r.statsAt == nil {
		r.statsAt = map[types.NamespacedName]map[types.UID]time.Time{}
	}
	if len(seen) == 0 {
		delete(r.statsAt, id)
	} else {
		r.statsAt[id] = seen // pods gone since are dropped
	}
	r.mu.Unlock()

	results := make([]costResult, len(due))
	var wg sync.WaitGroup
	for i, pod := range due {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, r.statsTimeout)
			defer cancel()
			st, err := r.admin.Stats(cctx, resources.AdminAddr(pod))
			results[i] = costResult{pod: pod, err: err}
			if err == nil {
				results[i].cost = resources.DeletionCost(st)
			}
		}()
	}
	wg.Wait()

	var errs []error
	for _, res := range results {
		if res.err != nil {
			errs = append(errs, fmt.Errorf("stats of pod %s: %w", res.pod.Name, res.err))
			continue
		}
		if !resources.CostChanged(res.pod.Annotations[resources.DeletionCostAnnotationKey], res.cost) {
			continue
		}
		if err := r.annotate(ctx, res.pod, resources.DeletionCostAnnotationKey, fmt.Sprint(res.cost)); err != nil {
			errs = append(errs, err)
		}
	}
	return next, errors.Join(errs...)
}

// preparedPods is the set of the revision's pods this replica prepared,
// pruned to the pods that still exist. Only the reconcile of that revision
// uses the set, and the workqueue never runs two of one key at once.
func (r *Reconciler) preparedPods(id types.NamespacedName, pods []*corev1.Pod) map[types.UID]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.prepared == nil {
		r.prepared = map[types.NamespacedName]map[types.UID]bool{}
	}
	done := r.prepared[id]
	if done == nil {
		done = map[types.UID]bool{}
		r.prepared[id] = done
	}
	live := make(map[types.UID]bool, len(pods))
	for _, p := range pods {
		live[p.UID] = true
	}
	for uid := range done {
		if !live[uid] {
			delete(done, uid)
		}
	}
	return done
}

// forget drops what is remembered of a revision.
func (r *Reconciler) forget(id types.NamespacedName) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.statsAt, id)
	delete(r.prepared, id)
}
