package autoscaler

import (
	"context"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
	kubeclient "knative.dev/pkg/client/injection/kube/client"
	endpointsinformer "knative.dev/pkg/client/injection/kube/informers/core/v1/endpoints"
	podinformer "knative.dev/pkg/client/injection/kube/informers/core/v1/pod/filtered"
	"knative.dev/pkg/configmap"
	"knative.dev/pkg/controller"
	"knative.dev/pkg/logging"
	"knative.dev/pkg/reconciler"
	"knative.dev/serving/pkg/apis/serving"
	v1 "knative.dev/serving/pkg/apis/serving/v1"
	revisioninformer "knative.dev/serving/pkg/client/injection/informers/serving/v1/revision"
	"knative.dev/serving/pkg/networking"

	"github.com/kstate-dev/kstate/pkg/apis/kstate"
)

// ControllerName names the controller in logs and leader election.
const ControllerName = "kstate-autoscaler"

// PodSelector is the label selector of the pods the controller caches:
// the pods of Knative revisions. cmd/controller passes it to
// filteredinformerfactory.WithSelectors.
const PodSelector = serving.RevisionLabelKey

// NewController returns the autoscaler plugin's controller. It talks to
// agents over gRPC; see NewControllerWith for the parts tests replace.
func NewController(ctx context.Context, cmw configmap.Watcher) *controller.Impl {
	return NewControllerWith(ctx, cmw, NewAdminClient(), clock.RealClock{})
}

// NewControllerWith is NewController with the admin client and clock given.
func NewControllerWith(ctx context.Context, _ configmap.Watcher, admin AdminClient, clk clock.PassiveClock) *controller.Impl {
	logger := logging.FromContext(ctx)
	revisionInformer := revisioninformer.Get(ctx)
	podInformer := podinformer.Get(ctx, PodSelector)
	endpointsInformer := endpointsinformer.Get(ctx)

	r := &Reconciler{
		kubeClient:      kubeclient.Get(ctx),
		revisionLister:  revisionInformer.Lister(),
		podLister:       podInformer.Lister(),
		endpointsLister: endpointsInformer.Lister(),
		admin:           admin,
		clock:           clk,
		costRefresh:     DefaultCostRefresh,
		prepareTimeout:  DefaultPrepareTimeout,
		statsTimeout:    DefaultStatsTimeout,
		prepareWindow:   DefaultPrepareWindow,
	}
	impl := controller.NewContext(ctx, r, controller.ControllerOptions{
		WorkQueueName: ControllerName,
		Logger:        logger,
	})
	r.enqueueAfter = func(key types.NamespacedName, after time.Duration) {
		impl.EnqueueKeyAfter(key, after)
	}
	r.LeaderAwareFuncs = reconciler.LeaderAwareFuncs{
		PromoteFunc: func(bkt reconciler.Bucket, enq func(reconciler.Bucket, types.NamespacedName)) error {
			revs, err := r.revisionLister.List(labels.Everything())
			if err != nil {
				return err
			}
			for _, rev := range revs {
				if kstate.Enabled(rev.Annotations) {
					enq(bkt, types.NamespacedName{Namespace: rev.Namespace, Name: rev.Name})
				}
			}
			return nil
		},
	}

	revisionInformer.Informer().AddEventHandler(cache.FilteringResourceEventHandler{
		FilterFunc: isKstateRevision,
		Handler:    controller.HandleAll(impl.Enqueue),
	})
	// A pod or the private Endpoints changed: enqueue the revision named by
	// their revision label. Non-kstate revisions are dropped in Reconcile
	// after one lister read.
	byRevision := controller.HandleAll(impl.EnqueueLabelOfNamespaceScopedResource("", serving.RevisionLabelKey))
	podInformer.Informer().AddEventHandler(byRevision)
	endpointsInformer.Informer().AddEventHandler(cache.FilteringResourceEventHandler{
		FilterFunc: reconciler.ChainFilterFuncs(
			reconciler.LabelExistsFilterFunc(serving.RevisionLabelKey),
			reconciler.LabelFilterFunc(networking.ServiceTypeKey, string(networking.ServiceTypePrivate), false),
		),
		Handler: byRevision,
	})
	return impl
}

func isKstateRevision(obj interface{}) bool {
	rev, ok := obj.(*v1.Revision)
	return ok && kstate.Enabled(rev.Annotations)
}
