package cli

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
)

// errorObjects adds to the fixture a Service that has no revision yet and
// one whose template turned kstate on but whose latest ready revision is
// still the old one without it.
func errorObjects() []runtime.Object {
	fresh := &servingv1.Service{ObjectMeta: metav1.ObjectMeta{Name: "fresh", Namespace: testNS}}
	rolling := cartService()
	rolling.Name = "rolling"
	rolling.Status.LatestReadyRevisionName = "cart-00001"
	return append(servingObjects(), fresh, rolling)
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		// flagsOnly: the error must come before any client is built.
		flagsOnly bool
		want      string
	}{
		// Flags and arguments, checked before the cluster.
		{name: "enable: bad key spec", flagsOnly: true, args: []string{"enable", "cart", "--key", "headr:x"},
			want: `--key: key spec "headr:x": unknown source "headr"; expected one of header:NAME, ce:ATTRIBUTE, path:/prefix/{key}, query:NAME`},
		{name: "enable: slots 0", flagsOnly: true, args: []string{"enable", "cart", "--slots", "0"},
			want: `--slots: "0" is not a slot count: want an integer from 1 to 65536 (default 4096)`},
		{name: "enable: slots above MaxSlots", flagsOnly: true, args: []string{"enable", "cart", "--slots", "65537"},
			want: `--slots: "65537" is not a slot count: want an integer from 1 to 65536 (default 4096)`},
		{name: "enable: durability", flagsOnly: true, args: []string{"enable", "cart", "--durability", "fast"},
			want: `--durability: "fast" is not a durability: want "async" or "sync"`},
		{name: "enable: flush interval", flagsOnly: true, args: []string{"enable", "cart", "--flush-interval", "2h"},
			want: `--flush-interval: "2h" is not a duration from 1ms to 1m0s (such as 100ms or 2s)`},
		{name: "enable: store of another namespace", flagsOnly: true, args: []string{"enable", "cart", "--store", "other/redis"},
			want: `--store: "other/redis" is not a store Secret: a Secret of another namespace cannot be used; want SECRET or SECRET:KEY naming a Secret in the Service's namespace`},
		{name: "bad -o", flagsOnly: true, args: []string{"describe", "cart", "-o", "xml"},
			want: `-o "xml": expected table, json or yaml`},
		{name: "missing argument", flagsOnly: true, args: []string{"owner", "cart"},
			want: "owner: expected SERVICE KEY, got 1 argument(s); see `kstate owner --help`"},
		{name: "owner: empty key", flagsOnly: true, args: []string{"owner", "cart", ""},
			want: `KEY "": invalid entity key: empty`},
		{name: "get: key with a control character", flagsOnly: true, args: []string{"get", "cart", "a\nb"},
			want: `KEY "a\nb": invalid entity key: contains control character U+000A at byte 1`},
		{name: "get: bad Redis URL", flagsOnly: true, args: []string{"get", "cart", "alice", "--redis", "http://127.0.0.1:6379"},
			want: `--redis: store URL "http://127.0.0.1:6379": scheme must be one of redis, rediss, redis+sentinel, redis+cluster (rediss+sentinel, rediss+cluster for TLS)`},
		{name: "send: no key", flagsOnly: true, args: []string{"send", "cart", "--type", "t"},
			want: `--key is required: the entity key of the event`},
		{name: "send: bad mode", flagsOnly: true, args: []string{"send", "cart", "--key", "k", "--type", "t", "--mode", "batch"},
			want: `--mode "batch": expected binary or structured`},
		{name: "send: data not JSON", flagsOnly: true, args: []string{"send", "cart", "--key", "k", "--type", "t", "--data", "{"},
			want: `--data: not valid JSON: {`},
		{name: "send: bad key spec", flagsOnly: true, args: []string{"send", "cart", "--key", "k", "--type", "t", "--key-spec", "ce:id"},
			want: `--key-spec: key spec "ce:id": CloudEvents attribute "id" cannot be an entity key: it is unique per event, so every event would be its own entity; use ce:subject, ce:partitionkey or another extension`},
		{name: "send: bad URL", flagsOnly: true, args: []string{"send", "cart", "--key", "k", "--type", "t", "--url", "ftp://x"},
			want: `--url "ftp://x": expected an absolute http:// or https:// URL`},
		{name: "send: bad ingress", flagsOnly: true, args: []string{"send", "cart", "--key", "k", "--type", "t", "--url", "http://cart.shop", "--ingress", "10.0.0.1"},
			want: `--ingress "10.0.0.1": expected HOST:PORT of the cluster's ingress, e.g. 10.0.0.1:80`},
		{name: "send: no type", flagsOnly: true, args: []string{"send", "cart", "--key", "k", "--url", "http://127.0.0.1:1", "--key-spec", "ce:partitionkey"},
			want: `--type is required: the CloudEvents type of the event`},
		{name: "send: type against a ce:type key spec", flagsOnly: true,
			args: []string{"send", "cart", "--key", "k", "--type", "other", "--url", "http://127.0.0.1:1", "--key-spec", "ce:type"},
			want: `--type "other": the key spec ce:type takes the key from the event type, so leave --type out (or make it the key)`},
		{name: "send: unreachable URL", flagsOnly: true,
			args: []string{"send", "cart", "--key", "k", "--type", "t", "--url", "http://127.0.0.1:1", "--key-spec", "ce:partitionkey"},
			want: `cannot reach service "cart" at http://127.0.0.1:1: dial tcp 127.0.0.1:1: connect: connection refused`},

		// Against the cluster.
		{name: "enable: space of another namespace", args: []string{"enable", "cart", "--space", "other/cart"},
			want: `--space: "other/cart" is an entity space of namespace "other": a Service may only use a space of its own namespace, such as shop/cart`},
		{name: "enable: unknown service", args: []string{"enable", "nope"},
			want: `service "nope" not found in namespace "shop"`},
		{name: "disable: unknown service", args: []string{"disable", "nope"},
			want: `service "nope" not found in namespace "shop"`},
		{name: "describe: unknown service", args: []string{"describe", "nope"},
			want: `service "nope" not found in namespace "shop"`},
		{name: "owner: unknown service", args: []string{"owner", "nope", "k"},
			want: `service "nope" not found in namespace "shop"`},
		{name: "owner: service in another namespace", args: []string{"owner", "cart", "k", "-n", "other"},
			want: `service "cart" not found in namespace "other"`},
		{name: "get: unknown service", args: []string{"get", "nope", "k", "--redis", "redis://127.0.0.1:1"},
			want: `service "nope" not found in namespace "shop"`},
		{name: "send: unknown service", args: []string{"send", "nope", "--key", "k", "--type", "t"},
			want: `service "nope" not found in namespace "shop"`},
		{name: "owner: not a kstate service", args: []string{"owner", "plain", "k"},
			want: `service "plain" in namespace "shop" is not a kstate service (kstate.dev/enabled is not "true"); turn kstate on with ` + "`kn kstate enable plain`"},
		{name: "owner: kstate revision not ready yet", args: []string{"owner", "rolling", "k"},
			want: `service "rolling" in namespace "shop": its latest ready revision "cart-00001" is not a kstate revision yet (kstate.dev/enabled is not "true" on it); ` +
				"the revision with kstate on is not ready: see `kn service describe rolling`"},
		{name: "owner: no ready revision", args: []string{"owner", "fresh", "k"},
			want: `service "fresh" in namespace "shop" has no ready revision yet`},
		{name: "send: no URL yet", args: []string{"send", "fresh", "--key", "k", "--type", "t"},
			want: "service \"fresh\" in namespace \"shop\" has no URL yet (is it ready? see `kn service describe fresh`); pass --url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeCluster(t, holdsOwnSlots(t), errorObjects(), kubeObjects())
			p := &Params{NewClients: func(string) (*Clients, error) {
				if tt.flagsOnly {
					t.Errorf("clients were built before the flags were rejected")
					return nil, errors.New("test: no cluster")
				}
				return &Clients{Kube: f.kube, Serving: f.serving, Namespace: testNS}, nil
			}}
			_, _, err := runCommand(t, p, tt.args...)
			if diff := cmp.Diff(tt.want, errText(err)); diff != "" {
				t.Errorf("%q: error (-want +got):\n%s", tt.args, diff)
			}
		})
	}
}

func TestNoCluster(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	t.Setenv("HOME", t.TempDir())
	t.Setenv("KUBECONFIG", "")
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	commands := [][]string{
		{"enable", "cart"},
		{"disable", "cart"},
		{"describe", "cart"},
		{"owner", "cart", "k"},
		{"get", "cart", "k", "--redis", "redis://127.0.0.1:1"},
		{"send", "cart", "--key", "k", "--type", "t"},
	}
	for _, args := range commands {
		t.Run(args[0], func(t *testing.T) {
			_, _, err := runCommand(t, &Params{}, args...)
			want := "no cluster: no kubeconfig found (looked at ~/.kube/config) and not running in a cluster; " +
				"pass --kubeconfig or set KUBECONFIG (or run kstate locally with `kn kstate dev`)"
			if diff := cmp.Diff(want, errText(err)); diff != "" {
				t.Errorf("no kubeconfig: error (-want +got):\n%s", diff)
			}

			_, _, err = runCommand(t, &Params{}, append(args, "--kubeconfig", missing)...)
			want = "no cluster: --kubeconfig " + missing + ": stat " + missing + ": no such file or directory"
			if diff := cmp.Diff(want, errText(err)); diff != "" {
				t.Errorf("--kubeconfig missing: error (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNamespaceFromKubeconfig(t *testing.T) {
	// The kubeconfig context's namespace is used when -n is not given; the
	// clients are built from the file without talking to the cluster.
	kubeconfig := filepath.Join(t.TempDir(), "config")
	writeFile(t, kubeconfig, `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:1"}
contexts:
- name: ctx
  context: {cluster: c, user: u, namespace: team-a}
current-context: ctx
users:
- name: u
  user: {token: x}
`)
	c, err := newClients(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	p := &Params{}
	if got := p.namespace(c); got != "team-a" {
		t.Errorf("namespace = %q, want the context's team-a", got)
	}
	p.Namespace = "shop"
	if got := p.namespace(c); got != "shop" {
		t.Errorf("namespace with -n shop = %q, want shop", got)
	}
	if c.Host != "https://127.0.0.1:1" {
		t.Errorf("host = %q", c.Host)
	}

	// A cluster that does not answer is named in the error.
	_, _, err = runCommand(t, &Params{}, "describe", "cart", "--kubeconfig", kubeconfig)
	want := `getting service "cart" in namespace "team-a": cannot reach the cluster at https://127.0.0.1:1: dial tcp 127.0.0.1:1: connect: connection refused`
	if diff := cmp.Diff(want, errText(err)); diff != "" {
		t.Errorf("error (-want +got):\n%s", diff)
	}
}
