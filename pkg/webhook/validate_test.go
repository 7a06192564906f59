package webhook

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"knative.dev/pkg/apis"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/kstate-dev/kstate/pkg/apis/config"
	"github.com/kstate-dev/kstate/pkg/apis/kstate"
)

func TestValidate(t *testing.T) {
	d := testDefaults(t)
	// ok is a kstate Service as the mutating webhook leaves it.
	// ok is a kstate Service as the mutating webhook leaves it, then opts.
	ok := func(opts ...svcOpt) *servingv1.Service {
		s := service(enabled())
		Inject(s, nil, d)
		for _, o := range opts {
			o(s)
		}
		return s
	}
	tests := []struct {
		name string
		d    *config.Defaults
		svc  *servingv1.Service
		want string // the whole error, "" for none
	}{{
		name: "not a kstate Service",
		svc:  service(),
	}, {
		name: "turned off",
		svc:  service(withAnnotations(kstate.EnabledAnnotationKey, "False", kstate.SlotsAnnotationKey, "not checked when off")),
	}, {
		name: "an injected kstate Service",
		svc:  ok(),
	}, {
		name: "every annotation valid",
		svc: ok(withAnnotations(kstate.KeyAnnotationKey, "path:/carts/{key}", kstate.DurabilityAnnotationKey, "sync",
			kstate.FlushIntervalAnnotationKey, "5ms", kstate.MaxDirtyBytesAnnotationKey, "1Gi", kstate.PreloadAnnotationKey, "entities=10",
			kstate.StoreAnnotationKey, "creds:url", kstate.DedupWindowAnnotationKey, "1", kstate.SpaceAnnotationKey, "shop/x", kstate.SlotsAnnotationKey, "1")),
	}, {
		name: "enabled is neither true nor false",
		svc:  service(withAnnotations(kstate.EnabledAnnotationKey, "yes")),
		want: `"yes" is not a switch: want "true" or "false": spec.template.metadata.annotations.kstate.dev/enabled`,
	}, {
		name: "kstate annotations on the Service's own metadata",
		svc: service(func(s *servingv1.Service) {
			s.Annotations = map[string]string{kstate.EnabledAnnotationKey: "true", kstate.SlotsAnnotationKey: "8", "other": "x"}
		}),
		want: "kstate annotations belong on the revision template: metadata.annotations.kstate.dev/enabled, metadata.annotations.kstate.dev/slots\n" +
			"move it to spec.template.metadata.annotations, which every revision of the Service gets",
	}, {
		name: "bad slots",
		svc:  ok(withAnnotations(kstate.SlotsAnnotationKey, "65537")),
		want: `"65537" is not a slot count: want an integer from 1 to 65536 (default 4096): spec.template.metadata.annotations.kstate.dev/slots`,
	}, {
		name: "another namespace's space",
		svc:  ok(withAnnotations(kstate.SpaceAnnotationKey, "bank/accounts")),
		want: `"bank/accounts" is an entity space of namespace "bank": a Service may only use a space of its own namespace, such as shop/accounts: spec.template.metadata.annotations.kstate.dev/space`,
	}, {
		name: "several bad values at once, and a typo",
		svc: ok(withAnnotations(kstate.KeyAnnotationKey, "body:id", kstate.DurabilityAnnotationKey, "strong",
			kstate.StoreAnnotationKey, "redis/url", "kstate.dev/flush", "1s")),
		want: `"redis/url" is not a store Secret: a Secret of another namespace cannot be used; want SECRET or SECRET:KEY naming a Secret in the Service's namespace: spec.template.metadata.annotations.kstate.dev/store
"strong" is not a durability: want "async" or "sync": spec.template.metadata.annotations.kstate.dev/durability
key spec "body:id": unknown source "body"; expected one of header:NAME, ce:ATTRIBUTE, path:/prefix/{key}, query:NAME: spec.template.metadata.annotations.kstate.dev/key
unknown kstate annotation: spec.template.metadata.annotations.kstate.dev/flush
kstate reads kstate.dev/enabled, kstate.dev/key, kstate.dev/space, kstate.dev/slots, kstate.dev/durability, kstate.dev/flush-interval, kstate.dev/max-dirty-bytes, kstate.dev/preload, kstate.dev/store, kstate.dev/dedup-window`,
	}, {
		name: "burst capacity that lets the activator out of the path",
		svc:  ok(withAnnotations("autoscaling.knative.dev/target-burst-capacity", "200")),
		want: `invalid value "200" for a kstate Service: want "-1": spec.template.metadata.annotations.autoscaling.knative.dev/target-burst-capacity
kstate routes requests by key in Knative's activator, so the activator must stay in the request path`,
	}, {
		name: "burst capacity under its old name",
		svc: ok(withoutAnnotation("autoscaling.knative.dev/target-burst-capacity"),
			withAnnotations("autoscaling.knative.dev/targetBurstCapacity", "0")),
		want: `invalid value "0" for a kstate Service: want "-1": spec.template.metadata.annotations.autoscaling.knative.dev/targetBurstCapacity
kstate routes requests by key in Knative's activator, so the activator must stay in the request path`,
	}, {
		name: "timeout too short for the final flush",
		svc:  ok(withTimeout(30)),
		want: "timeoutSeconds 30 is too short for a kstate Service: want at least 60: spec.template.spec.timeoutSeconds\n" +
			"Knative makes it the pods' grace period, which must hold the queue-proxy drain (30s), the agent's final flush (config-kstate drain-timeout 25s) and a 5s margin",
	}, {
		name: "the mutating webhook did not run",
		svc:  service(enabled(kstate.SlotsAnnotationKey, "16"), withAnnotations("autoscaling.knative.dev/target-burst-capacity", "-1")),
		want: "the kstate agent is not injected: spec.template.spec.containers\n" +
			"the mutating webhook defaulting.webhook.kstate.dev should have added the kstate-agent container; is it installed and reachable?",
	}, {
		name: "which container is the function cannot be told",
		svc:  service(enabled(), withSidecar("b"), withAnnotations("autoscaling.knative.dev/target-burst-capacity", "-1")),
		want: "cannot tell which container is the kstate function: spec.template.spec.containers\n" +
			"use one container besides sidecars that have no port, give the function's container the port, or set KSTATE_FUNCTION_ADDR=127.0.0.1:PORT on exactly one container",
	}, {
		name: "the function on a port the pod reserves",
		svc:  ok(withContainer(0, func(c *corev1.Container) { setEnv(c, "KSTATE_FUNCTION_ADDR", "127.0.0.1:8012") })),
		want: "the function may not listen on port 8012: spec.template.spec.containers[0].env\n" +
			"the pod's agent and queue-proxy use ports [8008 8012 8013 8022 8080 8112 9090 9091 9181]; pick another in KSTATE_FUNCTION_ADDR",
	}, {
		name: "no agent image in config-kstate",
		d:    &config.Defaults{DrainTimeout: d.DrainTimeout},
		svc:  ok(),
		want: "kstate cannot be enabled: the kstate installation has no agent image: spec.template.metadata.annotations.kstate.dev/enabled\n" +
			"set agent-image in the ConfigMap knative-testing/config-kstate",
	}, {
		name: "generateName without a space",
		svc: service(enabled(), func(s *servingv1.Service) {
			s.Name = "cart-x7k2p" // generated after the mutating webhook ran
			s.GenerateName = "cart-"
		}),
		want: "a kstate Service created without a name needs kstate.dev/space: metadata.generateName\n" +
			"the entity space is named after the Service, whose name is not known yet; set metadata.name or kstate.dev/space",
	}, {
		name: "generateName with a space is injected and valid",
		svc: func() *servingv1.Service {
			s := service(enabled(kstate.SpaceAnnotationKey, "shop/carts"), func(s *servingv1.Service) { s.Name, s.GenerateName = "", "cart-" })
			Inject(s, nil, d)
			s.Name = "cart-x7k2p"
			return s
		}(),
	}, {
		name: "a bad value is the only complaint when the mutating webhook skipped the Service",
		svc:  service(enabled(kstate.SlotsAnnotationKey, "0")),
		want: `"0" is not a slot count: want an integer from 1 to 65536 (default 4096): spec.template.metadata.annotations.kstate.dev/slots`,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dd := tc.d
			if dd == nil {
				dd = d
			}
			ctx := withConfig(apis.WithinCreate(context.Background()), dd)
			got := ""
			if err := Validate(ctx, tc.svc); err != nil {
				got = err.Error()
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Error("Validate (-want,+got):\n", diff)
			}
		})
	}
}

func TestValidateUpdate(t *testing.T) {
	d := testDefaults(t)
	injectedSvc := func(opts ...svcOpt) *servingv1.Service {
		s := service(opts...)
		Inject(s, nil, d)
		return s
	}
	slotsChange := func(from, to string) string {
		return `kstate.dev/slots cannot change from "` + from + `" to "` + to + `": every key would map to another slot and the state stored under the old slot count would be orphaned: spec.template.metadata.annotations.kstate.dev/slots
to change it, create a new Service with the new value and copy the entities over (docs/annotations.md, "Changing slots or space")`
	}
	tests := []struct {
		name     string
		old, new *servingv1.Service
		want     string
	}{{
		name: "nothing changes",
		old:  injectedSvc(enabled()),
		new:  injectedSvc(enabled(kstate.FlushIntervalAnnotationKey, "1s")),
	}, {
		name: "slots change",
		old:  injectedSvc(enabled(kstate.SlotsAnnotationKey, "4096")),
		new:  injectedSvc(enabled(kstate.SlotsAnnotationKey, "1024")),
		want: slotsChange("4096", "1024"),
	}, {
		name: "the same slot count written differently",
		old:  injectedSvc(enabled(kstate.SlotsAnnotationKey, "64")),
		new:  injectedSvc(enabled(kstate.SlotsAnnotationKey, " 064")),
	}, {
		name: "slots implied by the default on a Service created before the webhook pinned it",
		old:  service(enabled()),
		new:  injectedSvc(enabled(kstate.SlotsAnnotationKey, "1024")),
		want: slotsChange("4096", "1024"),
	}, {
		name: "slots kept while kstate was off",
		old:  injectedSvc(withAnnotations(kstate.EnabledAnnotationKey, "false", kstate.SlotsAnnotationKey, "64")),
		new:  injectedSvc(enabled(kstate.SlotsAnnotationKey, "128")),
		want: slotsChange("64", "128"),
	}, {
		name: "turning kstate on sets slots freely",
		old:  service(),
		new:  injectedSvc(enabled(kstate.SlotsAnnotationKey, "128")),
	}, {
		name: "space change",
		old:  injectedSvc(enabled()),
		new:  injectedSvc(enabled(kstate.SpaceAnnotationKey, "shop/carts-v2")),
		want: `kstate.dev/space cannot change from "shop/cart" to "shop/carts-v2": the Service would start from an empty entity space and the state stored in the old one would be orphaned: spec.template.metadata.annotations.kstate.dev/space
to change it, create a new Service with the new value and copy the entities over (docs/annotations.md, "Changing slots or space")`,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := withConfig(apis.WithinUpdate(context.Background(), &Service{Service: *tc.old}), d)
			got := ""
			if err := Validate(ctx, tc.new); err != nil {
				got = err.Error()
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Error("Validate (-want,+got):\n", diff)
			}
		})
	}
}

func TestValidateSkipsStatusUpdates(t *testing.T) {
	bad := service(withAnnotations(kstate.EnabledAnnotationKey, "yes"))
	ctx := apis.WithinSubResourceUpdate(context.Background(), &Service{Service: *bad}, "status")
	if err := Validate(ctx, bad); err != nil {
		t.Errorf("Validate on a status update = %v", err)
	}
	s := &Service{Service: *service(enabled())}
	s.SetDefaults(withConfig(ctx, testDefaults(t)))
	if len(s.Spec.Template.Spec.Containers) != 1 {
		t.Error("SetDefaults injected on a status update")
	}
}

// TestServiceWrapper: the handler type is a *Service through DeepCopyObject
// (the resourcesemantics controllers copy it before decoding into it), and
// its SetDefaults and Validate are kstate's.
func TestServiceWrapper(t *testing.T) {
	var h interface{} = (&Service{}).DeepCopyObject()
	s, ok := h.(*Service)
	if !ok {
		t.Fatalf("DeepCopyObject() = %T, want *Service", h)
	}
	s.Service = *service(enabled())
	s.SetDefaults(withConfig(apis.WithinCreate(context.Background()), testDefaults(t)))
	if n := len(s.Spec.Template.Spec.Containers); n != 2 {
		t.Fatalf("SetDefaults: %d containers, want the function and the agent", n)
	}
	if err := s.Validate(withConfig(apis.WithinCreate(context.Background()), testDefaults(t))); err != nil {
		t.Errorf("Validate = %v", err)
	}
	if (*Service)(nil).DeepCopyObject() != nil {
		t.Error("nil DeepCopyObject != nil")
	}
	// Update: SetDefaults reads the old Service from the baseline.
	old := &Service{Service: *service(enabled(kstate.SlotsAnnotationKey, "32"))}
	upd := &Service{Service: *service(enabled())}
	upd.SetDefaults(withConfig(apis.WithinUpdate(context.Background(), old), testDefaults(t)))
	if got := upd.Spec.Template.Annotations[kstate.SlotsAnnotationKey]; got != "32" {
		t.Errorf("slots after an update that left them out = %q, want the old 32", got)
	}
}
