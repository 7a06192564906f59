package plugin

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"knative.dev/serving/pkg/apis/serving"
	v1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/kstate-dev/kstate/pkg/keyspec"
	"github.com/kstate-dev/kstate/pkg/placement"
)

func TestEnabled(t *testing.T) {
	tests := []struct {
		value string
		set   bool
		want  bool
	}{
		{want: false},
		{value: "true", set: true, want: true},
		{value: " True ", set: true, want: true},
		{value: "false", set: true, want: false},
		{value: "yes", set: true, want: false},
	}
	for _, tc := range tests {
		rev := revision("r")
		if tc.set {
			rev.Annotations[AnnotationEnabled] = tc.value
		}
		if got := Enabled(rev); got != tc.want {
			t.Errorf("Enabled(%s=%q) = %v, want %v", AnnotationEnabled, tc.value, got, tc.want)
		}
	}
	if Enabled(nil) {
		t.Error("Enabled(nil) = true")
	}
}

func TestConfigFromRevision(t *testing.T) {
	tests := []struct {
		name    string
		rev     *v1.Revision
		want    *RevisionConfig
		wantErr string
	}{{
		name: "defaults",
		rev:  revision("cart-00001", withKstate()),
		want: &RevisionConfig{Slots: placement.DefaultSlots, Space: "shop/cart", PortName: "http"},
	}, {
		name: "everything set",
		rev: revision("cart-00001", withCC(5), withKstate(
			AnnotationKey, "path:/carts/{key}",
			AnnotationSlots, "1024",
			AnnotationSpace, "shop/carts-v2",
		), func(r *v1.Revision) {
			r.Spec.Containers = []corev1.Container{{Ports: []corev1.ContainerPort{{Name: "h2c"}}}}
		}),
		want: &RevisionConfig{Key: keyspec.MustParse("path:/carts/{key}"), Slots: 1024, Space: "shop/carts-v2",
			ContainerConcurrency: 5, PortName: "http2"},
	}, {
		name: "empty values mean defaults",
		rev:  revision("cart-00001", withKstate(AnnotationKey, " ", AnnotationSlots, "")),
		want: &RevisionConfig{Slots: placement.DefaultSlots, Space: "shop/cart", PortName: "http"},
	}, {
		name:    "bad key spec",
		rev:     revision("cart-00001", withKstate(AnnotationKey, "headr:x")),
		wantErr: `annotation kstate.dev/key: key spec "headr:x": unknown source "headr"; expected one of header:NAME, ce:ATTRIBUTE, path:/prefix/{key}, query:NAME`,
	}, {
		name:    "bad slots",
		rev:     revision("cart-00001", withKstate(AnnotationSlots, "70000")),
		wantErr: `annotation kstate.dev/slots: "70000" is not a slot count: want an integer from 1 to 65536 (default 4096)`,
	}, {
		name: "no space and no service label",
		rev: revision("cart-00001", withKstate(), func(r *v1.Revision) {
			delete(r.Labels, serving.ServiceLabelKey)
		}),
		wantErr: "annotation kstate.dev/space is not set and the revision has no serving.knative.dev/service label to name the entity space after",
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ConfigFromRevision(tc.rev)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("error = %v\nwant    %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b keyspec.Spec) bool { return a == b })); diff != "" {
				t.Errorf("ConfigFromRevision (-want,+got):\n%s", diff)
			}
		})
	}
}

func TestSecurePort(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.1:8012":  "10.0.0.1:8112",
		"[fd00::1]:8013": "[fd00::1]:8112",
		"10.0.0.1":       "10.0.0.1:8112",
	} {
		if got := securePort(in); got != want {
			t.Errorf("securePort(%q) = %q, want %q", in, got, want)
		}
	}
}
