package cli

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"knative.dev/serving/pkg/networking"

	"github.com/kstate-dev/kstate/pkg/placement"
	adminv1 "github.com/kstate-dev/kstate/proto/admin/v1"
)

// kv is one line of a kn-style "Label:  value" block whose longest label
// is width characters.
func kv(width int, label, value string) string {
	return fmt.Sprintf("%-*s%s", width+2, label+":", value)
}

func TestOwner(t *testing.T) {
	keyA, keyB := keyOwnedBy(t, "cart-a"), keyOwnedBy(t, "cart-b")
	slotA, slotB := placement.SlotOf(keyA, testSlots), placement.SlotOf(keyB, testSlots)
	holdsNothing := func(pod string) (*adminv1.StatsResponse, error) {
		return &adminv1.StatsResponse{Pod: pod, Ready: true}, nil
	}
	scaledToZero := []runtime.Object{endpoints("cart-00002-private", "uid-2", networking.ServiceTypePrivate, nil,
		[]corev1.EndpointAddress{podRef("cart-c", "10.0.0.3")})}
	block := func(key string, slot uint32, pods int, owner, live string) string {
		ls := []string{
			kv(9, "Service", "shop/cart"),
			kv(9, "Revision", fmt.Sprintf("cart-00002 (%s)", plural(pods, "ready pod"))),
			kv(9, "Key", key),
			kv(9, "Space", "shop/cart"),
			kv(9, "Slot", fmt.Sprintf("%d of 64", slot)),
			kv(9, "Owner", owner),
		}
		if live != "" {
			ls = append(ls, kv(9, "Live", live))
		}
		return lines(ls...)
	}
	tests := []struct {
		name    string
		key     string
		stats   statsFunc
		kube    []runtime.Object
		wantOut string
	}{{
		name:    "the owner holds the slot",
		key:     keyA,
		stats:   holdsOwnSlots(t),
		wantOut: block(keyA, slotA, 2, "cart-a (10.0.0.1)", fmt.Sprintf("holds slot %d at epoch 3", slotA)),
	}, {
		name:  "the owner cannot be reached: reported, not an error",
		key:   keyB,
		stats: holdsOwnSlots(t),
		wantOut: block(keyB, slotB, 2, "cart-b (10.0.0.2)",
			"could not ask the pod: error trying to reach service: dial tcp 10.0.0.2:8080: connect: connection refused"),
	}, {
		name:  "the owner does not hold the slot yet",
		key:   keyA,
		stats: holdsNothing,
		wantOut: block(keyA, slotA, 2, "cart-a (10.0.0.1)",
			fmt.Sprintf("does not hold slot %d now (it takes the lease on the slot's next request, by a handoff if another pod holds it)", slotA)),
	}, {
		name:  "scaled to zero: no owner",
		key:   keyA,
		stats: holdsOwnSlots(t),
		kube:  scaledToZero,
		wantOut: block(keyA, slotA, 0,
			"none: the revision has no ready pod (scaled to zero); the activator buffers the request and the first pod takes every slot", ""),
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kube := tt.kube
			if kube == nil {
				kube = kubeObjects()
			}
			f := newFakeCluster(t, tt.stats, servingObjects(), kube)
			out, _, err := f.run(t, "owner", "cart", tt.key)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.wantOut, out); diff != "" {
				t.Errorf("stdout (-want +got):\n%s", diff)
			}
		})
	}
}

func TestOwnerJSON(t *testing.T) {
	key := keyOwnedBy(t, "cart-a")
	f := newFakeCluster(t, holdsOwnSlots(t), servingObjects(), kubeObjects())
	out, _, err := f.run(t, "owner", "cart", key, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var got Owner
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("output is not an Owner: %v\n%s", err, out)
	}
	want := Owner{
		Service: "cart", Namespace: testNS, Revision: "cart-00002", Key: key, Space: "shop/cart",
		Slot: placement.SlotOf(key, testSlots), Slots: testSlots, ReadyPods: 2, Pod: "cart-a", PodIP: "10.0.0.1",
		Live: &LiveCheck{Reachable: true, Holds: true, Epoch: 3},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("owner (-want +got):\n%s", diff)
	}
}
