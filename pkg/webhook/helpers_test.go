package webhook

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/pkg/apis"
	"knative.dev/pkg/ptr"
	apisconfig "knative.dev/serving/pkg/apis/config"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/kstate-dev/kstate/pkg/apis/config"
	"github.com/kstate-dev/kstate/pkg/apis/kstate"
	"github.com/kstate-dev/kstate/pkg/webhook/resources"

	_ "knative.dev/pkg/system/testing" // sets SYSTEM_NAMESPACE
)

const (
	testNamespace = "shop"
	testName      = "cart"
	testImage     = "example.com/counter:1"
	agentImage    = "example.com/kstate-agent:1"
)

// testDefaults is config-kstate with the agent image and kv.
func testDefaults(t testing.TB, kv ...string) *config.Defaults {
	t.Helper()
	data := map[string]string{config.AgentImageKey: agentImage}
	for i := 0; i < len(kv); i += 2 {
		data[kv[i]] = kv[i+1]
	}
	d, err := config.NewDefaultsConfigFromMap(data)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

type svcOpt func(*servingv1.Service)

// service is a Knative Service as a user writes it: one container, no
// port, plus opts.
func service(opts ...svcOpt) *servingv1.Service {
	s := &servingv1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "serving.knative.dev/v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{Name: testName, Namespace: testNamespace},
		Spec: servingv1.ServiceSpec{ConfigurationSpec: servingv1.ConfigurationSpec{Template: servingv1.RevisionTemplateSpec{
			Spec: servingv1.RevisionSpec{PodSpec: corev1.PodSpec{Containers: []corev1.Container{{Image: testImage}}}},
		}}},
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// withAnnotations sets template annotations, key, value, ...
func withAnnotations(kv ...string) svcOpt {
	return func(s *servingv1.Service) {
		if s.Spec.Template.Annotations == nil {
			s.Spec.Template.Annotations = map[string]string{}
		}
		for i := 0; i < len(kv); i += 2 {
			s.Spec.Template.Annotations[kv[i]] = kv[i+1]
		}
	}
}

func withoutAnnotation(key string) svcOpt {
	return func(s *servingv1.Service) { delete(s.Spec.Template.Annotations, key) }
}

func enabled(kv ...string) svcOpt {
	return withAnnotations(append([]string{kstate.EnabledAnnotationKey, "true"}, kv...)...)
}

func withTimeout(secs int64) svcOpt {
	return func(s *servingv1.Service) { s.Spec.Template.Spec.TimeoutSeconds = ptr.Int64(secs) }
}

// withContainer changes container i.
func withContainer(i int, f func(*corev1.Container)) svcOpt {
	return func(s *servingv1.Service) { f(&s.Spec.Template.Spec.Containers[i]) }
}

func withPort(port int32, name string) func(*corev1.Container) {
	return func(c *corev1.Container) { c.Ports = []corev1.ContainerPort{{ContainerPort: port, Name: name}} }
}

func withEnv(name, value string) func(*corev1.Container) {
	return func(c *corev1.Container) { c.Env = append(c.Env, corev1.EnvVar{Name: name, Value: value}) }
}

func named(name string) func(*corev1.Container) {
	return func(c *corev1.Container) { c.Name = name }
}

// withSidecar adds a container without a port.
func withSidecar(name string) svcOpt {
	return func(s *servingv1.Service) {
		s.Spec.Template.Spec.Containers = append(s.Spec.Template.Spec.Containers, corev1.Container{Name: name, Image: "example.com/" + name})
	}
}

// injected is what Inject makes of a Service: the pinned annotations, the
// activator in path, the timeout, the function without a port and with its
// address, and the agent of spec s (functionPort on localhost).
func injected(t testing.TB, d *config.Defaults, fn int, functionPort int32) svcOpt {
	return func(svc *servingv1.Service) {
		ann := svc.Spec.Template.Annotations
		if _, ok := value(ann, kstate.SlotsAnnotationKey); !ok {
			ann[kstate.SlotsAnnotationKey] = "4096"
		}
		if _, ok := value(ann, kstate.SpaceAnnotationKey); !ok {
			ann[kstate.SpaceAnnotationKey] = testNamespace + "/" + testName
		}
		if _, ok := ann["autoscaling.knative.dev/target-burst-capacity"]; !ok {
			ann["autoscaling.knative.dev/target-burst-capacity"] = "-1"
		}
		if svc.Spec.Template.Spec.TimeoutSeconds == nil {
			svc.Spec.Template.Spec.TimeoutSeconds = ptr.Int64(d.RevisionTimeoutSeconds)
		}
		c := &svc.Spec.Template.Spec.Containers[fn]
		c.Ports = nil
		setEnv(c, "KSTATE_FUNCTION_ADDR", resources.FunctionAddr(functionPort))
		spec, errs := kstate.ParseSpec(svc.Namespace, svc.Name, ann, d)
		if errs != nil {
			t.Fatal(errs)
		}
		svc.Spec.Template.Spec.Containers = append(svc.Spec.Template.Spec.Containers, resources.MakeAgentContainer(spec, d, functionPort))
	}
}

// knativeContext is the context Knative's own webhook validates in, with
// the features kstate needs (config/knative/config-features.yaml).
func knativeContext(fieldRef apisconfig.Flag) context.Context {
	features, err := apisconfig.NewFeaturesConfigFromMap(map[string]string{})
	if err != nil {
		panic(err)
	}
	features.PodSpecFieldRef = fieldRef
	defaults, err := apisconfig.NewDefaultsConfigFromMap(map[string]string{})
	if err != nil {
		panic(err)
	}
	return apisconfig.ToContext(apis.WithinCreate(context.Background()), &apisconfig.Config{Defaults: defaults, Features: features})
}

// withConfig is a webhook context with config-kstate d.
func withConfig(ctx context.Context, d *config.Defaults) context.Context {
	return config.ToContext(ctx, &config.Config{Defaults: d})
}
