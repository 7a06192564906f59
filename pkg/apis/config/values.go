package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Durability says when the agent replies relative to the write of an update
// (KSTATE_DURABILITY).
type Durability string

const (
	// DurabilityAsync replies from memory; the flusher writes behind within
	// the flush interval. A crash loses at most one flush interval.
	DurabilityAsync Durability = "async"
	// DurabilitySync replies only after the update landed in the store.
	DurabilitySync Durability = "sync"
)

// ParseDurability reads "async" or "sync" (exactly; no other spelling).
func ParseDurability(s string) (Durability, error) {
	switch d := Durability(strings.TrimSpace(s)); d {
	case DurabilityAsync, DurabilitySync:
		return d, nil
	}
	return "", fmt.Errorf(`%q is not a durability: want "async" or "sync"`, s)
}

// ParseFlushInterval reads a Go duration from 1ms to 1m: below 1ms the
// flusher would spin, above a minute an async crash loses too much.
func ParseFlushInterval(s string) (time.Duration, error) {
	return parseDuration(s, time.Millisecond, time.Minute)
}

// ParseDrainTimeout reads a Go duration from 1s to 10m.
func ParseDrainTimeout(s string) (time.Duration, error) {
	return parseDuration(s, time.Second, 10*time.Minute)
}

func parseDuration(s string, lo, hi time.Duration) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil || d < lo || d > hi {
		return 0, fmt.Errorf("%q is not a duration from %v to %v (such as 100ms or 2s)", s, lo, hi)
	}
	return d, nil
}

// ParseBytes reads a positive whole number of bytes written as a
// Kubernetes quantity: "67108864", "64Mi", "1G".
func ParseBytes(s string) (int64, error) {
	q, err := resource.ParseQuantity(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("%q is not a byte size: want a quantity such as 64Mi or 1048576", s)
	}
	n := q.Value() // rounded up to a whole number
	if q.Sign() <= 0 || q.Cmp(*resource.NewQuantity(n, resource.BinarySI)) != 0 {
		return 0, fmt.Errorf("%q is not a byte size: want a whole number of bytes of at least 1, such as 64Mi", s)
	}
	return n, nil
}

// MaxDedupWindow bounds kstate.dev/dedup-window: the window is stored with
// every entity's state and read on every load.
const MaxDedupWindow = 1024

// ParseDedupWindow reads the number of processed CloudEvents remembered per
// entity, 1..MaxDedupWindow.
func ParseDedupWindow(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 1 || n > MaxDedupWindow {
		return 0, fmt.Errorf("%q is not a dedup window: want an integer from 1 to %d", s, MaxDedupWindow)
	}
	return n, nil
}

// Preload is the budget of one preload (KSTATE_PRELOAD_ENTITIES,
// KSTATE_PRELOAD_BYTES): a joining pod loads the hottest entities of its
// slots, newest first, until either bound is reached.
type Preload struct {
	Entities int64
	Bytes    int64
}

// String renders p in the syntax ParsePreload reads.
func (p Preload) String() string {
	return "entities=" + strconv.FormatInt(p.Entities, 10) + ",bytes=" + resource.NewQuantity(p.Bytes, resource.BinarySI).String()
}

// ParsePreload reads "entities=N,bytes=SIZE" (either part may be left out,
// in any order; SIZE is a quantity such as 128Mi). Parts left out keep
// their value from base.
func ParsePreload(s string, base Preload) (Preload, error) {
	const want = "want entities=N,bytes=SIZE (either part may be left out), such as entities=100000,bytes=128Mi"
	p := base
	seen := map[string]bool{}
	text := strings.TrimSpace(s)
	if text == "" {
		return Preload{}, fmt.Errorf("%q is not a preload budget: %s", s, want)
	}
	for _, part := range strings.Split(text, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || (k != "entities" && k != "bytes") {
			return Preload{}, fmt.Errorf("%q is not a preload budget: unknown part %q; %s", s, strings.TrimSpace(part), want)
		}
		if seen[k] {
			return Preload{}, fmt.Errorf("%q is not a preload budget: %s is given twice; %s", s, k, want)
		}
		seen[k] = true
		switch k {
		case "entities":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 1 {
				return Preload{}, fmt.Errorf("%q is not a preload budget: entities=%s is not an integer of at least 1", s, v)
			}
			p.Entities = n
		case "bytes":
			n, err := ParseBytes(v)
			if err != nil {
				return Preload{}, fmt.Errorf("%q is not a preload budget: bytes: %w", s, err)
			}
			p.Bytes = n
		}
	}
	return p, nil
}

// DefaultStoreKey is the key of the store Secret that holds the URL when a
// StoreRef names none.
const DefaultStoreKey = "url"

// StoreRef names the Secret key that holds the state store URL
// (KSTATE_STORE_URL), credentials included: redis://:PASSWORD@HOST:PORT,
// rediss://, redis+sentinel://, redis+cluster://. The Secret is in the
// Service's own namespace: a pod can only read Secrets of its namespace.
type StoreRef struct {
	SecretName string
	Key        string
}

// String renders r in the syntax ParseStoreRef reads.
func (r StoreRef) String() string {
	return r.SecretName + ":" + r.Key
}

// ParseStoreRef reads "SECRET" or "SECRET:KEY"; the key defaults to
// DefaultStoreKey.
func ParseStoreRef(s string) (StoreRef, error) {
	text := strings.TrimSpace(s)
	if strings.Contains(text, "/") {
		return StoreRef{}, fmt.Errorf("%q is not a store Secret: a Secret of another namespace cannot be used; "+
			"want SECRET or SECRET:KEY naming a Secret in the Service's namespace", s)
	}
	name, key, hasKey := strings.Cut(text, ":")
	if !hasKey {
		key = DefaultStoreKey
	}
	if name == "" {
		return StoreRef{}, fmt.Errorf("%q is not a store Secret: no Secret name; want SECRET or SECRET:KEY", s)
	}
	if msgs := validation.IsDNS1123Subdomain(name); len(msgs) > 0 {
		return StoreRef{}, fmt.Errorf("%q is not a store Secret: the Secret name %q is invalid (%s); want SECRET or SECRET:KEY",
			s, name, strings.Join(msgs, "; "))
	}
	if msgs := validation.IsConfigMapKey(key); len(msgs) > 0 {
		return StoreRef{}, fmt.Errorf("%q is not a store Secret: the key %q is invalid (%s); want SECRET or SECRET:KEY",
			s, key, strings.Join(msgs, "; "))
	}
	return StoreRef{SecretName: name, Key: key}, nil
}

// errMissing is returned for a required ConfigMap key.
var errMissing = errors.New("is required")
