package autoscaler

import (
	"context"
	"testing"

	filteredinformerfactory "knative.dev/pkg/client/injection/kube/informers/factory/filtered"
	"knative.dev/pkg/configmap"
	rtesting "knative.dev/pkg/reconciler/testing"

	_ "knative.dev/pkg/client/injection/kube/client/fake"
	_ "knative.dev/pkg/client/injection/kube/informers/core/v1/endpoints/fake"
	_ "knative.dev/pkg/client/injection/kube/informers/core/v1/pod/filtered/fake"
	_ "knative.dev/pkg/client/injection/kube/informers/factory/filtered/fake"
	_ "knative.dev/serving/pkg/client/injection/informers/serving/v1/revision/fake"
)

func TestNewController(t *testing.T) {
	ctx, _ := rtesting.SetupFakeContext(t, func(ctx context.Context) context.Context {
		return filteredinformerfactory.WithSelectors(ctx, PodSelector)
	})
	impl := NewController(ctx, configmap.NewStaticWatcher())
	if impl == nil {
		t.Fatal("NewController returned nil")
	}
	r, ok := impl.Reconciler.(*Reconciler)
	if !ok {
		t.Fatalf("Reconciler is %T", impl.Reconciler)
	}
	if r.enqueueAfter == nil || r.admin == nil || r.clock == nil || r.PromoteFunc == nil {
		t.Error("the reconciler is not fully wired")
	}
}
