package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	kubefake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	ktesting "k8s.io/client-go/testing"
	"knative.dev/pkg/apis"
	duckv1 "knative.dev/pkg/apis/duck/v1"
	"knative.dev/serving/pkg/apis/serving"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	servingfake "knative.dev/serving/pkg/client/clientset/versioned/fake"
	"knative.dev/serving/pkg/networking"

	"github.com/kstate-dev/kstate/pkg/agent"
	"github.com/kstate-dev/kstate/pkg/placement"
	adminv1 "github.com/kstate-dev/kstate/proto/admin/v1"
)

// The fixture: namespace shop with
//   - Service cart (kstate on: key header:Cart-Id, 64 slots, space shop/cart),
//     revisions cart-00002 (kstate, 100% traffic, ready pods cart-a and
//     cart-b, not-ready pod cart-c) and cart-00001 (not kstate, 0%, tag old,
//     pod old-a);
//   - Service plain (no kstate), revision plain-00001.
const (
	testNS    = "shop"
	testSlots = 64
)

var readyCartPods = []string{"cart-a", "cart-b"}

func cartService() *servingv1.Service {
	svc := &servingv1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "cart", Namespace: testNS, ResourceVersion: "7"},
		Spec: servingv1.ServiceSpec{ConfigurationSpec: servingv1.ConfigurationSpec{Template: servingv1.RevisionTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{
				"kstate.dev/enabled": "true",
				"kstate.dev/key":     "header:Cart-Id",
				"kstate.dev/slots":   "64",
				"kstate.dev/space":   "shop/cart",
			}},
			Spec: servingv1.RevisionSpec{PodSpec: corev1.PodSpec{Containers: []corev1.Container{
				{Name: "user-container", Image: "example.com/cart"},
				{Name: "kstate-agent", Image: "example.com/kstate-agent"},
			}}},
		}}},
	}
	svc.Status.URL = apis.HTTP("cart.shop.example.com")
	svc.Status.LatestReadyRevisionName = "cart-00002"
	svc.Status.LatestCreatedRevisionName = "cart-00002"
	svc.Status.Traffic = []servingv1.TrafficTarget{
		{RevisionName: "cart-00002", Percent: ptr[int64](100)},
		{RevisionName: "cart-00001", Percent: ptr[int64](0), Tag: "old"},
	}
	return svc
}

func plainService() *servingv1.Service {
	svc := &servingv1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "plain", Namespace: testNS, ResourceVersion: "3"},
		Spec: servingv1.ServiceSpec{ConfigurationSpec: servingv1.ConfigurationSpec{Template: servingv1.RevisionTemplateSpec{
			Spec: servingv1.RevisionSpec{PodSpec: corev1.PodSpec{Containers: []corev1.Container{{Image: "example.com/plain"}}}},
		}}},
	}
	svc.Status.URL = apis.HTTP("plain.shop.example.com")
	svc.Status.LatestReadyRevisionName = "plain-00001"
	svc.Status.LatestCreatedRevisionName = "plain-00001"
	svc.Status.Traffic = []servingv1.TrafficTarget{{RevisionName: "plain-00001", Percent: ptr[int64](100)}}
	return svc
}

func revision(name, service, uid string, annotations map[string]string) *servingv1.Revision {
	rev := &servingv1.Revision{ObjectMeta: metav1.ObjectMeta{
		Name: name, Namespace: testNS, UID: types.UID(uid),
		Labels:      map[string]string{serving.ServiceLabelKey: service},
		Annotations: annotations,
	}}
	rev.Status.Conditions = duckv1.Conditions{{Type: apis.ConditionReady, Status: corev1.ConditionTrue}}
	return rev
}

func podRef(name, ip string) corev1.EndpointAddress {
	return corev1.EndpointAddress{IP: ip, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: name, Namespace: testNS}}
}

func endpoints(name, uid string, typ networking.ServiceType, ready, notReady []corev1.EndpointAddress) *corev1.Endpoints {
	return &corev1.Endpoints{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNS, Labels: map[string]string{
			serving.RevisionUID:       uid,
			networking.ServiceTypeKey: string(typ),
		}},
		Subsets: []corev1.EndpointSubset{{
			Addresses:         ready,
			NotReadyAddresses: notReady,
			Ports:             []corev1.EndpointPort{{Name: "http", Port: 8012}, {Name: "queue-metrics", Port: 9090}},
		}},
	}
}

func servingObjects() []runtime.Object {
	kstateAnn := map[string]string{
		"kstate.dev/enabled": "true",
		"kstate.dev/key":     "header:Cart-Id",
		"kstate.dev/slots":   "64",
		"kstate.dev/space":   "shop/cart",
	}
	return []runtime.Object{
		cartService(),
		plainService(),
		revision("cart-00002", "cart", "uid-2", kstateAnn),
		revision("cart-00001", "cart", "uid-1", nil),
		revision("plain-00001", "plain", "uid-p", nil),
	}
}

func kubeObjects() []runtime.Object {
	return []runtime.Object{
		endpoints("cart-00002-private", "uid-2", networking.ServiceTypePrivate,
			[]corev1.EndpointAddress{podRef("cart-b", "10.0.0.2"), podRef("cart-a", "10.0.0.1")},
			[]corev1.EndpointAddress{podRef("cart-c", "10.0.0.3")}),
		// The public service's endpoints carry the same revision label but
		// are not what routers read.
		endpoints("cart-00002", "uid-2", networking.ServiceTypePublic,
			[]corev1.EndpointAddress{podRef("activator-x", "10.9.9.9")}, nil),
		endpoints("cart-00001-private", "uid-1", networking.ServiceTypePrivate,
			[]corev1.EndpointAddress{podRef("old-a", "10.0.1.1")}, nil),
		endpoints("plain-00001-private", "uid-p", networking.ServiceTypePrivate,
			[]corev1.EndpointAddress{podRef("plain-a", "10.0.2.1")}, nil),
	}
}

// cartTable is the placement routers compute for cart-00002.
func cartTable(t *testing.T) *placement.Table {
	t.Helper()
	tbl, err := placement.New(readyCartPods, testSlots)
	if err != nil {
		t.Fatal(err)
	}
	return tbl
}

// keyOwnedBy returns a key whose slot placement gives pod.
func keyOwnedBy(t *testing.T, pod string) string {
	t.Helper()
	tbl := cartTable(t)
	for i := 0; i < 10000; i++ {
		k := fmt.Sprintf("k%d", i)
		if _, owner := tbl.OwnerOfKey(k); owner == pod {
			return k
		}
	}
	t.Fatalf("no key owned by %s", pod)
	return ""
}

// statsFunc answers a pod's /.kstate/stats, or fails.
type statsFunc func(pod string) (*adminv1.StatsResponse, error)

// holdsOwnSlots: every pod holds exactly the slots placement gives it (at
// epoch 3), cart-b cannot be reached and cart-c is a pod that is not ready.
func holdsOwnSlots(t *testing.T) statsFunc {
	tbl := cartTable(t)
	return func(pod string) (*adminv1.StatsResponse, error) {
		switch pod {
		case "cart-b":
			return nil, errors.New("error trying to reach service: dial tcp 10.0.0.2:8080: connect: connection refused")
		case "cart-c":
			return &adminv1.StatsResponse{Pod: pod, Ready: false}, nil
		}
		st := &adminv1.StatsResponse{
			Pod: pod, Space: "shop/cart", SlotCount: testSlots,
			Entities: 120, DirtyEntities: 3, DirtyBytes: 300, FlushLagMs: 40,
			Requests: 1000, HandoffsIn: 2, HandoffsOut: 1, RejectedWrites: 0, Ready: true,
		}
		for _, s := range tbl.SlotsOf(pod) {
			st.Slots = append(st.Slots, &adminv1.SlotStats{Slot: s, Epoch: 3})
		}
		return st, nil
	}
}

// fakeResponse is the pod proxy's answer in tests.
type fakeResponse struct {
	body []byte
	err  error
}

func (r fakeResponse) DoRaw(context.Context) ([]byte, error) { return r.body, r.err }
func (r fakeResponse) Stream(context.Context) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(r.body)), r.err
}

// fakeCluster holds the fake clientsets of one test.
type fakeCluster struct {
	kube    *kubefake.Clientset
	serving *servingfake.Clientset
	// contextNS is the kubeconfig context's namespace (testNS by default).
	contextNS string
}

func newFakeCluster(t *testing.T, stats statsFunc, serving []runtime.Object, kube []runtime.Object) *fakeCluster {
	t.Helper()
	f := &fakeCluster{kube: kubefake.NewSimpleClientset(kube...), serving: servingfake.NewSimpleClientset(serving...), contextNS: testNS}
	f.kube.PrependProxyReactor("pods", func(action ktesting.Action) (bool, rest.ResponseWrapper, error) {
		pa := action.(ktesting.ProxyGetAction)
		if pa.GetScheme() != "http" || pa.GetPort() != "8080" || pa.GetPath() != agent.StatsPath || pa.GetNamespace() != testNS {
			t.Errorf("unexpected pod proxy call %s %s:%s%s in %s", pa.GetScheme(), pa.GetName(), pa.GetPort(), pa.GetPath(), pa.GetNamespace())
			return true, fakeResponse{err: errors.New("unexpected call")}, nil
		}
		st, err := stats(pa.GetName())
		if err != nil {
			return true, fakeResponse{err: err}, nil
		}
		b, err := protojson.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		return true, fakeResponse{body: b}, nil
	})
	return f
}

// run runs the command line args against the cluster and returns stdout,
// stderr and the error.
func (f *fakeCluster) run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	p := &Params{
		NewClients: func(string) (*Clients, error) {
			return &Clients{Kube: f.kube, Serving: f.serving, Namespace: f.contextNS}, nil
		},
		Now: func() time.Time { return testNow },
	}
	return runCommand(t, p, args...)
}

var testNow = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func runCommand(t *testing.T, p *Params, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	root := newRootCommand(p)
	root.SetArgs(args)
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := root.ExecuteContext(ctx)
	return stdout.String(), stderr.String(), err
}

// jsonEqual compares JSON documents, not their spacing.
var jsonEqual = cmp.Comparer(func(a, b json.RawMessage) bool {
	var ca, cb bytes.Buffer
	if json.Compact(&ca, a) != nil || json.Compact(&cb, b) != nil {
		return bytes.Equal(a, b)
	}
	return bytes.Equal(ca.Bytes(), cb.Bytes())
})

func errText(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// lines joins lines with newlines, for expected outputs.
func lines(ls ...string) string { return strings.Join(ls, "\n") + "\n" }

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
