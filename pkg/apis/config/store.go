package config

import (
	"context"

	"knative.dev/pkg/configmap"
)

type cfgKey struct{}

// Config is the set of kstate ConfigMaps attached to contexts.
type Config struct {
	Defaults *Defaults
}

// FromContext returns the Config attached to ctx, or nil.
func FromContext(ctx context.Context) *Config {
	if c, ok := ctx.Value(cfgKey{}).(*Config); ok {
		return c
	}
	return nil
}

// FromContextOrDefaults is FromContext, with the built-in defaults for what
// is not attached. The built-in Defaults have no AgentImage: the webhook
// cannot inject without config-kstate and says so.
func FromContextOrDefaults(ctx context.Context) *Config {
	cfg := &Config{}
	if c := FromContext(ctx); c != nil {
		*cfg = *c
	}
	if cfg.Defaults == nil {
		cfg.Defaults = defaultDefaults()
	}
	return cfg
}

// ToContext attaches c to ctx.
func ToContext(ctx context.Context, c *Config) context.Context {
	return context.WithValue(ctx, cfgKey{}, c)
}

// Store watches the kstate ConfigMaps and keeps their latest valid typed
// values. An invalid update is logged and the previous value kept (the
// config validation webhook rejects such updates in the first place).
type Store struct {
	*configmap.UntypedStore
}

// NewStore returns a Store; call WatchConfigs with a configmap.Watcher.
func NewStore(logger configmap.Logger, onAfterStore ...func(name string, value interface{})) *Store {
	return &Store{
		UntypedStore: configmap.NewUntypedStore(
			"kstate",
			logger,
			configmap.Constructors{
				ConfigName: NewDefaultsConfigFromConfigMap,
			},
			onAfterStore...,
		),
	}
}

// ToContext attaches the current Config to ctx; the webhook uses it as its
// context decorator.
func (s *Store) ToContext(ctx context.Context) context.Context {
	return ToContext(ctx, s.Load())
}

// Load returns a copy of the current Config.
func (s *Store) Load() *Config {
	cfg := &Config{}
	if d, ok := s.UntypedLoad(ConfigName).(*Defaults); ok {
		cfg.Defaults = d.DeepCopy()
	}
	return cfg
}
