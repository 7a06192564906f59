package kstate

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kstate-dev/kstate/pkg/apis/config"
	"github.com/kstate-dev/kstate/pkg/keyspec"
	"github.com/kstate-dev/kstate/pkg/placement"
)

var specComparer = cmp.Comparer(func(a, b keyspec.Spec) bool { return a == b })

func defaults() *config.Defaults {
	d, err := config.NewDefaultsConfigFromMap(map[string]string{config.AgentImageKey: "agent"})
	if err != nil {
		panic(err)
	}
	return d
}

func TestEnabled(t *testing.T) {
	for v, want := range map[string]bool{"true": true, " TRUE ": true, "True": true, "false": false, "": false, "yes": false, "1": false} {
		if got := Enabled(map[string]string{EnabledAnnotationKey: v}); got != want {
			t.Errorf("Enabled(%q) = %v, want %v", v, got, want)
		}
	}
	if Enabled(nil) {
		t.Error("Enabled(nil) = true")
	}
	if allocs := testing.AllocsPerRun(100, func() { EnabledValue(" True ") }); allocs != 0 {
		t.Errorf("EnabledValue allocates %v times", allocs)
	}
}

func TestParseRouting(t *testing.T) {
	tests := []struct {
		name     string
		service  string
		ann      map[string]string
		want     Routing
		wantErr  string
		wantAnno string
	}{{
		name:    "defaults",
		service: "cart",
		want:    Routing{Slots: placement.DefaultSlots, Space: "shop/cart"},
	}, {
		name:    "no service, no space",
		service: "",
		want:    Routing{Slots: placement.DefaultSlots},
	}, {
		name:    "everything",
		service: "cart",
		ann:     map[string]string{KeyAnnotationKey: " path:/carts/{key} ", SlotsAnnotationKey: "1024", SpaceAnnotationKey: "shop/carts-v2"},
		want:    Routing{Key: keyspec.MustParse("path:/carts/{key}"), Slots: 1024, Space: "shop/carts-v2"},
	}, {
		name:    "blank means unset",
		service: "cart",
		ann:     map[string]string{KeyAnnotationKey: " ", SlotsAnnotationKey: "", SpaceAnnotationKey: "\t"},
		want:    Routing{Slots: placement.DefaultSlots, Space: "shop/cart"},
	}, {
		name:     "bad key",
		ann:      map[string]string{KeyAnnotationKey: "headr:x", SlotsAnnotationKey: "0"},
		wantErr:  `annotation kstate.dev/key: key spec "headr:x": unknown source "headr"; expected one of header:NAME, ce:ATTRIBUTE, path:/prefix/{key}, query:NAME`,
		wantAnno: KeyAnnotationKey,
	}, {
		name:     "bad slots",
		ann:      map[string]string{SlotsAnnotationKey: "70000"},
		wantErr:  `annotation kstate.dev/slots: "70000" is not a slot count: want an integer from 1 to 65536 (default 4096)`,
		wantAnno: SlotsAnnotationKey,
	}, {
		name:     "another namespace's space",
		ann:      map[string]string{SpaceAnnotationKey: "bank/accounts"},
		wantErr:  `annotation kstate.dev/space: "bank/accounts" is an entity space of namespace "bank": a Service may only use a space of its own namespace, such as shop/accounts`,
		wantAnno: SpaceAnnotationKey,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseRouting("shop", tc.service, tc.ann)
			if tc.wantErr != "" {
				var ae *AnnotationError
				if !errors.As(err, &ae) || err.Error() != tc.wantErr || ae.Annotation != tc.wantAnno {
					t.Fatalf("error = %v\nwant    %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal("ParseRouting =", err)
			}
			if diff := cmp.Diff(tc.want, got, specComparer); diff != "" {
				t.Error("ParseRouting (-want,+got):\n", diff)
			}
		})
	}
}

func TestValidateSpace(t *testing.T) {
	tests := []struct {
		space, wantErr string
	}{
		{space: "shop/cart"},
		{space: "shop/carts.v2"},
		{space: "cart", wantErr: `"cart" is not an entity space: want <namespace>/<name>, such as shop/carts`},
		{space: "shop/", wantErr: `"shop/" is not an entity space: want <namespace>/<name>, such as shop/carts`},
		{space: "/cart", wantErr: `"/cart" is not an entity space: want <namespace>/<name>, such as shop/carts`},
		{space: "bank/cart", wantErr: `"bank/cart" is an entity space of namespace "bank": a Service may only use a space of its own namespace, such as shop/cart`},
		{space: "shop/a/b", wantErr: `"shop/a/b" is not an entity space: the name "a/b" is invalid (a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*'))`},
		{space: "shop/{cart}", wantErr: `"shop/{cart}" is not an entity space: the name "{cart}" is invalid (a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*'))`},
	}
	for _, tc := range tests {
		err := ValidateSpace("shop", tc.space)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("ValidateSpace(%q) = %v", tc.space, err)
		case tc.wantErr != "" && (err == nil || err.Error() != tc.wantErr):
			t.Errorf("ValidateSpace(%q) = %v\nwant %s", tc.space, err, tc.wantErr)
		}
	}
}

func TestParseSpec(t *testing.T) {
	d := defaults()
	base := func(f func(*Spec)) *Spec {
		s := &Spec{
			Routing:       Routing{Slots: placement.DefaultSlots, Space: "shop/cart"},
			Durability:    config.DurabilityAsync,
			FlushInterval: 100 * time.Millisecond,
			MaxDirtyBytes: 64 << 20,
			Preload:       config.Preload{Entities: 100000, Bytes: 128 << 20},
			Store:         config.StoreRef{SecretName: "kstate-store", Key: "url"},
			DedupWindow:   32,
		}
		f(s)
		return s
	}
	tests := []struct {
		name    string
		ann     map[string]string
		want    *Spec
		wantErr string
	}{{
		name: "only enabled",
		ann:  map[string]string{EnabledAnnotationKey: "true"},
		want: base(func(*Spec) {}),
	}, {
		name: "everything",
		ann: map[string]string{
			EnabledAnnotationKey:       "True",
			KeyAnnotationKey:           "ce:partitionkey",
			SpaceAnnotationKey:         "shop/carts",
			SlotsAnnotationKey:         "256",
			DurabilityAnnotationKey:    "sync",
			FlushIntervalAnnotationKey: "1s",
			MaxDirtyBytesAnnotationKey: "16Mi",
			PreloadAnnotationKey:       "entities=500",
			StoreAnnotationKey:         "redis:URL",
			DedupWindowAnnotationKey:   "8",
			"other.dev/ignored":        "x",
		},
		want: base(func(s *Spec) {
			s.Key = keyspec.MustParse("ce:partitionkey")
			s.Space = "shop/carts"
			s.Slots = 256
			s.Durability = config.DurabilitySync
			s.FlushInterval = time.Second
			s.MaxDirtyBytes = 16 << 20
			s.Preload.Entities = 500 // bytes from config-kstate
			s.Store = config.StoreRef{SecretName: "redis", Key: "URL"}
			s.DedupWindow = 8
		}),
	}, {
		name: "every value bad, each reported with its path",
		ann: map[string]string{
			EnabledAnnotationKey:       "yes",
			KeyAnnotationKey:           "cookie:id",
			SpaceAnnotationKey:         "bank/vault",
			SlotsAnnotationKey:         "many",
			DurabilityAnnotationKey:    "eventual",
			FlushIntervalAnnotationKey: "often",
			MaxDirtyBytesAnnotationKey: "0",
			PreloadAnnotationKey:       "all",
			StoreAnnotationKey:         "bank/redis",
			DedupWindowAnnotationKey:   "0",
			"kstate.dev/slot":          "8",
		},
		wantErr: `"0" is not a byte size: want a whole number of bytes of at least 1, such as 64Mi: kstate.dev/max-dirty-bytes
"0" is not a dedup window: want an integer from 1 to 1024: kstate.dev/dedup-window
"all" is not a preload budget: unknown part "all"; want entities=N,bytes=SIZE (either part may be left out), such as entities=100000,bytes=128Mi: kstate.dev/preload
"bank/redis" is not a store Secret: a Secret of another namespace cannot be used; want SECRET or SECRET:KEY naming a Secret in the Service's namespace: kstate.dev/store
"bank/vault" is an entity space of namespace "bank": a Service may only use a space of its own namespace, such as shop/vault: kstate.dev/space
"eventual" is not a durability: want "async" or "sync": kstate.dev/durability
"many" is not a slot count: want an integer from 1 to 65536 (default 4096): kstate.dev/slots
"often" is not a duration from 1ms to 1m0s (such as 100ms or 2s): kstate.dev/flush-interval
"yes" is not a switch: want "true" or "false": kstate.dev/enabled
key spec "cookie:id": unknown source "cookie"; expected one of header:NAME, ce:ATTRIBUTE, path:/prefix/{key}, query:NAME: kstate.dev/key
unknown kstate annotation: kstate.dev/slot
kstate reads kstate.dev/enabled, kstate.dev/key, kstate.dev/space, kstate.dev/slots, kstate.dev/durability, kstate.dev/flush-interval, kstate.dev/max-dirty-bytes, kstate.dev/preload, kstate.dev/store, kstate.dev/dedup-window`,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, errs := ParseSpec("shop", "cart", tc.ann, d)
			if tc.wantErr != "" {
				if got != nil {
					t.Errorf("ParseSpec returned a Spec with errors: %+v", got)
				}
				if diff := cmp.Diff(tc.wantErr, errs.Error()); diff != "" {
					t.Fatal("errors (-want,+got):\n", diff)
				}
				return
			}
			if errs != nil {
				t.Fatal("ParseSpec =", errs)
			}
			if diff := cmp.Diff(tc.want, got, specComparer); diff != "" {
				t.Error("ParseSpec (-want,+got):\n", diff)
			}
		})
	}
}

// TestRoutingAgrees: the routing part of ParseSpec (the webhook) and
// ParseRouting (the activator) agree for the same annotations.
func TestRoutingAgrees(t *testing.T) {
	for _, ann := range []map[string]string{
		nil,
		{KeyAnnotationKey: "query:id", SlotsAnnotationKey: "7"},
		{SpaceAnnotationKey: "shop/x", SlotsAnnotationKey: " 65536 "},
	} {
		r, err := ParseRouting("shop", "cart", ann)
		if err != nil {
			t.Fatal(err)
		}
		s, errs := ParseSpec("shop", "cart", ann, defaults())
		if errs != nil {
			t.Fatal(errs)
		}
		if diff := cmp.Diff(r, s.Routing, specComparer); diff != "" {
			t.Errorf("%v: ParseRouting and ParseSpec disagree (-routing,+spec):\n%s", ann, diff)
		}
	}
}
