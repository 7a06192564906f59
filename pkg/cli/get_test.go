package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/kstate-dev/kstate/internal/redistest"
	"github.com/kstate-dev/kstate/pkg/placement"
	"github.com/kstate-dev/kstate/statestore"
)

// getFixture is a Service "cart" (16 slots) in a namespace of its own, so
// its entity space <namespace>/cart is unique on a shared Redis, with
// entities written through statestore.
type getFixture struct {
	ns, space, url string
	lastAccess     time.Time
}

const getSlots = 16

func newGetFixture(t *testing.T) *getFixture {
	t.Helper()
	url := redistest.Shared(t)
	ns, _, _ := strings.Cut(redistest.UniqueSpace(t), "/")
	fx := &getFixture{ns: ns, space: ns + "/cart", url: url, lastAccess: time.UnixMilli(testNow.Add(-90 * time.Second).UnixMilli())}

	ctx := context.Background()
	store, err := statestore.NewRedis(ctx, url, statestore.RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	records := []*statestore.Record{{
		Key: "alice", State: []byte(`{"items": ["apple", "pear"], "total": 3}`), Version: 7,
		Dedup:      []statestore.DedupEntry{{Source: "/shop", ID: "e1"}, {Source: "/shop", ID: "e2"}},
		LastAccess: fx.lastAccess,
	}, {
		Key: "bob", State: []byte("plain text"), Version: 1, LastAccess: fx.lastAccess,
	}, {
		Key: "carol", State: []byte{0, 1, 2, 0xff}, Version: 2, LastAccess: fx.lastAccess,
	}}
	for _, rec := range records {
		slot := statestore.SlotRef{Space: fx.space, Slot: placement.SlotOf(rec.Key, getSlots)}
		lease, err := store.Acquire(ctx, slot, "test-writer", "127.0.0.1:1", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := store.Flush(ctx, lease, []*statestore.Record{rec}); err != nil {
			t.Fatal(err)
		}
		if err := store.Release(ctx, lease); err != nil {
			t.Fatal(err)
		}
	}
	return fx
}

func (fx *getFixture) cluster(t *testing.T, kube ...runtime.Object) *fakeCluster {
	svc := cartService()
	svc.Namespace = fx.ns
	svc.Spec.Template.Annotations = map[string]string{
		"kstate.dev/enabled": "true",
		"kstate.dev/slots":   fmt.Sprint(getSlots),
	}
	f := newFakeCluster(t, holdsOwnSlots(t), []runtime.Object{svc}, kube)
	f.contextNS = fx.ns
	return f
}

func TestGet(t *testing.T) {
	fx := newGetFixture(t)
	entity := func(key string, version, dedup int, state string) string {
		return lines(
			kv(12, "Key", key),
			kv(12, "Space", fx.space),
			kv(12, "Slot", fmt.Sprintf("%d of 16", placement.SlotOf(key, getSlots))),
			kv(12, "Version", fmt.Sprint(version)),
			kv(12, "Last access", fx.lastAccess.UTC().Format(time.RFC3339)+" (1m30s ago)"),
			kv(12, "Dedup", fmt.Sprintf("%d CloudEvents remembered (window 32)", dedup)),
			"State:",
			state,
		)
	}
	tests := []struct {
		name string
		key  string
		want string
	}{{
		name: "JSON state is printed as JSON",
		key:  "alice",
		want: entity("alice", 7, 2, "{\n  \"items\": [\n    \"apple\",\n    \"pear\"\n  ],\n  \"total\": 3\n}"),
	}, {
		name: "text state is quoted",
		key:  "bob",
		want: entity("bob", 1, 0, `"plain text"`),
	}, {
		name: "binary state is base64",
		key:  "carol",
		want: entity("carol", 2, 0, "base64:AAEC/w=="),
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := fx.cluster(t)
			out, _, err := f.run(t, "get", "cart", tt.key, "--redis", fx.url)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, out); diff != "" {
				t.Errorf("stdout (-want +got):\n%s", diff)
			}
		})
	}
}

func TestGetJSONFromStoreSecret(t *testing.T) {
	fx := newGetFixture(t)
	// No --redis: the URL comes from the default store Secret.
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "kstate-store", Namespace: fx.ns},
		Data:       map[string][]byte{"url": []byte(fx.url)},
	}
	f := fx.cluster(t, secret)
	out, _, err := f.run(t, "get", "cart", "alice", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var got Entity
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("output is not an Entity: %v\n%s", err, out)
	}
	want := Entity{
		Service: "cart", Namespace: fx.ns, Key: "alice", Space: fx.space,
		Slot: placement.SlotOf("alice", getSlots), Slots: getSlots, Version: 7,
		LastAccess: ptr(fx.lastAccess.UTC()), DedupEvents: 2, DedupWindow: 32,
		State: &Payload{JSON: json.RawMessage(`{"items":["apple","pear"],"total":3}`)},
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(Entity{}), jsonEqual); diff != "" {
		t.Errorf("entity (-want +got):\n%s", diff)
	}
}

func TestGetErrors(t *testing.T) {
	fx := newGetFixture(t)
	tests := []struct {
		name string
		args []string
		kube []runtime.Object
		want string
	}{{
		name: "key not found",
		args: []string{"get", "cart", "dave", "--redis", fx.url},
		want: fmt.Sprintf(`entity "dave" not found in space %q (slot %d of 16): it was never written, was deleted, or its first update is not flushed yet`,
			fx.space, placement.SlotOf("dave", getSlots)),
	}, {
		name: "unreachable Redis",
		args: []string{"get", "cart", "alice", "--redis", "redis://:secret@127.0.0.1:1"},
		want: "cannot reach Redis at redis://:xxxxx@127.0.0.1:1: dial tcp 127.0.0.1:1: connect: connection refused",
	}, {
		name: "unreachable Redis from the store Secret",
		args: []string{"get", "cart", "alice"},
		kube: []runtime.Object{&corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "kstate-store", Namespace: fx.ns},
			Data:       map[string][]byte{"url": []byte("redis://127.0.0.1:1")},
		}},
		want: fmt.Sprintf("cannot reach Redis at redis://127.0.0.1:1 (the URL in Secret %s/kstate-store, key url; "+
			"if Redis is only reachable inside the cluster, port-forward it and pass --redis): dial tcp 127.0.0.1:1: connect: connection refused", fx.ns),
	}, {
		name: "no store Secret and no --redis",
		args: []string{"get", "cart", "alice"},
		want: fmt.Sprintf(`no --redis given and the store Secret "kstate-store" (kstate.dev/store) is not in namespace %q; pass --redis URL`, fx.ns),
	}, {
		name: "store Secret without the key",
		args: []string{"get", "cart", "alice"},
		kube: []runtime.Object{&corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "kstate-store", Namespace: fx.ns},
			Data:       map[string][]byte{"host": []byte("redis")},
		}},
		want: fmt.Sprintf(`no --redis given and the store Secret "kstate-store" in namespace %q has no key "url"; pass --redis URL`, fx.ns),
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := fx.cluster(t, tt.kube...)
			_, _, err := f.run(t, tt.args...)
			if diff := cmp.Diff(tt.want, errText(err)); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}
