package config

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	logtesting "knative.dev/pkg/logging/testing"

	. "knative.dev/pkg/configmap/testing"
)

const testImage = "example.com/kstate-agent@sha256:1234"

func TestDefaultsConfigurationFromFile(t *testing.T) {
	// ConfigMapsFromTestFile checks the _example checksum, that the data
	// holds no key but agent-image and _example, and that no example line
	// ends in white space.
	cm, example := ConfigMapsFromTestFile(t, ConfigName, AgentImageKey)

	if _, err := NewDefaultsConfigFromConfigMap(cm); err != nil {
		t.Error("NewDefaultsConfigFromConfigMap(actual) =", err)
	}
	got, err := NewDefaultsConfigFromConfigMap(example)
	if err != nil {
		t.Fatal("NewDefaultsConfigFromConfigMap(example) =", err)
	}

	// The agent resources in the example show the syntax; by default there
	// are none. Every other example value must be the built-in default.
	wantResources := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("25m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("512Mi")},
	}
	if diff := cmp.Diff(wantResources, got.AgentResources); diff != "" {
		t.Error("example agent resources (-want,+got):\n", diff)
	}
	got.AgentResources = corev1.ResourceRequirements{}

	want := defaultDefaults()
	want.AgentImage = cm.Data[AgentImageKey]
	if diff := cmp.Diff(want, got); diff != "" {
		t.Error("Example does not represent the default config (-want,+got):\n", diff)
	}
}

func TestNewDefaultsConfigFromMap(t *testing.T) {
	withImage := func(kv ...string) map[string]string {
		m := map[string]string{AgentImageKey: testImage}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name    string
		data    map[string]string
		want    func(*Defaults)
		wantErr string
	}{{
		name: "image only",
		data: withImage(),
		want: func(d *Defaults) {},
	}, {
		name: "everything",
		data: withImage(
			DurabilityKey, "sync",
			FlushIntervalKey, "250ms",
			MaxDirtyBytesKey, "1Gi",
			PreloadKey, "bytes=1Mi",
			StoreKey, "redis-creds:connection",
			DedupWindowKey, "64",
			DrainTimeoutKey, "40s",
			RevisionTimeoutSecondsKey, "75",
			AgentMemoryRequestKey, "100Mi",
		),
		want: func(d *Defaults) {
			d.Durability = DurabilitySync
			d.FlushInterval = 250 * time.Millisecond
			d.MaxDirtyBytes = 1 << 30
			d.Preload.Bytes = 1 << 20
			d.Store = StoreRef{SecretName: "redis-creds", Key: "connection"}
			d.DedupWindow = 64
			d.DrainTimeout = 40 * time.Second
			d.RevisionTimeoutSeconds = 75
			d.AgentResources.Requests = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("100Mi")}
		},
	}, {
		name:    "no image",
		data:    map[string]string{},
		wantErr: "agent-image is required: the kstate-agent image the webhook injects",
	}, {
		name:    "blank image",
		data:    map[string]string{AgentImageKey: "  "},
		wantErr: "agent-image is required: the kstate-agent image the webhook injects",
	}, {
		name:    "bad durability",
		data:    withImage(DurabilityKey, "eventually"),
		wantErr: `durability: "eventually" is not a durability: want "async" or "sync"`,
	}, {
		name:    "flush interval too short",
		data:    withImage(FlushIntervalKey, "10us"),
		wantErr: `flush-interval: "10us" is not a duration from 1ms to 1m0s (such as 100ms or 2s)`,
	}, {
		name:    "bad bytes",
		data:    withImage(MaxDirtyBytesKey, "lots"),
		wantErr: `max-dirty-bytes: "lots" is not a byte size: want a quantity such as 64Mi or 1048576`,
	}, {
		name:    "bad preload",
		data:    withImage(PreloadKey, "entities=0"),
		wantErr: `preload: "entities=0" is not a preload budget: entities=0 is not an integer of at least 1`,
	}, {
		name:    "store in another namespace",
		data:    withImage(StoreKey, "other/kstate-store"),
		wantErr: `store: "other/kstate-store" is not a store Secret: a Secret of another namespace cannot be used; want SECRET or SECRET:KEY naming a Secret in the Service's namespace`,
	}, {
		name:    "dedup window too large",
		data:    withImage(DedupWindowKey, "5000"),
		wantErr: `dedup-window: "5000" is not a dedup window: want an integer from 1 to 1024`,
	}, {
		name:    "timeout shorter than the drain",
		data:    withImage(RevisionTimeoutSecondsKey, "59"),
		wantErr: "revision-timeout-seconds = 59: want at least 60 (queue-proxy drain 30s + drain-timeout 25s + 5s margin)",
	}, {
		name:    "longer drain needs a longer timeout",
		data:    withImage(DrainTimeoutKey, "100s", RevisionTimeoutSecondsKey, "120"),
		wantErr: "revision-timeout-seconds = 120: want at least 135 (queue-proxy drain 30s + drain-timeout 1m40s + 5s margin)",
	}, {
		name:    "bad quantity",
		data:    withImage(AgentCPURequestKey, "fast"),
		wantErr: `failed to parse "agent-cpu-request": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'`,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := NewDefaultsConfigFromMap(tc.data)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("error = %v\nwant    %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal("NewDefaultsConfigFromMap =", err)
			}
			want := defaultDefaults()
			want.AgentImage = testImage
			tc.want(want)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Error("NewDefaultsConfigFromMap (-want,+got):\n", diff)
			}
		})
	}
}

func TestMinRevisionTimeoutSeconds(t *testing.T) {
	for d, want := range map[time.Duration]int64{
		25 * time.Second:        60,
		25*time.Second + 1:      61, // rounded up
		time.Second:             36,
		10 * time.Minute:        635,
		2500 * time.Millisecond: 38,
	} {
		if got := MinRevisionTimeoutSeconds(d); got != want {
			t.Errorf("MinRevisionTimeoutSeconds(%v) = %d, want %d", d, got, want)
		}
	}
}

func TestDefaultsDeepCopy(t *testing.T) {
	d, err := NewDefaultsConfigFromMap(map[string]string{AgentImageKey: testImage, AgentCPURequestKey: "1"})
	if err != nil {
		t.Fatal(err)
	}
	c := d.DeepCopy()
	if diff := cmp.Diff(d, c); diff != "" {
		t.Fatal("DeepCopy differs (-orig,+copy):\n", diff)
	}
	c.AgentResources.Requests[corev1.ResourceCPU] = resource.MustParse("2")
	if got := d.AgentResources.Requests[corev1.ResourceCPU]; got.String() != "1" {
		t.Errorf("changing the copy changed the original: cpu request = %s", got.String())
	}
	if (*Defaults)(nil).DeepCopy() != nil {
		t.Error("nil.DeepCopy() != nil")
	}
}

func TestStore(t *testing.T) {
	store := NewStore(logtesting.TestLogger(t))
	store.OnConfigChanged(&corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: ConfigName},
		Data:       map[string]string{AgentImageKey: testImage, DurabilityKey: "sync"},
	})
	ctx := store.ToContext(context.Background())
	got := FromContext(ctx)
	if got == nil || got.Defaults == nil {
		t.Fatal("FromContext = nil after ToContext")
	}
	if got.Defaults.AgentImage != testImage || got.Defaults.Durability != DurabilitySync {
		t.Errorf("Defaults = %+v, want image %s and sync", got.Defaults, testImage)
	}
	// A bad update is not taken; the last good value stays.
	store.OnConfigChanged(&corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: ConfigName},
		Data:       map[string]string{AgentImageKey: testImage, DurabilityKey: "maybe"},
	})
	if d := store.Load().Defaults; d.Durability != DurabilitySync {
		t.Errorf("after a bad update Durability = %q, want the last good %q", d.Durability, DurabilitySync)
	}
	// Load hands out copies.
	store.Load().Defaults.AgentImage = "changed"
	if d := store.Load().Defaults; d.AgentImage != testImage {
		t.Errorf("Load shares its Defaults: AgentImage = %q", d.AgentImage)
	}
}

func TestFromContextOrDefaults(t *testing.T) {
	got := FromContextOrDefaults(context.Background())
	if diff := cmp.Diff(defaultDefaults(), got.Defaults); diff != "" {
		t.Error("FromContextOrDefaults(empty) (-want,+got):\n", diff)
	}
	d := defaultDefaults()
	d.AgentImage = testImage
	ctx := ToContext(context.Background(), &Config{Defaults: d})
	if got := FromContextOrDefaults(ctx).Defaults; got != d {
		t.Errorf("FromContextOrDefaults = %p, want the attached %p", got, d)
	}
}
