package agent

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/kstate-dev/kstate/pkg/keyspec"
	"github.com/kstate-dev/kstate/pkg/placement"
)

// Durability says when a reply may go out relative to the write.
type Durability string

const (
	// DurabilityAsync replies as soon as the update is in memory; the flusher
	// writes it behind. A crash loses at most one flush interval.
	DurabilityAsync Durability = "async"
	// DurabilitySync replies only after the update landed in the store.
	DurabilitySync Durability = "sync"
)

// Config is the agent's whole configuration, from flags and KSTATE_*
// environment variables (flags win). Validate reports the first bad setting
// by its environment name, its value and what was expected.
type Config struct {
	// Identity and addresses.
	Pod           string // KSTATE_POD_NAME: lease holder id; the pod name.
	AdvertiseAddr string // KSTATE_POD_ADDR: host:port others are told to send to (421).
	Addr          string // KSTATE_ADDR: serving address (HTTP + CloudEvents).
	AdminAddr     string // KSTATE_ADMIN_ADDR: admin gRPC API.
	FunctionAddr  string // KSTATE_FUNCTION_ADDR: the user function's gRPC address.

	// Entity space.
	Space      string // KSTATE_SPACE: "<namespace>/<name>".
	Slots      int    // KSTATE_SLOTS
	KeySpec    string // KSTATE_KEY: key spec; empty means the defaults.
	Durability Durability

	// Store.
	StoreURL string // KSTATE_STORE_URL

	// Write-behind.
	FlushInterval time.Duration // KSTATE_FLUSH_INTERVAL
	MaxDirtyBytes int64         // KSTATE_MAX_DIRTY_BYTES: flush at half of it, 503 for writes past it.
	FlushTimeout  time.Duration // KSTATE_FLUSH_TIMEOUT: one store round trip.

	// Cache.
	CacheBytes   int64         // KSTATE_CACHE_BYTES: memory budget for entities.
	IdleEviction time.Duration // KSTATE_IDLE_EVICTION: clean entities idle this long are dropped.

	// Preload.
	PreloadEntities int64 // KSTATE_PRELOAD_ENTITIES
	PreloadBytes    int64 // KSTATE_PRELOAD_BYTES
	// PreloadGate keeps the agent unready until a Prepare call finished, or
	// this long after start, whichever is first; then it loads lazily. 0:
	// no gate (nothing calls Prepare).
	PreloadGate time.Duration // KSTATE_PRELOAD_GATE

	// Mailboxes.
	MaxQueuePerKey int           // KSTATE_MAX_QUEUE_PER_KEY
	MaxPending     int           // KSTATE_MAX_PENDING: events queued or running in all.
	InvokeTimeout  time.Duration // KSTATE_INVOKE_TIMEOUT: one function call.
	MaxBodyBytes   int64         // KSTATE_MAX_BODY_BYTES

	// Dedup.
	DedupWindow int // KSTATE_DEDUP_WINDOW: processed events remembered per entity.

	// Leases.
	LeaseTTL       time.Duration // KSTATE_LEASE_TTL
	MinHold        time.Duration // KSTATE_MIN_HOLD: a fresh holder keeps a slot at least this long.
	HandoffTimeout time.Duration // KSTATE_HANDOFF_TIMEOUT: then 421 naming the holder.

	// Shutdown.
	DrainTimeout time.Duration // KSTATE_DRAIN_TIMEOUT: the final flush must fit in it.

	// Sink for emitted events (K_SINK, set by Knative sources/bindings).
	Sink string
}

// DefaultConfig returns the defaults; docs/architecture.md explains them.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		Pod:             host,
		Addr:            ":8080",
		AdminAddr:       "127.0.0.1:9181", // 9091 is queue-proxy's in a Knative pod
		FunctionAddr:    "127.0.0.1:9081",
		Space:           "default/default",
		Slots:           placement.DefaultSlots,
		Durability:      DurabilityAsync,
		StoreURL:        "redis://127.0.0.1:6379",
		FlushInterval:   100 * time.Millisecond,
		MaxDirtyBytes:   64 << 20,
		FlushTimeout:    5 * time.Second,
		CacheBytes:      256 << 20,
		IdleEviction:    10 * time.Minute,
		PreloadEntities: 100000,
		PreloadBytes:    128 << 20,
		MaxQueuePerKey:  1000,
		MaxPending:      10000,
		InvokeTimeout:   30 * time.Second,
		MaxBodyBytes:    1 << 20,
		DedupWindow:     32,
		LeaseTTL:        10 * time.Second,
		MinHold:         5 * time.Second,
		HandoffTimeout:  3 * time.Second,
		DrainTimeout:    25 * time.Second,
	}
}

// setting binds one Config field to its flag and environment variable.
type setting struct {
	flag, env, help string
	set             func(string) error
	get             func() string
}

func (c *Config) settings() []setting {
	str := func(p *string) (func(string) error, func() string) {
		return func(v string) error { *p = v; return nil }, func() string { return *p }
	}
	dur := func(p *time.Duration) (func(string) error, func() string) {
		return func(v string) error {
				d, err := time.ParseDuration(v)
				if err != nil {
					return errors.New("expected a duration such as 250ms or 10s")
				}
				*p = d
				return nil
			}, func() string {
				return p.String()
			}
	}
	i64 := func(p *int64) (func(string) error, func() string) {
		return func(v string) error {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					return errors.New("expected a whole number")
				}
				*p = n
				return nil
			}, func() string {
				return strconv.FormatInt(*p, 10)
			}
	}
	integer := func(p *int) (func(string) error, func() string) {
		return func(v string) error {
				n, err := strconv.Atoi(v)
				if err != nil {
					return errors.New("expected a whole number")
				}
				*p = n
				return nil
			}, func() string {
				return strconv.Itoa(*p)
			}
	}
	mk := func(flag, env, help string, s func(string) error, g func() string) setting {
		return setting{flag: flag, env: env, help: help, set: s, get: g}
	}
	durSet, durGet := func(v string) error {
		switch Durability(v) {
		case DurabilityAsync, DurabilitySync:
			c.Durability = Durability(v)
			return nil
		}
		return errors.New(`expected "async" or "sync"`)
	}, func() string { return string(c.Durability) }

	var out []setting
	add := func(flag, env, help string, f func(string) error, g func() string) {
		out = append(out, mk(flag, env, help, f, g))
	}
	s, g := str(&c.Pod)
	add("pod", "KSTATE_POD_NAME", "lease holder identity (the pod name)", s, g)
	s, g = str(&c.AdvertiseAddr)
	add("advertise-addr", "KSTATE_POD_ADDR", "host:port other agents and routers reach this agent at (default: the serving address)", s, g)
	s, g = str(&c.Addr)
	add("addr", "KSTATE_ADDR", "serving address for HTTP and CloudEvents", s, g)
	s, g = str(&c.AdminAddr)
	add("admin-addr", "KSTATE_ADMIN_ADDR", "admin gRPC address", s, g)
	s, g = str(&c.FunctionAddr)
	add("function-addr", "KSTATE_FUNCTION_ADDR", "the function's gRPC address", s, g)
	s, g = str(&c.Space)
	add("space", "KSTATE_SPACE", "entity space, <namespace>/<name>", s, g)
	s, g = integer(&c.Slots)
	add("slots", "KSTATE_SLOTS", "slot count of the entity space", s, g)
	s, g = str(&c.KeySpec)
	add("key", "KSTATE_KEY", "key spec (header:NAME, ce:ATTR, path:/p/{key}, query:NAME); empty for the defaults", s, g)
	add("durability", "KSTATE_DURABILITY", "async or sync", durSet, durGet)
	s, g = str(&c.StoreURL)
	add("store", "KSTATE_STORE_URL", "state store URL (redis://, rediss://, redis+sentinel://, redis+cluster://)", s, g)
	s, g = dur(&c.FlushInterval)
	add("flush-interval", "KSTATE_FLUSH_INTERVAL", "write-behind flush interval", s, g)
	s, g = i64(&c.MaxDirtyBytes)
	add("max-dirty-bytes", "KSTATE_MAX_DIRTY_BYTES", "unflushed bytes before writes are refused with 503", s, g)
	s, g = dur(&c.FlushTimeout)
	add("flush-timeout", "KSTATE_FLUSH_TIMEOUT", "timeout of one store round trip", s, g)
	s, g = i64(&c.CacheBytes)
	add("cache-bytes", "KSTATE_CACHE_BYTES", "memory budget for cached entities", s, g)
	s, g = dur(&c.IdleEviction)
	add("idle-eviction", "KSTATE_IDLE_EVICTION", "evict clean entities idle this long", s, g)
	s, g = i64(&c.PreloadEntities)
	add("preload-entities", "KSTATE_PRELOAD_ENTITIES", "most entities one prepare loads", s, g)
	s, g = i64(&c.PreloadBytes)
	add("preload-bytes", "KSTATE_PRELOAD_BYTES", "most state bytes one prepare loads", s, g)
	s, g = dur(&c.PreloadGate)
	add("preload-gate", "KSTATE_PRELOAD_GATE", "stay unready until preloaded (the controller's Prepare call) or this long; 0 for no gate", s, g)
	s, g = integer(&c.MaxQueuePerKey)
	add("max-queue-per-key", "KSTATE_MAX_QUEUE_PER_KEY", "events that may wait per key", s, g)
	s, g = integer(&c.MaxPending)
	add("max-pending", "KSTATE_MAX_PENDING", "events queued or running in all", s, g)
	s, g = dur(&c.InvokeTimeout)
	add("invoke-timeout", "KSTATE_INVOKE_TIMEOUT", "timeout of one function call", s, g)
	s, g = i64(&c.MaxBodyBytes)
	add("max-body-bytes", "KSTATE_MAX_BODY_BYTES", "largest accepted request body", s, g)
	s, g = integer(&c.DedupWindow)
	add("dedup-window", "KSTATE_DEDUP_WINDOW", "processed CloudEvents remembered per entity", s, g)
	s, g = dur(&c.LeaseTTL)
	add("lease-ttl", "KSTATE_LEASE_TTL", "slot lease time to live", s, g)
	s, g = dur(&c.MinHold)
	add("min-hold", "KSTATE_MIN_HOLD", "a fresh holder keeps a slot at least this long", s, g)
	s, g = dur(&c.HandoffTimeout)
	add("handoff-timeout", "KSTATE_HANDOFF_TIMEOUT", "wait for a handoff before answering 421", s, g)
	s, g = dur(&c.DrainTimeout)
	add("drain-timeout", "KSTATE_DRAIN_TIMEOUT", "time allowed for the final flush on SIGTERM", s, g)
	s, g = str(&c.Sink)
	add("sink", "K_SINK", "where emitted events are sent", s, g)
	return out
}

// Load fills c from the environment, then from args (flags win), then
// validates. lookup is os.LookupEnv outside tests.
func (c *Config) Load(fs *flag.FlagSet, args []string, lookup func(string) (string, bool)) error {
	settings := c.settings()
	for _, s := range settings {
		if v, ok := lookup(s.env); ok && v != "" {
			if err := s.set(v); err != nil {
				return fmt.Errorf("%s=%q: %w", s.env, v, err)
			}
		}
	}
	for _, s := range settings {
		s := s
		fs.Func(s.flag, fmt.Sprintf("%s (env %s, default %q)", s.help, s.env, s.get()), func(v string) error {
			if err := s.set(v); err != nil {
				return fmt.Errorf("%w", err)
			}
			return nil
		})
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	return c.Validate()
}

// Validate checks every setting and names the first bad one.
func (c *Config) Validate() error {
	bad := func(env string, v any, want string) error {
		return fmt.Errorf("%s=%v: %s", env, v, want)
	}
	if c.Pod == "" {
		return bad("KSTATE_POD_NAME", `""`, "expected the pod name (set it from metadata.name)")
	}
	for _, a := range []struct{ env, v string }{{"KSTATE_ADDR", c.Addr}, {"KSTATE_ADMIN_ADDR", c.AdminAddr}, {"KSTATE_FUNCTION_ADDR", c.FunctionAddr}} {
		if _, _, err := net.SplitHostPort(a.v); err != nil {
			return bad(a.env, strconv.Quote(a.v), "expected host:port")
		}
	}
	if c.AdvertiseAddr != "" {
		if _, _, err := net.SplitHostPort(c.AdvertiseAddr); err != nil {
			return bad("KSTATE_POD_ADDR", strconv.Quote(c.AdvertiseAddr), "expected host:port")
		}
	}
	if ns, name, ok := strings.Cut(c.Space, "/"); !ok || ns == "" || name == "" || strings.ContainsAny(c.Space, "{}") || strings.Count(c.Space, "/") != 1 {
		return bad("KSTATE_SPACE", strconv.Quote(c.Space), "expected <namespace>/<name> without braces")
	}
	if c.Slots < 1 || c.Slots > placement.MaxSlots {
		return bad("KSTATE_SLOTS", c.Slots, fmt.Sprintf("expected 1..%d", placement.MaxSlots))
	}
	if c.KeySpec != "" {
		if _, err := keyspec.Parse(c.KeySpec); err != nil {
			return fmt.Errorf("KSTATE_KEY=%q: %w", c.KeySpec, err)
		}
	}
	if c.Durability != DurabilityAsync && c.Durability != DurabilitySync {
		return bad("KSTATE_DURABILITY", strconv.Quote(string(c.Durability)), `expected "async" or "sync"`)
	}
	if c.StoreURL == "" {
		return bad("KSTATE_STORE_URL", `""`, "expected a redis:// URL")
	}
	positive := []struct {
		env string
		v   int64
	}{
		{"KSTATE_MAX_DIRTY_BYTES", c.MaxDirtyBytes}, {"KSTATE_CACHE_BYTES", c.CacheBytes},
		{"KSTATE_PRELOAD_ENTITIES", c.PreloadEntities}, {"KSTATE_PRELOAD_BYTES", c.PreloadBytes},
		{"KSTATE_MAX_QUEUE_PER_KEY", int64(c.MaxQueuePerKey)}, {"KSTATE_MAX_PENDING", int64(c.MaxPending)},
		{"KSTATE_MAX_BODY_BYTES", c.MaxBodyBytes}, {"KSTATE_DEDUP_WINDOW", int64(c.DedupWindow)},
	}
	for _, p := range positive {
		if p.v <= 0 {
			return bad(p.env, p.v, "expected a number greater than 0")
		}
	}
	durations := []struct {
		env string
		v   time.Duration
	}{
		{"KSTATE_FLUSH_INTERVAL", c.FlushInterval}, {"KSTATE_FLUSH_TIMEOUT", c.FlushTimeout},
		{"KSTATE_IDLE_EVICTION", c.IdleEviction}, {"KSTATE_INVOKE_TIMEOUT", c.InvokeTimeout},
		{"KSTATE_LEASE_TTL", c.LeaseTTL}, {"KSTATE_HANDOFF_TIMEOUT", c.HandoffTimeout},
		{"KSTATE_DRAIN_TIMEOUT", c.DrainTimeout},
	}
	for _, d := range durations {
		if d.v <= 0 {
			return bad(d.env, d.v, "expected a duration greater than 0")
		}
	}
	if c.PreloadGate < 0 {
		return bad("KSTATE_PRELOAD_GATE", c.PreloadGate, "expected a duration of 0 (no gate) or more")
	}
	if c.MinHold < 0 {
		return bad("KSTATE_MIN_HOLD", c.MinHold, "expected a duration of 0 or more")
	}
	if c.LeaseTTL < 300*time.Millisecond {
		return bad("KSTATE_LEASE_TTL", c.LeaseTTL, "expected at least 300ms")
	}
	return nil
}

// renewInterval: renew at a third of the TTL so two renewals can fail before
// the lease lapses.
func (c *Config) renewInterval() time.Duration {
	d := c.LeaseTTL / 3
	if d < 100*time.Millisecond {
		d = 100 * time.Millisecond
	}
	return d
}

// advertise is the address put in leases and 421 answers.
func (c *Config) advertise() string {
	if c.AdvertiseAddr != "" {
		return c.AdvertiseAddr
	}
	return c.Addr
}
