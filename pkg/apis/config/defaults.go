package config

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	cm "knative.dev/pkg/configmap"
)

// ConfigName is the name of the ConfigMap in the system namespace
// (kstate-system) that holds the defaults.
const ConfigName = "config-kstate"

// ConfigMap keys. Every key but AgentImageKey is optional; the _example
// block of config/core/configmaps/kstate.yaml documents each.
const (
	AgentImageKey             = "agent-image"
	AgentCPURequestKey        = "agent-cpu-request"
	AgentMemoryRequestKey     = "agent-memory-request"
	AgentCPULimitKey          = "agent-cpu-limit"
	AgentMemoryLimitKey       = "agent-memory-limit"
	DurabilityKey             = "durability"
	FlushIntervalKey          = "flush-interval"
	MaxDirtyBytesKey          = "max-dirty-bytes"
	PreloadKey                = "preload"
	StoreKey                  = "store"
	DedupWindowKey            = "dedup-window"
	DrainTimeoutKey           = "drain-timeout"
	RevisionTimeoutSecondsKey = "revision-timeout-seconds"
)

// Built-in defaults: the values config-kstate's _example shows. They match
// the agent's own defaults (pkg/agent DefaultConfig), so a setting the
// ConfigMap leaves out behaves as the agent does when run by hand.
const (
	DefaultDurability             = DurabilityAsync
	DefaultFlushInterval          = 100 * time.Millisecond
	DefaultMaxDirtyBytes          = 64 << 20
	DefaultPreloadEntities        = 100000
	DefaultPreloadBytes           = 128 << 20
	DefaultStoreSecret            = "kstate-store"
	DefaultDedupWindow            = 32
	DefaultDrainTimeout           = 25 * time.Second
	DefaultRevisionTimeoutSeconds = 300
)

// QueueProxyDrainSeconds is how long Knative's queue-proxy keeps a
// terminating pod serving (its drain quiet period, 30s in Knative 1.15)
// before the serving container, the agent, gets SIGTERM: Knative gives the
// serving container a preStop hook that waits for it.
const QueueProxyDrainSeconds = 30

// drainMarginSeconds is the slack between the end of the agent's drain and
// the kubelet's SIGKILL.
const drainMarginSeconds = 5

// MinRevisionTimeoutSeconds is the smallest timeoutSeconds a kstate revision
// may have. Knative makes a revision's timeoutSeconds its pods'
// terminationGracePeriodSeconds, and a terminating pod first drains the
// queue-proxy, then the agent flushes every dirty entity and releases its
// leases within drainTimeout: both must fit before the SIGKILL.
func MinRevisionTimeoutSeconds(drainTimeout time.Duration) int64 {
	secs := int64((drainTimeout + time.Second - 1) / time.Second)
	return QueueProxyDrainSeconds + secs + drainMarginSeconds
}

// Defaults is the typed config-kstate ConfigMap.
type Defaults struct {
	// AgentImage is the kstate-agent image the webhook injects.
	AgentImage string
	// AgentResources are the injected agent container's requests and
	// limits; unset ones are left to Knative's config-defaults.
	AgentResources corev1.ResourceRequirements

	// Defaults of the kstate.dev/* annotations of the same names.
	Durability    Durability
	FlushInterval time.Duration
	MaxDirtyBytes int64
	Preload       Preload
	Store         StoreRef
	DedupWindow   int

	// DrainTimeout is the agent's KSTATE_DRAIN_TIMEOUT: the final flush on
	// SIGTERM must fit in it.
	DrainTimeout time.Duration
	// RevisionTimeoutSeconds is the timeoutSeconds (and so the grace period)
	// the webhook gives a kstate revision that sets none. It is at least
	// MinRevisionTimeoutSeconds(DrainTimeout).
	RevisionTimeoutSeconds int64
}

// defaultDefaults is config-kstate with no keys but the agent image.
func defaultDefaults() *Defaults {
	return &Defaults{
		Durability:             DefaultDurability,
		FlushInterval:          DefaultFlushInterval,
		MaxDirtyBytes:          DefaultMaxDirtyBytes,
		Preload:                Preload{Entities: DefaultPreloadEntities, Bytes: DefaultPreloadBytes},
		Store:                  StoreRef{SecretName: DefaultStoreSecret, Key: DefaultStoreKey},
		DedupWindow:            DefaultDedupWindow,
		DrainTimeout:           DefaultDrainTimeout,
		RevisionTimeoutSeconds: DefaultRevisionTimeoutSeconds,
	}
}

// NewDefaultsConfigFromMap parses the data of config-kstate. Errors name the
// key, the value and what is expected.
func NewDefaultsConfigFromMap(data map[string]string) (*Defaults, error) {
	d := defaultDefaults()
	var cpuReq, memReq, cpuLim, memLim *resource.Quantity
	if err := cm.Parse(data,
		cm.AsString(AgentImageKey, &d.AgentImage),
		cm.AsQuantity(AgentCPURequestKey, &cpuReq),
		cm.AsQuantity(AgentMemoryRequestKey, &memReq),
		cm.AsQuantity(AgentCPULimitKey, &cpuLim),
		cm.AsQuantity(AgentMemoryLimitKey, &memLim),
		asValue(DurabilityKey, func(s string) (err error) { d.Durability, err = ParseDurability(s); return }),
		asValue(FlushIntervalKey, func(s string) (err error) { d.FlushInterval, err = ParseFlushInterval(s); return }),
		asValue(MaxDirtyBytesKey, func(s string) (err error) { d.MaxDirtyBytes, err = ParseBytes(s); return }),
		asValue(PreloadKey, func(s string) (err error) { d.Preload, err = ParsePreload(s, d.Preload); return }),
		asValue(StoreKey, func(s string) (err error) { d.Store, err = ParseStoreRef(s); return }),
		asValue(DedupWindowKey, func(s string) (err error) { d.DedupWindow, err = ParseDedupWindow(s); return }),
		asValue(DrainTimeoutKey, func(s string) (err error) { d.DrainTimeout, err = ParseDrainTimeout(s); return }),
		cm.AsInt64(RevisionTimeoutSecondsKey, &d.RevisionTimeoutSeconds),
	); err != nil {
		return nil, err
	}
	d.AgentImage = strings.TrimSpace(d.AgentImage)
	if d.AgentImage == "" {
		return nil, fmt.Errorf("%s %w: the kstate-agent image the webhook injects", AgentImageKey, errMissing)
	}
	if min := MinRevisionTimeoutSeconds(d.DrainTimeout); d.RevisionTimeoutSeconds < min {
		return nil, fmt.Errorf("%s = %d: want at least %d (queue-proxy drain %ds + %s %v + %ds margin)",
			RevisionTimeoutSecondsKey, d.RevisionTimeoutSeconds, min, QueueProxyDrainSeconds, DrainTimeoutKey, d.DrainTimeout, drainMarginSeconds)
	}
	for _, r := range []struct {
		q    *resource.Quantity
		name corev1.ResourceName
		into *corev1.ResourceList
	}{
		{cpuReq, corev1.ResourceCPU, &d.AgentResources.Requests},
		{memReq, corev1.ResourceMemory, &d.AgentResources.Requests},
		{cpuLim, corev1.ResourceCPU, &d.AgentResources.Limits},
		{memLim, corev1.ResourceMemory, &d.AgentResources.Limits},
	} {
		if r.q == nil {
			continue
		}
		if *r.into == nil {
			*r.into = corev1.ResourceList{}
		}
		(*r.into)[r.name] = *r.q
	}
	return d, nil
}

// NewDefaultsConfigFromConfigMap parses config-kstate.
func NewDefaultsConfigFromConfigMap(config *corev1.ConfigMap) (*Defaults, error) {
	return NewDefaultsConfigFromMap(config.Data)
}

// DeepCopy returns a copy of d that shares nothing with it.
func (d *Defaults) DeepCopy() *Defaults {
	if d == nil {
		return nil
	}
	out := *d
	d.AgentResources.DeepCopyInto(&out.AgentResources)
	return &out
}

// asValue is a cm.ParseFunc for a key whose value has its own parser; the
// error names the key.
func asValue(key string, parse func(string) error) cm.ParseFunc {
	return func(data map[string]string) error {
		raw, ok := data[key]
		if !ok {
			return nil
		}
		if err := parse(raw); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		return nil
	}
}
