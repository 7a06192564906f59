package resources

import (
	"flag"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/kstate-dev/kstate/pkg/agent"
	"github.com/kstate-dev/kstate/pkg/apis/config"
	"github.com/kstate-dev/kstate/pkg/apis/kstate"
)

func defaults(t *testing.T, kv ...string) *config.Defaults {
	t.Helper()
	data := map[string]string{config.AgentImageKey: "example.com/agent:1"}
	for i := 0; i < len(kv); i += 2 {
		data[kv[i]] = kv[i+1]
	}
	d, err := config.NewDefaultsConfigFromMap(data)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func spec(t *testing.T, d *config.Defaults, ann map[string]string) *kstate.Spec {
	t.Helper()
	s, errs := kstate.ParseSpec("shop", "cart", ann, d)
	if errs != nil {
		t.Fatal(errs)
	}
	return s
}

var (
	podName = corev1.EnvVar{Name: "KSTATE_POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}
	podIP   = corev1.EnvVar{Name: "KSTATE_POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}}
)

func storeURL(secret, key string) corev1.EnvVar {
	return corev1.EnvVar{Name: "KSTATE_STORE_URL", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: secret}, Key: key}}}
}

func TestMakeAgentEnv(t *testing.T) {
	tests := []struct {
		name string
		d    []string
		ann  map[string]string
		port int32
		want []corev1.EnvVar
	}{{
		name: "defaults",
		ann:  map[string]string{kstate.EnabledAnnotationKey: "true"},
		port: 9081,
		want: []corev1.EnvVar{
			podName, podIP,
			{Name: "KSTATE_POD_ADDR", Value: "$(KSTATE_POD_IP):8080"},
			{Name: "KSTATE_ADDR", Value: ":8080"},
			{Name: "KSTATE_ADMIN_ADDR", Value: ":9181"},
			{Name: "KSTATE_FUNCTION_ADDR", Value: "127.0.0.1:9081"},
			{Name: "KSTATE_SPACE", Value: "shop/cart"},
			{Name: "KSTATE_SLOTS", Value: "4096"},
			{Name: "KSTATE_DURABILITY", Value: "async"},
			{Name: "KSTATE_FLUSH_INTERVAL", Value: "100ms"},
			{Name: "KSTATE_MAX_DIRTY_BYTES", Value: "67108864"},
			{Name: "KSTATE_PRELOAD_ENTITIES", Value: "100000"},
			{Name: "KSTATE_PRELOAD_BYTES", Value: "134217728"},
			{Name: "KSTATE_PRELOAD_GATE", Value: "10s"},
			{Name: "KSTATE_DEDUP_WINDOW", Value: "32"},
			{Name: "KSTATE_DRAIN_TIMEOUT", Value: "25s"},
			storeURL("kstate-store", "url"),
		},
	}, {
		name: "every annotation, config-kstate changed",
		ann: map[string]string{
			kstate.EnabledAnnotationKey:       "true",
			kstate.KeyAnnotationKey:           "header:x-cart-id",
			kstate.SpaceAnnotationKey:         "shop/carts",
			kstate.SlotsAnnotationKey:         "512",
			kstate.DurabilityAnnotationKey:    "sync",
			kstate.FlushIntervalAnnotationKey: "2s",
			kstate.MaxDirtyBytesAnnotationKey: "1Gi",
			kstate.PreloadAnnotationKey:       "bytes=1Mi,entities=10",
			kstate.StoreAnnotationKey:         "redis-creds:REDIS_URL",
			kstate.DedupWindowAnnotationKey:   "100",
		},
		port: 50051,
		want: []corev1.EnvVar{
			podName, podIP,
			{Name: "KSTATE_POD_ADDR", Value: "$(KSTATE_POD_IP):8080"},
			{Name: "KSTATE_ADDR", Value: ":8080"},
			{Name: "KSTATE_ADMIN_ADDR", Value: ":9181"},
			{Name: "KSTATE_FUNCTION_ADDR", Value: "127.0.0.1:50051"},
			{Name: "KSTATE_SPACE", Value: "shop/carts"},
			{Name: "KSTATE_SLOTS", Value: "512"},
			{Name: "KSTATE_KEY", Value: "header:X-Cart-Id"}, // canonical form
			{Name: "KSTATE_DURABILITY", Value: "sync"},
			{Name: "KSTATE_FLUSH_INTERVAL", Value: "2s"},
			{Name: "KSTATE_MAX_DIRTY_BYTES", Value: "1073741824"},
			{Name: "KSTATE_PRELOAD_ENTITIES", Value: "10"},
			{Name: "KSTATE_PRELOAD_BYTES", Value: "1048576"},
			{Name: "KSTATE_PRELOAD_GATE", Value: "10s"},
			{Name: "KSTATE_DEDUP_WINDOW", Value: "100"},
			{Name: "KSTATE_DRAIN_TIMEOUT", Value: "25s"},
			storeURL("redis-creds", "REDIS_URL"),
		},
	}, {
		name: "defaults from config-kstate",
		d: []string{
			config.DrainTimeoutKey, "40s", config.RevisionTimeoutSecondsKey, "300",
			config.PreloadKey, "entities=5", config.StoreKey, "shared-redis",
			config.DurabilityKey, "sync", config.FlushIntervalKey, "10ms",
		},
		ann:  map[string]string{kstate.EnabledAnnotationKey: "true", kstate.PreloadAnnotationKey: "bytes=1Ki"},
		port: 9081,
		want: []corev1.EnvVar{
			podName, podIP,
			{Name: "KSTATE_POD_ADDR", Value: "$(KSTATE_POD_IP):8080"},
			{Name: "KSTATE_ADDR", Value: ":8080"},
			{Name: "KSTATE_ADMIN_ADDR", Value: ":9181"},
			{Name: "KSTATE_FUNCTION_ADDR", Value: "127.0.0.1:9081"},
			{Name: "KSTATE_SPACE", Value: "shop/cart"},
			{Name: "KSTATE_SLOTS", Value: "4096"},
			{Name: "KSTATE_DURABILITY", Value: "sync"},
			{Name: "KSTATE_FLUSH_INTERVAL", Value: "10ms"},
			{Name: "KSTATE_MAX_DIRTY_BYTES", Value: "67108864"},
			{Name: "KSTATE_PRELOAD_ENTITIES", Value: "5"},
			{Name: "KSTATE_PRELOAD_BYTES", Value: "1024"},
			{Name: "KSTATE_PRELOAD_GATE", Value: "10s"},
			{Name: "KSTATE_DEDUP_WINDOW", Value: "32"},
			{Name: "KSTATE_DRAIN_TIMEOUT", Value: "40s"},
			storeURL("shared-redis", "url"),
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := defaults(t, tc.d...)
			got := MakeAgentEnv(spec(t, d, tc.ann), d, tc.port)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Error("MakeAgentEnv (-want,+got):\n", diff)
			}
			// What the agent makes of it, once the kubelet resolved it.
			cfg := loadAgent(t, got)
			if cfg.Space != envValue(got, EnvSpace) || cfg.Slots != spec(t, d, tc.ann).Slots {
				t.Errorf("agent config space/slots = %s/%d", cfg.Space, cfg.Slots)
			}
		})
	}
}

// envValue is the literal value of name in env.
func envValue(env []corev1.EnvVar, name string) string {
	for _, e := range env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// loadAgent resolves env as the kubelet would in a pod named cart-abc with
// IP 10.1.2.3 whose store Secret holds redis://redis:6379, and loads it
// into the agent's Config: every variable must be one the agent reads, and
// every value one it accepts.
func loadAgent(t *testing.T, env []corev1.EnvVar) agent.Config {
	t.Helper()
	resolved := map[string]string{}
	for _, e := range env {
		v := e.Value
		switch {
		case e.ValueFrom == nil:
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
			v = "cart-abc"
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "status.podIP":
			v = "10.1.2.3"
		case e.ValueFrom.SecretKeyRef != nil:
			v = "redis://redis:6379"
		default:
			t.Fatalf("%s: unexpected source %+v", e.Name, e.ValueFrom)
		}
		for name, val := range resolved { // $(VAR) of earlier variables
			v = strings.ReplaceAll(v, "$("+name+")", val)
		}
		resolved[e.Name] = v
	}

	cfg := agent.DefaultConfig()
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	known := map[string]bool{}
	lookup := func(name string) (string, bool) {
		known[name] = true
		v, ok := resolved[name]
		return v, ok
	}
	if err := cfg.Load(fs, nil, lookup); err != nil {
		t.Fatalf("the agent rejects the environment: %v", err)
	}
	for name := range resolved {
		if name != EnvPodIP && !known[name] {
			t.Errorf("%s is not a variable the agent reads", name)
		}
	}
	if cfg.Pod != "cart-abc" || cfg.AdvertiseAddr != "10.1.2.3:8080" || cfg.StoreURL != "redis://redis:6379" {
		t.Errorf("agent identity = pod %q addr %q store %q", cfg.Pod, cfg.AdvertiseAddr, cfg.StoreURL)
	}
	if cfg.Addr != ":8080" || cfg.AdminAddr != AdminAddr {
		t.Errorf("agent addresses = %q, %q", cfg.Addr, cfg.AdminAddr)
	}
	return cfg
}

func TestAgentConfigFromEnv(t *testing.T) {
	d := defaults(t, config.DrainTimeoutKey, "30s", config.RevisionTimeoutSecondsKey, "300")
	s := spec(t, d, map[string]string{
		kstate.EnabledAnnotationKey:       "true",
		kstate.KeyAnnotationKey:           "path:/carts/{key}",
		kstate.DurabilityAnnotationKey:    "sync",
		kstate.FlushIntervalAnnotationKey: "250ms",
		kstate.PreloadAnnotationKey:       "entities=7,bytes=3Ki",
		kstate.DedupWindowAnnotationKey:   "9",
		kstate.SlotsAnnotationKey:         "64",
		kstate.MaxDirtyBytesAnnotationKey: "2Mi",
	})
	cfg := loadAgent(t, MakeAgentEnv(s, d, 7000))
	want := agent.DefaultConfig()
	want.Pod, want.AdvertiseAddr, want.StoreURL = "cart-abc", "10.1.2.3:8080", "redis://redis:6379"
	want.AdminAddr = AdminAddr
	want.FunctionAddr = "127.0.0.1:7000"
	want.Space, want.Slots, want.KeySpec = "shop/cart", 64, "path:/carts/{key}"
	want.Durability = agent.DurabilitySync
	want.FlushInterval = 250 * time.Millisecond
	want.MaxDirtyBytes = 2 << 20
	want.PreloadEntities, want.PreloadBytes = 7, 3<<10
	want.DedupWindow = 9
	want.PreloadGate = PreloadGate
	want.DrainTimeout = 30 * time.Second
	if diff := cmp.Diff(want, cfg); diff != "" {
		t.Error("agent Config (-want,+got):\n", diff)
	}
}

func TestMakeAgentContainer(t *testing.T) {
	d := defaults(t, config.AgentCPURequestKey, "25m")
	s := spec(t, d, map[string]string{kstate.EnabledAnnotationKey: "true"})
	got := MakeAgentContainer(s, d, 9081)
	want := corev1.Container{
		Name:  "kstate-agent",
		Image: "example.com/agent:1",
		Ports: []corev1.ContainerPort{{Name: "http1", ContainerPort: 8080}},
		Env:   MakeAgentEnv(s, d, 9081),
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/.kstate/readyz"}},
			SuccessThreshold: 1,
		},
		LivenessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/.kstate/healthz"}},
			PeriodSeconds: 10, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: 6,
		},
		Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("25m")}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Error("MakeAgentContainer (-want,+got):\n", diff)
	}
	// The container does not share the Defaults' resource maps.
	got.Resources.Requests[corev1.ResourceCPU] = resource.MustParse("1")
	if q := d.AgentResources.Requests[corev1.ResourceCPU]; q.String() != "25m" {
		t.Errorf("MakeAgentContainer shares its resources with the Defaults: %s", q.String())
	}
}

func TestFunctionAddr(t *testing.T) {
	if got := FunctionAddr(9081); got != "127.0.0.1:9081" {
		t.Errorf("FunctionAddr(9081) = %q", got)
	}
	// The admin API listens on every interface of the pod, so the
	// controller reaches it at <podIP>:AdminPort.
	if host, port, err := net.SplitHostPort(AdminAddr); err != nil || host != "" || port != strconv.Itoa(AdminPort) {
		t.Errorf("AdminAddr %q is not every interface's AdminPort %d", AdminAddr, AdminPort)
	}
}
