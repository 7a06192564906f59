package cli

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"knative.dev/networking/pkg/apis/networking"
	servingnet "knative.dev/serving/pkg/networking"
)

func TestRevisionPods(t *testing.T) {
	h2c := revision("grpc-00001", "grpc", "uid-g", map[string]string{"kstate.dev/enabled": "true"})
	h2c.Spec.Containers = []corev1.Container{{Ports: []corev1.ContainerPort{{Name: "h2c", ContainerPort: 8080}}}}
	eps := endpoints("grpc-00001-private", "uid-g", servingnet.ServiceTypePrivate, nil, nil)
	eps.Subsets = []corev1.EndpointSubset{{
		// Not the revision's port: ignored.
		Addresses: []corev1.EndpointAddress{podRef("wrong-port", "10.1.0.9")},
		Ports:     []corev1.EndpointPort{{Name: networking.ServicePortNameHTTP1, Port: 8012}},
	}, {
		Addresses: []corev1.EndpointAddress{
			podRef("g-b", "10.1.0.2"),
			{IP: "10.1.0.7"}, // no pod behind it: named by its IP
			podRef("g-a", "10.1.0.1"),
		},
		NotReadyAddresses: []corev1.EndpointAddress{podRef("g-c", "10.1.0.3")},
		Ports:             []corev1.EndpointPort{{Name: networking.ServicePortNameH2C, Port: 8013}},
	}, {
		// The same pod listed again in another subset counts once.
		Addresses: []corev1.EndpointAddress{podRef("g-a", "10.1.0.1")},
		Ports:     []corev1.EndpointPort{{Name: networking.ServicePortNameH2C, Port: 8013}},
	}}
	f := newFakeCluster(t, holdsOwnSlots(t), nil, []runtime.Object{eps})
	ready, notReady, err := revisionPods(context.Background(), &Clients{Kube: f.kube}, h2c)
	if err != nil {
		t.Fatal(err)
	}
	wantReady := []endpointPod{{Name: "g-b", IP: "10.1.0.2", Pod: true}, {Name: "10.1.0.7", IP: "10.1.0.7"}, {Name: "g-a", IP: "10.1.0.1", Pod: true}}
	if diff := cmp.Diff(wantReady, ready); diff != "" {
		t.Errorf("ready (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]endpointPod{{Name: "g-c", IP: "10.1.0.3", Pod: true}}, notReady); diff != "" {
		t.Errorf("not ready (-want +got):\n%s", diff)
	}
}

func TestPayload(t *testing.T) {
	tests := []struct {
		in       []byte
		want     *Payload
		wantText string
	}{
		{in: nil, want: nil, wantText: "(empty)"},
		{in: []byte(` {"a": 1} `), want: &Payload{JSON: []byte(`{"a":1}`)}, wantText: "{\n  \"a\": 1\n}"},
		{in: []byte(`42`), want: &Payload{JSON: []byte(`42`)}, wantText: "42"},
		{in: []byte("two\nlines"), want: &Payload{Text: ptr("two\nlines")}, wantText: `"two\nlines"`},
		{in: []byte{0x1b, 'x'}, want: &Payload{Base64: "G3g="}, wantText: "base64:G3g="},
		{in: []byte{0xff, 0xfe}, want: &Payload{Base64: "//4="}, wantText: "base64://4="},
	}
	for _, tt := range tests {
		got := newPayload(tt.in)
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("newPayload(%q) (-want +got):\n%s", tt.in, diff)
		}
		if s := got.String(); s != tt.wantText {
			t.Errorf("newPayload(%q).String() = %q, want %q", tt.in, s, tt.wantText)
		}
	}
}
