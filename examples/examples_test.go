package examples

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"

	"github.com/kstate-dev/kstate/examples/cart"
	"github.com/kstate-dev/kstate/examples/join"
	"github.com/kstate-dev/kstate/examples/visitors"
	"github.com/kstate-dev/kstate/pkg/keyspec"
)

func TestRegistry(t *testing.T) {
	if diff := cmp.Diff([]string{"cart", "counter", "join", "visitors"}, Names()); diff != "" {
		t.Errorf("Names (-want +got):\n%s", diff)
	}
	for _, name := range Names() {
		e, err := Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		if e.Name != name || e.Handler == nil || e.Handler() == nil {
			t.Errorf("example %q: name %q, handler set %v", name, e.Name, e.Handler != nil)
		}
		if e.Key != "" {
			if _, err := keyspec.Parse(e.Key); err != nil {
				t.Errorf("example %q: key %q: %v", name, e.Key, err)
			}
		}
		if try := e.Try("127.0.0.1:9999"); !strings.Contains(try, "http://127.0.0.1:9999/") {
			t.Errorf("example %q: Try does not use the address: %s", name, try)
		}
	}
	_, err := Lookup("nope")
	if want := `unknown example "nope": expected one of cart, counter, join, visitors`; err == nil || err.Error() != want {
		t.Errorf("Lookup(nope) = %v, want %q", err, want)
	}
}

// object is the part of a Kubernetes object the checks below read.
type object struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		// Service
		Template struct {
			Metadata struct {
				Annotations map[string]string `json:"annotations"`
			} `json:"metadata"`
			Spec struct {
				Containers []struct {
					Image string `json:"image"`
				} `json:"containers"`
			} `json:"spec"`
		} `json:"template"`
		// Trigger
		Broker string `json:"broker"`
		Filter struct {
			Attributes map[string]string `json:"attributes"`
		} `json:"filter"`
		Subscriber ref `json:"subscriber"`
		// SinkBinding
		Subject objRef `json:"subject"`
		Sink    ref    `json:"sink"`
	} `json:"spec"`
}

type ref struct {
	Ref objRef `json:"ref"`
}

type objRef struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Name       string `json:"name"`
}

// readObjects reads a YAML file of objects separated by "---" lines. Every
// file must start with a comment that says it needs kstate installed.
func readObjects(t *testing.T, path string) []object {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("# ")) || !bytes.Contains(b[:bytes.Index(b, []byte("\napiVersion:"))], []byte("kstate installed")) {
		t.Errorf("%s: the comment at the top must say it needs kstate installed", path)
	}
	var out []object
	for i, doc := range regexp.MustCompile(`(?m)^---$`).Split(string(b), -1) {
		var o object
		// Strict: a field the struct above does not model, misspelled or
		// misplaced, fails the test.
		if err := yaml.UnmarshalStrict([]byte(doc), &o); err != nil {
			t.Fatalf("%s: document %d: %v", path, i, err)
		}
		out = append(out, o)
	}
	return out
}

// TestServiceYAML checks each example's service.yaml: a Knative Service
// named as the example, with valid kstate annotations and a ko image of the
// example's command.
func TestServiceYAML(t *testing.T) {
	for _, name := range Names() {
		t.Run(name, func(t *testing.T) {
			objs := readObjects(t, filepath.Join(name, "service.yaml"))
			if len(objs) != 1 {
				t.Fatalf("service.yaml has %d objects, want 1", len(objs))
			}
			svc := objs[0]
			if svc.APIVersion != "serving.knative.dev/v1" || svc.Kind != "Service" || svc.Metadata.Name != name {
				t.Errorf("got %s %s %q, want serving.knative.dev/v1 Service %q", svc.APIVersion, svc.Kind, svc.Metadata.Name, name)
			}
			ann := svc.Spec.Template.Metadata.Annotations
			if ann["kstate.dev/enabled"] != "true" {
				t.Errorf(`kstate.dev/enabled = %q, want "true"`, ann["kstate.dev/enabled"])
			}
			if _, err := keyspec.Parse(ann["kstate.dev/key"]); err != nil {
				t.Errorf("kstate.dev/key: %v", err)
			}
			if d := ann["kstate.dev/durability"]; d != "async" && d != "sync" {
				t.Errorf(`kstate.dev/durability = %q, want "async" or "sync"`, d)
			}
			for k := range ann {
				if !strings.HasPrefix(k, "kstate.dev/") {
					t.Errorf("unexpected annotation %q", k)
				}
			}
			cs := svc.Spec.Template.Spec.Containers
			want := "ko://github.com/kstate-dev/kstate/examples/" + name + "/cmd/" + name
			if len(cs) != 1 || cs[0].Image != want {
				t.Fatalf("containers = %+v, want one with image %s", cs, want)
			}
			if _, err := os.Stat(filepath.Join(name, "cmd", name, "main.go")); err != nil {
				t.Errorf("the image's command: %v", err)
			}
		})
	}
}

// TestBrokerYAML checks each example's broker.yaml: its Triggers filter on
// exactly the event types the example's function takes (to its Service) and
// emits (to event-display), on the file's Broker, and a SinkBinding sends
// the emitted events to that Broker.
func TestBrokerYAML(t *testing.T) {
	tests := []struct {
		name    string
		takes   []string
		emits   []string
		binding bool
	}{
		{name: "counter", takes: []string{"counter.add"}},
		{name: "cart", takes: []string{cart.TypeItemAdded, cart.TypeItemRemoved, cart.TypeCheckedOut}, emits: []string{cart.TypeCartCheckedOut}, binding: true},
		{name: "visitors", takes: []string{visitors.TypeViewed}},
		{name: "join", takes: []string{join.TypeReading}, emits: []string{join.TypeJoined}, binding: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var brokers, takes, emits []string
			binding := false
			objs := readObjects(t, filepath.Join(tc.name, "broker.yaml"))
			for _, o := range objs {
				switch o.APIVersion + " " + o.Kind {
				case "eventing.knative.dev/v1 Broker":
					brokers = append(brokers, o.Metadata.Name)
				}
			}
			if len(brokers) != 1 || brokers[0] != tc.name {
				t.Fatalf("brokers = %v, want one named %q", brokers, tc.name)
			}
			for _, o := range objs {
				switch o.APIVersion + " " + o.Kind {
				case "eventing.knative.dev/v1 Broker":
				case "eventing.knative.dev/v1 Trigger":
					if o.Spec.Broker != tc.name {
						t.Errorf("trigger %s: broker %q, want %q", o.Metadata.Name, o.Spec.Broker, tc.name)
					}
					if len(o.Spec.Filter.Attributes) != 1 {
						t.Errorf("trigger %s: filter %v, want one on type", o.Metadata.Name, o.Spec.Filter.Attributes)
					}
					sub := o.Spec.Subscriber.Ref
					if sub.APIVersion != "serving.knative.dev/v1" || sub.Kind != "Service" {
						t.Errorf("trigger %s: subscriber %+v, want a Knative Service", o.Metadata.Name, sub)
					}
					switch sub.Name {
					case tc.name:
						takes = append(takes, o.Spec.Filter.Attributes["type"])
					case "event-display":
						emits = append(emits, o.Spec.Filter.Attributes["type"])
					default:
						t.Errorf("trigger %s: subscriber %q, want %q or event-display", o.Metadata.Name, sub.Name, tc.name)
					}
				case "sources.knative.dev/v1 SinkBinding":
					binding = true
					if s := o.Spec.Subject; s.Kind != "Service" || s.Name != tc.name {
						t.Errorf("sinkbinding %s: subject %+v, want Service %q", o.Metadata.Name, s, tc.name)
					}
					if s := o.Spec.Sink.Ref; s.Kind != "Broker" || s.Name != tc.name {
						t.Errorf("sinkbinding %s: sink %+v, want Broker %q", o.Metadata.Name, s, tc.name)
					}
				case "serving.knative.dev/v1 Service":
					if o.Metadata.Name != "event-display" {
						t.Errorf("unexpected Service %q", o.Metadata.Name)
					}
				default:
					t.Errorf("unexpected object %s %s %q", o.APIVersion, o.Kind, o.Metadata.Name)
				}
			}
			slices.Sort(takes)
			slices.Sort(emits)
			slices.Sort(tc.takes)
			slices.Sort(tc.emits)
			if diff := cmp.Diff(tc.takes, takes); diff != "" {
				t.Errorf("types delivered to the Service (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.emits, emits); diff != "" {
				t.Errorf("types delivered to event-display (-want +got):\n%s", diff)
			}
			if binding != tc.binding {
				t.Errorf("SinkBinding present = %v, want %v", binding, tc.binding)
			}
		})
	}
}
