package webhook

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch"
	"github.com/google/go-cmp/cmp"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"knative.dev/pkg/configmap"
	"knative.dev/pkg/system"
	pkgwebhook "knative.dev/pkg/webhook"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/kstate-dev/kstate/pkg/apis/config"
	"github.com/kstate-dev/kstate/pkg/apis/kstate"

	_ "knative.dev/pkg/client/injection/kube/client/fake"
	_ "knative.dev/pkg/client/injection/kube/informers/admissionregistration/v1/mutatingwebhookconfiguration/fake"
	_ "knative.dev/pkg/client/injection/kube/informers/admissionregistration/v1/validatingwebhookconfiguration/fake"
	_ "knative.dev/pkg/injection/clients/namespacedkube/informers/core/v1/secret/fake"
	. "knative.dev/pkg/reconciler/testing"
)

// admissionControllers builds the real knative.dev/pkg admission
// controllers with config-kstate in a static watcher.
func admissionControllers(t *testing.T) (mutating, validating pkgwebhook.AdmissionController, ctx context.Context) {
	t.Helper()
	ctx, _ = SetupFakeContext(t)
	ctx = pkgwebhook.WithOptions(ctx, pkgwebhook.Options{SecretName: "kstate-webhook-certs"})
	cmw := configmap.NewStaticWatcher(&corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: config.ConfigName, Namespace: system.Namespace()},
		Data:       map[string]string{config.AgentImageKey: agentImage},
	})
	m := NewDefaultingAdmissionController(ctx, cmw).Reconciler.(pkgwebhook.AdmissionController)
	v := NewValidationAdmissionController(ctx, cmw).Reconciler.(pkgwebhook.AdmissionController)
	return m, v, ctx
}

func request(t *testing.T, op admissionv1.Operation, obj, old *servingv1.Service) *admissionv1.AdmissionRequest {
	t.Helper()
	raw := func(s *servingv1.Service) runtime.RawExtension {
		if s == nil {
			return runtime.RawExtension{}
		}
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		return runtime.RawExtension{Raw: b}
	}
	return &admissionv1.AdmissionRequest{
		Operation: op,
		Kind:      metav1.GroupVersionKind{Group: "serving.knative.dev", Version: "v1", Kind: "Service"},
		Resource:  metav1.GroupVersionResource{Group: "serving.knative.dev", Version: "v1", Resource: "services"},
		Namespace: testNamespace,
		Name:      testName,
		Object:    raw(obj),
		OldObject: raw(old),
	}
}

// admit runs the mutating webhook on req and applies its patch.
func admit(t *testing.T, ctx context.Context, ac pkgwebhook.AdmissionController, req *admissionv1.AdmissionRequest) *servingv1.Service {
	t.Helper()
	resp := ac.Admit(ctx, req)
	if !resp.Allowed {
		t.Fatalf("mutating webhook refused: %v", resp.Result)
	}
	patch, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatalf("patch %s: %v", resp.Patch, err)
	}
	patched, err := patch.Apply(req.Object.Raw)
	if err != nil {
		t.Fatalf("applying %s: %v", resp.Patch, err)
	}
	out := &servingv1.Service{}
	if err := json.Unmarshal(patched, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestAdmission goes through knative.dev/pkg's admission controllers: the
// JSON patch of the mutating webhook is Inject's result, admitting it again
// patches nothing, and the validating webhook accepts it or refuses a bad
// update with kstate's message.
func TestAdmission(t *testing.T) {
	mutating, validating, ctx := admissionControllers(t)
	d := testDefaults(t)

	in := service(enabled(kstate.KeyAnnotationKey, "ce:partitionkey"), withContainer(0, withPort(8080, "")))
	got := admit(t, ctx, mutating, request(t, admissionv1.Create, in, nil))
	want := in.DeepCopy()
	Inject(want, nil, d)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatal("admitted Service (-want,+got):\n", diff)
	}

	// Idempotent through the webhook: nothing left to patch.
	resp := mutating.Admit(ctx, request(t, admissionv1.Create, got, nil))
	if !resp.Allowed || (len(resp.Patch) != 0 && string(resp.Patch) != "[]" && string(resp.Patch) != "null") {
		t.Errorf("second admission: allowed=%v patch=%s", resp.Allowed, resp.Patch)
	}

	if resp := validating.Admit(ctx, request(t, admissionv1.Create, got, nil)); !resp.Allowed {
		t.Errorf("validating webhook refused the injected Service: %v", resp.Result)
	}

	// An update that changes the slot count is refused with kstate's words.
	changed := got.DeepCopy()
	changed.Spec.Template.Annotations[kstate.SlotsAnnotationKey] = "1024"
	resp = validating.Admit(ctx, request(t, admissionv1.Update, changed, got))
	if resp.Allowed {
		t.Fatal("validating webhook allowed a slots change")
	}
	if msg := resp.Result.Message; !strings.Contains(msg, `kstate.dev/slots cannot change from "4096" to "1024"`) ||
		!strings.Contains(msg, "spec.template.metadata.annotations.kstate.dev/slots") {
		t.Errorf("refusal message = %q", msg)
	}

	// An update that leaves the pinned slots out keeps them.
	userApply := in.DeepCopy()
	updated := admit(t, ctx, mutating, request(t, admissionv1.Update, userApply, got))
	if s := updated.Spec.Template.Annotations[kstate.SlotsAnnotationKey]; s != "4096" {
		t.Errorf("slots after re-applying the user's YAML = %q, want 4096", s)
	}
	if resp := validating.Admit(ctx, request(t, admissionv1.Update, updated, got)); !resp.Allowed {
		t.Errorf("validating webhook refused re-applying the user's YAML: %v", resp.Result)
	}
}

// TestConfigValidation: edits of config-kstate are checked with the parser
// the webhooks use.
func TestConfigValidation(t *testing.T) {
	ctx, _ := SetupFakeContext(t)
	ctx = pkgwebhook.WithOptions(ctx, pkgwebhook.Options{SecretName: SecretName})
	ac := NewConfigValidationController(ctx, configmap.NewStaticWatcher()).Reconciler.(pkgwebhook.AdmissionController)
	for _, tc := range []struct {
		data    map[string]string
		wantErr string
	}{
		{data: map[string]string{config.AgentImageKey: agentImage, config.DurabilityKey: "sync"}},
		{data: map[string]string{config.AgentImageKey: agentImage, config.DurabilityKey: "later"},
			wantErr: `validation failed: durability: "later" is not a durability: want "async" or "sync"`},
		{data: map[string]string{config.DurabilityKey: "sync"},
			wantErr: "validation failed: agent-image is required: the kstate-agent image the webhook injects"},
	} {
		cm := &corev1.ConfigMap{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
			ObjectMeta: metav1.ObjectMeta{Name: config.ConfigName, Namespace: system.Namespace()},
			Data:       tc.data,
		}
		b, err := json.Marshal(cm)
		if err != nil {
			t.Fatal(err)
		}
		resp := ac.Admit(ctx, &admissionv1.AdmissionRequest{
			Operation: admissionv1.Update,
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "ConfigMap"},
			Object:    runtime.RawExtension{Raw: b},
		})
		got := ""
		if !resp.Allowed {
			got = resp.Result.Message
		}
		if got != tc.wantErr {
			t.Errorf("%v: Admit = %q, want %q", tc.data, got, tc.wantErr)
		}
	}
}
