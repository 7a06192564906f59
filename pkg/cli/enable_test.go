package cli

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	apierrs "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	ktesting "k8s.io/client-go/testing"
)

func TestEnableDisable(t *testing.T) {
	tests := []struct {
		name string
		args []string
		// contextNS is the kubeconfig context's namespace ("" for testNS).
		contextNS string
		// wantOut is stdout; wantAnn the template annotations afterwards.
		wantOut     string
		wantErrOut  string
		wantAnn     map[string]string
		wantPatches int
	}{{
		name: "enable a plain service with every flag",
		args: []string{"enable", "plain", "--key", "path:/carts/{key}", "--durability", "sync", "--slots", "128", "--flush-interval", "50ms", "--space", "shop/carts", "--store", "redis-secret:url"},
		wantOut: lines(
			`Service "plain" in namespace "shop" updated:`,
			`  kstate.dev/enabled: (unset) → "true"`,
			`  kstate.dev/key: (unset) → "path:/carts/{key}"`,
			`  kstate.dev/space: (unset) → "shop/carts"`,
			`  kstate.dev/slots: (unset) → "128"`,
			`  kstate.dev/durability: (unset) → "sync"`,
			`  kstate.dev/flush-interval: (unset) → "50ms"`,
			`  kstate.dev/store: (unset) → "redis-secret:url"`,
		),
		// The fake API server runs no webhook, so nothing injects the agent.
		wantErrOut: "Warning: the kstate webhook did not add the kstate-agent container to service \"plain\": is kstate installed? (kubectl get pods -n kstate-system)\n",
		wantAnn: map[string]string{
			"kstate.dev/enabled":        "true",
			"kstate.dev/key":            "path:/carts/{key}",
			"kstate.dev/space":          "shop/carts",
			"kstate.dev/slots":          "128",
			"kstate.dev/durability":     "sync",
			"kstate.dev/flush-interval": "50ms",
			"kstate.dev/store":          "redis-secret:url",
		},
		wantPatches: 1,
	}, {
		name:    "enable an enabled service with the same values: no change, no patch",
		args:    []string{"enable", "cart", "--key", "header:cart-id", "--slots", "64"},
		wantOut: lines(`Service "cart" in namespace "shop": no change`),
		wantAnn: cartService().Spec.Template.Annotations,
	}, {
		name: "enable an enabled service with a new key: only the key changes",
		args: []string{"enable", "cart", "--key", "query:cart"},
		wantOut: lines(
			`Service "cart" in namespace "shop" updated:`,
			`  kstate.dev/key: "header:Cart-Id" → "query:cart"`,
		),
		wantAnn: map[string]string{
			"kstate.dev/enabled": "true",
			"kstate.dev/key":     "query:cart",
			"kstate.dev/slots":   "64",
			"kstate.dev/space":   "shop/cart",
		},
		wantPatches: 1,
	}, {
		name: "disable keeps the other kstate annotations",
		args: []string{"disable", "cart"},
		wantOut: lines(
			`Service "cart" in namespace "shop" updated:`,
			`  kstate.dev/enabled: "true" → "false"`,
		),
		wantAnn: map[string]string{
			"kstate.dev/enabled": "false",
			"kstate.dev/key":     "header:Cart-Id",
			"kstate.dev/slots":   "64",
			"kstate.dev/space":   "shop/cart",
		},
		wantPatches: 1,
	}, {
		name:    "disable a service that never had kstate: no change",
		args:    []string{"disable", "plain"},
		wantOut: lines(`Service "plain" in namespace "shop": no change`),
	}, {
		name:      "-n overrides the context's namespace",
		contextNS: "elsewhere",
		args:      []string{"disable", "cart", "-n", testNS},
		wantOut:   lines(`Service "cart" in namespace "shop" updated:`, `  kstate.dev/enabled: "true" → "false"`),
		wantAnn: map[string]string{
			"kstate.dev/enabled": "false",
			"kstate.dev/key":     "header:Cart-Id",
			"kstate.dev/slots":   "64",
			"kstate.dev/space":   "shop/cart",
		},
		wantPatches: 1,
	}, {
		name: "-o json",
		args: []string{"enable", "cart", "--durability", "async", "-o", "json"},
		wantOut: `{
  "service": "cart",
  "namespace": "shop",
  "changes": [
    {
      "annotation": "kstate.dev/durability",
      "old": null,
      "new": "async"
    }
  ]
}
`,
		wantAnn: map[string]string{
			"kstate.dev/enabled":    "true",
			"kstate.dev/key":        "header:Cart-Id",
			"kstate.dev/slots":      "64",
			"kstate.dev/space":      "shop/cart",
			"kstate.dev/durability": "async",
		},
		wantPatches: 1,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeCluster(t, holdsOwnSlots(t), servingObjects(), kubeObjects())
			if tt.contextNS != "" {
				f.contextNS = tt.contextNS
			}
			var patches []ktesting.PatchAction
			f.serving.PrependReactor("patch", "services", func(a ktesting.Action) (bool, runtime.Object, error) {
				patches = append(patches, a.(ktesting.PatchAction))
				return false, nil, nil
			})
			out, errOut, err := f.run(t, tt.args...)
			if err != nil {
				t.Fatalf("%v: %v", tt.args, err)
			}
			if diff := cmp.Diff(tt.wantOut, out); diff != "" {
				t.Errorf("stdout (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantErrOut, errOut); diff != "" {
				t.Errorf("stderr (-want +got):\n%s", diff)
			}
			if len(patches) != tt.wantPatches {
				t.Fatalf("%d patches, want %d", len(patches), tt.wantPatches)
			}
			for _, pa := range patches {
				// A merge patch guarded by the resourceVersion that was read.
				if pa.GetPatchType() != types.MergePatchType {
					t.Errorf("patch type %s, want a JSON merge patch", pa.GetPatchType())
				}
				var body struct {
					Metadata struct {
						ResourceVersion string `json:"resourceVersion"`
					} `json:"metadata"`
				}
				if err := json.Unmarshal(pa.GetPatch(), &body); err != nil || body.Metadata.ResourceVersion == "" {
					t.Errorf("patch %s has no resourceVersion (%v)", pa.GetPatch(), err)
				}
			}
			if tt.wantAnn == nil {
				return
			}
			svc, err := f.serving.ServingV1().Services(testNS).Get(context.Background(), tt.args[1], metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.wantAnn, svc.Spec.Template.Annotations); diff != "" {
				t.Errorf("annotations (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEnableNoWarningWhenAgentInjected(t *testing.T) {
	// cart's template has the kstate-agent container, as the webhook leaves it.
	f := newFakeCluster(t, holdsOwnSlots(t), servingObjects(), kubeObjects())
	_, errOut, err := f.run(t, "enable", "cart", "--flush-interval", "1s")
	if err != nil {
		t.Fatal(err)
	}
	if errOut != "" {
		t.Errorf("stderr = %q, want nothing", errOut)
	}
}

// TestEnableRetriesConflicts: a patch that meets a newer resourceVersion
// (Knative updating the Service's status in between) is retried on the
// Service read again; a Service that keeps changing gets a clear error.
func TestEnableRetriesConflicts(t *testing.T) {
	for _, tc := range []struct {
		name      string
		conflicts int
		wantErr   string
	}{
		{name: "one conflict, then the patch lands", conflicts: 1},
		{name: "conflicts every time", conflicts: 100,
			wantErr: `service "cart" in namespace "shop" kept changing while it was being updated; run the command again`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeCluster(t, holdsOwnSlots(t), servingObjects(), kubeObjects())
			patches := 0
			f.serving.PrependReactor("patch", "services", func(ktesting.Action) (bool, runtime.Object, error) {
				patches++
				if patches <= tc.conflicts {
					return true, nil, apierrs.NewConflict(schema.GroupResource{Group: "serving.knative.dev", Resource: "services"}, "cart", errors.New("the object has been modified"))
				}
				return false, nil, nil
			})
			_, _, err := f.run(t, "enable", "cart", "--flush-interval", "1s")
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if patches != 2 {
				t.Errorf("%d patches, want 2 (one conflict, one retry)", patches)
			}
			svc, err := f.serving.ServingV1().Services(testNS).Get(context.Background(), "cart", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got := svc.Spec.Template.Annotations["kstate.dev/flush-interval"]; got != "1s" {
				t.Errorf("flush-interval %q after the retry, want 1s", got)
			}
		})
	}
}
