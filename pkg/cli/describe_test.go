package cli

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"
)

// configKstate is an installed config-kstate whose default durability is sync.
func configKstate() *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "config-kstate", Namespace: "kstate-system"},
		Data: map[string]string{
			"agent-image":    "example.com/kstate-agent",
			"durability":     "sync",
			"flush-interval": "250ms",
			"store":          "my-redis:address",
			"dedup-window":   "64",
		},
	}
}

func TestDescribeTable(t *testing.T) {
	counts := cartTable(t).Counts()
	tests := []struct {
		name    string
		service string
		kube    []runtime.Object
		want    string
	}{{
		name:    "kstate service, built-in defaults",
		service: "cart",
		kube:    kubeObjects(),
		want: lines(
			"Name:        cart",
			"Namespace:   shop",
			"URL:         http://cart.shop.example.com",
			"kstate:      enabled",
			"Space:       shop/cart",
			"Slots:       64",
			"Key:         header:Cart-Id",
			"Durability:  async, flush every 100ms",
			"Store:       Secret kstate-store, key url",
			"Dedup:       32 CloudEvents per entity",
			"",
			"Revisions:",
			"  TRAFFIC  NAME             READY  KSTATE  READY-PODS",
			"  100%     cart-00002       True   yes     2/3",
			"  0%       cart-00001 #old  True   no      -",
			"",
			"Pods of cart-00002 (64 slots placed over 2 ready pods):",
			"  NAME    IP        READY  SLOTS  HELD  ENTITIES  DIRTY  FLUSH-LAG  HANDOFFS-IN  HANDOFFS-OUT  REJECTED  AGENT",
			fmt.Sprintf("  cart-a  10.0.0.1  yes    %-5d  %-4d  120       3      40ms       2            1             0         ready", counts["cart-a"], counts["cart-a"]),
			fmt.Sprintf("  cart-b  10.0.0.2  yes    %-5d  -     -         -      -          -            -             -         unreachable", counts["cart-b"]),
			"  cart-c  10.0.0.3  no     0      0     0         0      0s         0            0             0         not ready",
			"Stats not read:",
			"  cart-b: error trying to reach service: dial tcp 10.0.0.2:8080: connect: connection refused",
		),
	}, {
		name:    "service without kstate, defaults from config-kstate",
		service: "plain",
		kube:    append(kubeObjects(), configKstate()),
		want: lines(
			"Name:        plain",
			"Namespace:   shop",
			"URL:         http://plain.shop.example.com",
			"kstate:      disabled",
			"Space:       shop/plain",
			"Slots:       4096",
			"Key:         (default) ce:partitionkey for CloudEvents, header:Kstate-Key otherwise",
			"Durability:  sync, flush every 250ms",
			"Store:       Secret my-redis, key address",
			"Dedup:       64 CloudEvents per entity",
			"",
			"Revisions:",
			"  TRAFFIC  NAME         READY  KSTATE  READY-PODS",
			"  100%     plain-00001  True   no      -",
		),
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeCluster(t, holdsOwnSlots(t), servingObjects(), tt.kube)
			out, _, err := f.run(t, "describe", tt.service)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, out); diff != "" {
				t.Errorf("stdout (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDescribeJSONAndYAML(t *testing.T) {
	counts := cartTable(t).Counts()
	want := &Description{
		Service: "cart", Namespace: testNS, URL: "http://cart.shop.example.com", Enabled: true,
		Config: &KstateConfig{
			Space: "shop/cart", Slots: 64, Key: "header:Cart-Id", Durability: "async",
			FlushInterval: "100ms", Store: "kstate-store:url", DedupWindow: 32,
		},
		Revisions: []RevisionInfo{{
			Name: "cart-00002", TrafficPercent: 100, Ready: "True", Kstate: true, Space: "shop/cart", Slots: 64,
			Pods: []PodInfo{{
				Name: "cart-a", IP: "10.0.0.1", Ready: true, SlotsOwned: counts["cart-a"],
				Stats: &PodStats{SlotsHeld: counts["cart-a"], Entities: 120, DirtyEntities: 3, DirtyBytes: 300, FlushLagMs: 40,
					HandoffsIn: 2, HandoffsOut: 1, Requests: 1000, Ready: true},
			}, {
				Name: "cart-b", IP: "10.0.0.2", Ready: true, SlotsOwned: counts["cart-b"],
				StatsError: "error trying to reach service: dial tcp 10.0.0.2:8080: connect: connection refused",
			}, {
				Name: "cart-c", IP: "10.0.0.3", Stats: &PodStats{},
			}},
		}, {
			Name: "cart-00001", TrafficPercent: 0, Tags: []string{"old"}, Ready: "True",
		}},
	}
	if counts["cart-a"]+counts["cart-b"] != testSlots {
		t.Fatalf("placement gives %v, want all %d slots placed", counts, testSlots)
	}
	for _, format := range []string{"json", "yaml"} {
		t.Run(format, func(t *testing.T) {
			f := newFakeCluster(t, holdsOwnSlots(t), servingObjects(), kubeObjects())
			out, _, err := f.run(t, "describe", "cart", "-o", format)
			if err != nil {
				t.Fatal(err)
			}
			got := &Description{}
			if format == "json" {
				err = json.Unmarshal([]byte(out), got)
			} else {
				if strings.HasPrefix(strings.TrimSpace(out), "{") {
					t.Fatalf("-o yaml printed JSON:\n%s", out)
				}
				err = yaml.Unmarshal([]byte(out), got)
			}
			if err != nil {
				t.Fatalf("output is not a Description: %v\n%s", err, out)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("description (-want +got):\n%s", diff)
			}
		})
	}
}
