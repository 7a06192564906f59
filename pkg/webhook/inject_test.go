package webhook

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"knative.dev/pkg/apis"
	"knative.dev/pkg/ptr"
	apisconfig "knative.dev/serving/pkg/apis/config"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/kstate-dev/kstate/pkg/apis/config"
	"github.com/kstate-dev/kstate/pkg/apis/kstate"
	"github.com/kstate-dev/kstate/pkg/webhook/resources"
)

func TestInject(t *testing.T) {
	d := testDefaults(t)
	tests := []struct {
		name string
		d    *config.Defaults
		in   *servingv1.Service
		old  *servingv1.Service
		want *servingv1.Service
	}{{
		name: "not a kstate Service",
		in:   service(withAnnotations("autoscaling.knative.dev/min-scale", "1")),
		want: service(withAnnotations("autoscaling.knative.dev/min-scale", "1")),
	}, {
		name: "enabled false",
		in:   service(withAnnotations(kstate.EnabledAnnotationKey, "false")),
		want: service(withAnnotations(kstate.EnabledAnnotationKey, "false")),
	}, {
		name: "one container without a port",
		in:   service(enabled()),
		want: service(enabled(), injected(t, d, 0, 9081)),
	}, {
		name: "the function declared the agent's port 8080",
		in:   service(enabled(), withContainer(0, withPort(8080, "http1"))),
		want: service(enabled(), injected(t, d, 0, 9081)),
	}, {
		name: "the function declared its own port",
		in:   service(enabled(), withContainer(0, withPort(50051, "h2c"))),
		want: service(enabled(), injected(t, d, 0, 50051)),
	}, {
		name: "a port Knative reserves is not taken",
		in:   service(enabled(), withContainer(0, withPort(9091, ""))),
		want: service(enabled(), injected(t, d, 0, 9081)),
	}, {
		name: "the user chose the port with KSTATE_FUNCTION_ADDR",
		in:   service(enabled(), withContainer(0, withPort(8080, "")), withContainer(0, withEnv("KSTATE_FUNCTION_ADDR", "127.0.0.1:7000"))),
		want: service(enabled(), withContainer(0, withEnv("KSTATE_FUNCTION_ADDR", "")), injected(t, d, 0, 7000)),
	}, {
		name: "every annotation set, explicit timeout and burst capacity kept",
		in: service(enabled(
			kstate.KeyAnnotationKey, "header:X-Cart",
			kstate.SlotsAnnotationKey, "128",
			kstate.SpaceAnnotationKey, "shop/carts",
			kstate.DurabilityAnnotationKey, "sync",
			kstate.PreloadAnnotationKey, "entities=5",
			"autoscaling.knative.dev/target-burst-capacity", "-1",
		), withTimeout(90)),
		want: service(enabled(
			kstate.KeyAnnotationKey, "header:X-Cart",
			kstate.SlotsAnnotationKey, "128",
			kstate.SpaceAnnotationKey, "shop/carts",
			kstate.DurabilityAnnotationKey, "sync",
			kstate.PreloadAnnotationKey, "entities=5",
			"autoscaling.knative.dev/target-burst-capacity", "-1",
		), withTimeout(90), injected(t, d, 0, 9081)),
	}, {
		name: "a wrong burst capacity is left for validation to reject",
		in:   service(enabled("autoscaling.knative.dev/target-burst-capacity", "200")),
		want: service(enabled("autoscaling.knative.dev/target-burst-capacity", "200"), injected(t, d, 0, 9081)),
	}, {
		name: "blank slots is pinned to the default",
		in:   service(enabled(kstate.SlotsAnnotationKey, " ")),
		want: service(enabled(kstate.SlotsAnnotationKey, "4096"), injected(t, d, 0, 9081)),
	}, {
		name: "the function is the container with the port; sidecars stay",
		in:   service(withSidecar("log-shipper"), enabled(), withContainer(0, named("fn")), withContainer(0, withPort(8080, ""))),
		want: service(withSidecar("log-shipper"), enabled(), withContainer(0, named("fn")), injected(t, d, 0, 9081)),
	}, {
		name: "which container is the function cannot be told",
		in:   service(withSidecar("a"), enabled()),
		want: service(withSidecar("a"), enabled()),
	}, {
		name: "invalid annotations: left for validation",
		in:   service(enabled(kstate.SlotsAnnotationKey, "0")),
		want: service(enabled(kstate.SlotsAnnotationKey, "0")),
	}, {
		name: "no agent image in config-kstate: left for validation",
		d:    &config.Defaults{},
		in:   service(enabled()),
		want: service(enabled()),
	}, {
		name: "config-kstate defaults and agent resources",
		d:    testDefaults(t, config.AgentMemoryRequestKey, "64Mi", config.RevisionTimeoutSecondsKey, "120", config.StoreKey, "redis"),
		in:   service(enabled()),
		want: service(enabled(), injected(t, testDefaults(t, config.AgentMemoryRequestKey, "64Mi", config.RevisionTimeoutSecondsKey, "120", config.StoreKey, "redis"), 0, 9081)),
	}, {
		name: "update: slots and space left out are carried over from the old Service",
		old:  service(enabled(kstate.SlotsAnnotationKey, "64", kstate.SpaceAnnotationKey, "shop/carts"), injected(t, d, 0, 9081)),
		in:   service(enabled()),
		want: service(enabled(kstate.SlotsAnnotationKey, "64", kstate.SpaceAnnotationKey, "shop/carts"), injected(t, d, 0, 9081)),
	}, {
		name: "update: a changed slot count is not overwritten (validation rejects it)",
		old:  service(enabled(kstate.SlotsAnnotationKey, "64"), injected(t, d, 0, 9081)),
		in:   service(enabled(kstate.SlotsAnnotationKey, "128")),
		want: service(enabled(kstate.SlotsAnnotationKey, "128"), injected(t, d, 0, 9081)),
	}, {
		name: "re-injection brings the agent up to date and keeps what others added",
		in: service(enabled(), injected(t, d, 0, 9081), withAnnotations(kstate.FlushIntervalAnnotationKey, "1s"),
			withContainer(1, func(c *corev1.Container) {
				c.Image = "example.com/kstate-agent:0"
				c.SecurityContext = &corev1.SecurityContext{RunAsNonRoot: ptr.Bool(true)}
				c.Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")}
				c.Env = c.Env[:3]
			})),
		want: service(enabled(kstate.FlushIntervalAnnotationKey, "1s"), injected(t, d, 0, 9081),
			withContainer(1, func(c *corev1.Container) {
				c.SecurityContext = &corev1.SecurityContext{RunAsNonRoot: ptr.Bool(true)}
				c.Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")}
			})),
	}, {
		name: "turned off: the agent goes and the function gets its port back",
		in:   service(enabled(kstate.SlotsAnnotationKey, "64"), injected(t, d, 0, 50051), withAnnotations(kstate.EnabledAnnotationKey, "false")),
		want: service(enabled(kstate.SlotsAnnotationKey, "64"), injected(t, d, 0, 50051), withAnnotations(kstate.EnabledAnnotationKey, "false"),
			func(s *servingv1.Service) {
				s.Spec.Template.Spec.Containers = s.Spec.Template.Spec.Containers[:1]
				s.Spec.Template.Spec.Containers[0].Env = nil
				s.Spec.Template.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 50051}}
			}),
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dd := tc.d
			if dd == nil {
				dd = d
			}
			got := tc.in.DeepCopy()
			Inject(got, tc.old, dd)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Fatal("Inject (-want,+got):\n", diff)
			}
			again := got.DeepCopy()
			Inject(again, tc.old, dd)
			if diff := cmp.Diff(got, again); diff != "" {
				t.Error("Inject is not idempotent (-once,+twice):\n", diff)
			}
		})
	}
}

// TestInjectKnativeAgrees runs kstate's and Knative's defaulting in the
// orders the API server may (each webhook is reinvoked if a later one
// changed the object) and checks that they reach the same object, that it
// is a fixed point of both, and that Knative's own validation accepts it
// when the kubernetes.podspec-fieldref feature is enabled.
func TestInjectKnativeAgrees(t *testing.T) {
	d := testDefaults(t)
	inputs := map[string]*servingv1.Service{
		"plain":          service(enabled()),
		"with port":      service(enabled(), withContainer(0, withPort(8080, "http1"))),
		"named, sidecar": service(enabled(), withContainer(0, named("fn")), withContainer(0, withPort(9000, "h2c")), withSidecar("proxy")),
		"explicit":       service(enabled(kstate.SlotsAnnotationKey, "16", kstate.KeyAnnotationKey, "ce:subject"), withTimeout(120)),
	}
	kctx := knativeContext(apisconfig.Enabled)
	kstateDefault := func(s *servingv1.Service) { Inject(s, nil, d) }
	knativeDefault := func(s *servingv1.Service) { s.SetDefaults(kctx) }
	for name, in := range inputs {
		t.Run(name, func(t *testing.T) {
			kstateFirst := in.DeepCopy()
			kstateDefault(kstateFirst)
			knativeDefault(kstateFirst)
			kstateDefault(kstateFirst) // reinvoked: Knative changed the object

			knativeFirst := in.DeepCopy()
			knativeDefault(knativeFirst)
			kstateDefault(knativeFirst)
			knativeDefault(knativeFirst) // reinvoked

			// Knative names unnamed containers by their count, so the two
			// orders may name the function differently; nothing else differs.
			ignoreNames := cmp.FilterPath(func(p cmp.Path) bool {
				return p.Last().String() == ".Name" && p.Index(-3).String() == ".Containers"
			}, cmp.Ignore())
			if diff := cmp.Diff(kstateFirst, knativeFirst, ignoreNames); diff != "" {
				t.Error("the order of the webhooks matters (-kstate first,+Knative first):\n", diff)
			}
			for order, s := range map[string]*servingv1.Service{"kstate first": kstateFirst, "Knative first": knativeFirst} {
				fixed := s.DeepCopy()
				kstateDefault(fixed)
				knativeDefault(fixed)
				if diff := cmp.Diff(s, fixed); diff != "" {
					t.Errorf("%s: not a fixed point of both webhooks (-before,+after):\n%s", order, diff)
				}
				if err := s.Validate(kctx).Filter(apis.ErrorLevel); err != nil {
					t.Errorf("%s: Knative rejects the injected Service: %v", order, err)
				}
				if err := Validate(withConfig(apis.WithinCreate(context.Background()), d), s); err != nil {
					t.Errorf("%s: kstate rejects its own injection: %v", order, err)
				}
			}
		})
	}
}

// TestInjectNeedsFieldRef documents why config/knative enables Knative's
// kubernetes.podspec-fieldref feature: with Knative's default features the
// downward API env of the agent is rejected.
func TestInjectNeedsFieldRef(t *testing.T) {
	ctx := knativeContext(apisconfig.Disabled)
	s := service(enabled())
	Inject(s, nil, testDefaults(t))
	s.SetDefaults(ctx)
	err := s.Validate(ctx).Filter(apis.ErrorLevel)
	want := "must not set the field(s): spec.template.spec.containers[1].env[0].valueFrom.fieldRef, spec.template.spec.containers[1].env[1].valueFrom.fieldRef"
	if err == nil || err.Error() != want {
		t.Errorf("Knative's validation without podspec-fieldref = %v\nwant %s", err, want)
	}
}

func TestFunctionIndex(t *testing.T) {
	c := func(name string, opts ...func(*corev1.Container)) corev1.Container {
		ct := corev1.Container{Name: name}
		for _, o := range opts {
			o(&ct)
		}
		return ct
	}
	tests := []struct {
		name string
		cs   []corev1.Container
		want int
	}{
		{name: "one", cs: []corev1.Container{c("a")}, want: 0},
		{name: "one besides the agent", cs: []corev1.Container{c(resources.AgentContainerName), c("a")}, want: 1},
		{name: "the one with a port", cs: []corev1.Container{c("a"), c("b", withPort(80, ""))}, want: 1},
		{name: "the marked one", cs: []corev1.Container{c("a", withPort(80, "")), c("b", withEnv("KSTATE_FUNCTION_ADDR", "127.0.0.1:1"))}, want: 1},
		{name: "two marked", cs: []corev1.Container{c("a", withEnv("KSTATE_FUNCTION_ADDR", "x")), c("b", withEnv("KSTATE_FUNCTION_ADDR", "y"))}, want: -1},
		{name: "no port among several", cs: []corev1.Container{c("a"), c("b")}, want: -1},
		{name: "two ports", cs: []corev1.Container{c("a", withPort(1, "")), c("b", withPort(2, ""))}, want: -1},
		{name: "none", cs: nil, want: -1},
		{name: "only the agent", cs: []corev1.Container{c(resources.AgentContainerName)}, want: -1},
	}
	for _, tc := range tests {
		if got := functionIndex(tc.cs); got != tc.want {
			t.Errorf("%s: functionIndex = %d, want %d", tc.name, got, tc.want)
		}
	}
}
