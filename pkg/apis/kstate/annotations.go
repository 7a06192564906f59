package kstate

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	"knative.dev/pkg/apis"

	"github.com/kstate-dev/kstate/pkg/apis/config"
	"github.com/kstate-dev/kstate/pkg/keyspec"
	"github.com/kstate-dev/kstate/pkg/placement"
)

// GroupName is the annotation prefix of kstate.
const GroupName = "kstate.dev"

// The annotations, on a Service's spec.template.metadata (and so on its
// revisions). docs/annotations.md documents each with its default.
const (
	// EnabledAnnotationKey turns kstate on when "true" (any case).
	EnabledAnnotationKey = GroupName + "/enabled"
	// KeyAnnotationKey is the key spec (pkg/keyspec); unset means
	// keyspec's defaults (ce:partitionkey for CloudEvents, the Kstate-Key
	// header for plain HTTP).
	KeyAnnotationKey = GroupName + "/key"
	// SpaceAnnotationKey names the entity space, "<namespace>/<name>";
	// unset means "<namespace>/<service>". Immutable once set.
	SpaceAnnotationKey = GroupName + "/space"
	// SlotsAnnotationKey is the slot count of the entity space,
	// 1..placement.MaxSlots; unset means placement.DefaultSlots. Immutable
	// once set.
	SlotsAnnotationKey = GroupName + "/slots"
	// DurabilityAnnotationKey is "async" or "sync".
	DurabilityAnnotationKey = GroupName + "/durability"
	// FlushIntervalAnnotationKey is the write-behind interval.
	FlushIntervalAnnotationKey = GroupName + "/flush-interval"
	// MaxDirtyBytesAnnotationKey bounds unflushed state per pod.
	MaxDirtyBytesAnnotationKey = GroupName + "/max-dirty-bytes"
	// PreloadAnnotationKey is the preload budget, "entities=N,bytes=SIZE".
	PreloadAnnotationKey = GroupName + "/preload"
	// StoreAnnotationKey names the Secret with the store URL,
	// "SECRET" or "SECRET:KEY".
	StoreAnnotationKey = GroupName + "/store"
	// DedupWindowAnnotationKey is the number of processed CloudEvents
	// remembered per entity.
	DedupWindowAnnotationKey = GroupName + "/dedup-window"
)

// Annotations lists every annotation kstate reads. Any other kstate.dev/*
// annotation is rejected by the webhook as a likely typo.
var Annotations = []string{
	EnabledAnnotationKey,
	KeyAnnotationKey,
	SpaceAnnotationKey,
	SlotsAnnotationKey,
	DurabilityAnnotationKey,
	FlushIntervalAnnotationKey,
	MaxDirtyBytesAnnotationKey,
	PreloadAnnotationKey,
	StoreAnnotationKey,
	DedupWindowAnnotationKey,
}

// IsKstateAnnotation reports whether key is in the kstate.dev/ namespace.
func IsKstateAnnotation(key string) bool {
	return strings.HasPrefix(key, GroupName+"/")
}

// Enabled reports whether the annotations turn kstate on.
func Enabled(annotations map[string]string) bool {
	return EnabledValue(annotations[EnabledAnnotationKey])
}

// EnabledValue reports whether a kstate.dev/enabled value turns kstate on:
// "true" in any case, surrounding white space ignored. It does not
// allocate; the activator calls it on every request.
func EnabledValue(v string) bool {
	return strings.EqualFold(strings.TrimSpace(v), "true")
}

// DefaultSpace is the entity space of a Service that does not name one.
func DefaultSpace(namespace, service string) string {
	return namespace + "/" + service
}

// AnnotationError is a bad annotation value. Message says what the value
// is and what is expected; it does not name the annotation, so it can be
// used both in an apis.FieldError (whose path names it) and in Error.
type AnnotationError struct {
	Annotation string
	Value      string
	Message    string
}

// Error implements error: "annotation <key>: <message>".
func (e *AnnotationError) Error() string {
	return "annotation " + e.Annotation + ": " + e.Message
}

// FieldError returns e as an apis.FieldError whose path is the annotation
// key; callers prefix the path of the annotations map.
func (e *AnnotationError) FieldError() *apis.FieldError {
	return &apis.FieldError{Message: e.Message, Paths: []string{e.Annotation}}
}

// Routing is what a router needs of a kstate revision: how to find a
// request's key and which slot table it maps to.
type Routing struct {
	// Key is the configured key spec; the zero Spec means keyspec's defaults.
	Key keyspec.Spec
	// Slots is the slot count of the entity space.
	Slots int
	// Space names the entity space, "<namespace>/<name>". It is "" only
	// when the annotation is unset and no service name was given.
	Space string
}

// Spec is the whole kstate configuration of a Service: its annotations,
// with config-kstate's defaults for those it leaves out.
type Spec struct {
	Routing
	Durability    config.Durability
	FlushInterval time.Duration
	MaxDirtyBytes int64
	Preload       config.Preload
	Store         config.StoreRef
	DedupWindow   int
}

// value returns the trimmed annotation value and whether it is set; a
// blank value counts as unset, so `kstate.dev/slots: ""` means the default.
func value(annotations map[string]string, key string) (string, bool) {
	v := strings.TrimSpace(annotations[key])
	return v, v != ""
}

// ParseRouting reads kstate.dev/key, kstate.dev/slots and kstate.dev/space
// of an object in namespace. service names the Service the space defaults
// after; when it is "" and the space is not set, Space is "". The error,
// the first bad annotation in that order, is an *AnnotationError.
func ParseRouting(namespace, service string, annotations map[string]string) (Routing, error) {
	r := Routing{Slots: placement.DefaultSlots}
	if v, ok := value(annotations, KeyAnnotationKey); ok {
		spec, err := keyspec.Parse(v)
		if err != nil {
			return Routing{}, &AnnotationError{Annotation: KeyAnnotationKey, Value: v, Message: err.Error()}
		}
		r.Key = spec
	}
	if v, ok := value(annotations, SlotsAnnotationKey); ok {
		n, err := ParseSlots(v)
		if err != nil {
			return Routing{}, &AnnotationError{Annotation: SlotsAnnotationKey, Value: v, Message: err.Error()}
		}
		r.Slots = n
	}
	if v, ok := value(annotations, SpaceAnnotationKey); ok {
		if err := ValidateSpace(namespace, v); err != nil {
			return Routing{}, &AnnotationError{Annotation: SpaceAnnotationKey, Value: v, Message: err.Error()}
		}
		r.Space = v
	} else if service != "" {
		r.Space = DefaultSpace(namespace, service)
	}
	return r, nil
}

// ParseSlots reads a slot count, 1..placement.MaxSlots.
func ParseSlots(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 1 || n > placement.MaxSlots {
		return 0, fmt.Errorf("%q is not a slot count: want an integer from 1 to %d (default %d)",
			s, placement.MaxSlots, placement.DefaultSlots)
	}
	return n, nil
}

// ValidateSpace checks an entity space named by an object in namespace:
// "<namespace>/<name>" with the object's own namespace (a Service may not
// claim another namespace's state) and a name that is a DNS-1123
// subdomain (it becomes part of Redis key names and hash tags).
func ValidateSpace(namespace, space string) error {
	ns, name, ok := strings.Cut(space, "/")
	if !ok || ns == "" || name == "" {
		return fmt.Errorf("%q is not an entity space: want <namespace>/<name>, such as %s/carts", space, namespace)
	}
	if ns != namespace {
		return fmt.Errorf("%q is an entity space of namespace %q: a Service may only use a space of its own namespace, such as %s/%s",
			space, ns, namespace, name)
	}
	if msgs := validation.IsDNS1123Subdomain(name); len(msgs) > 0 {
		return fmt.Errorf("%q is not an entity space: the name %q is invalid (%s)", space, name, strings.Join(msgs, "; "))
	}
	return nil
}

// ParseSpec reads every kstate.dev/* annotation of a Service's revision
// template, service being the Service's name and namespace its namespace;
// d gives the defaults of what is not set. It reports every problem, each
// with the annotation key as its path: bad values, a kstate.dev/enabled
// that is neither "true" nor "false", and unknown kstate.dev/* keys.
// The Spec is nil when there is any error.
func ParseSpec(namespace, service string, annotations map[string]string, d *config.Defaults) (*Spec, *apis.FieldError) {
	var errs *apis.FieldError
	bad := func(key, v string, err error) {
		errs = errs.Also((&AnnotationError{Annotation: key, Value: v, Message: err.Error()}).FieldError())
	}

	s := &Spec{
		Routing:       Routing{Slots: placement.DefaultSlots, Space: DefaultSpace(namespace, service)},
		Durability:    d.Durability,
		FlushInterval: d.FlushInterval,
		MaxDirtyBytes: d.MaxDirtyBytes,
		Preload:       d.Preload,
		Store:         d.Store,
		DedupWindow:   d.DedupWindow,
	}

	if v, ok := value(annotations, EnabledAnnotationKey); ok && !strings.EqualFold(v, "true") && !strings.EqualFold(v, "false") {
		bad(EnabledAnnotationKey, v, fmt.Errorf(`%q is not a switch: want "true" or "false"`, v))
	}
	if v, ok := value(annotations, KeyAnnotationKey); ok {
		spec, err := keyspec.Parse(v)
		if err != nil {
			bad(KeyAnnotationKey, v, err)
		}
		s.Key = spec
	}
	if v, ok := value(annotations, SlotsAnnotationKey); ok {
		n, err := ParseSlots(v)
		if err != nil {
			bad(SlotsAnnotationKey, v, err)
		}
		s.Slots = n
	}
	if v, ok := value(annotations, SpaceAnnotationKey); ok {
		if err := ValidateSpace(namespace, v); err != nil {
			bad(SpaceAnnotationKey, v, err)
		}
		s.Space = v
	}
	if v, ok := value(annotations, DurabilityAnnotationKey); ok {
		dur, err := config.ParseDurability(v)
		if err != nil {
			bad(DurabilityAnnotationKey, v, err)
		}
		s.Durability = dur
	}
	if v, ok := value(annotations, FlushIntervalAnnotationKey); ok {
		fi, err := config.ParseFlushInterval(v)
		if err != nil {
			bad(FlushIntervalAnnotationKey, v, err)
		}
		s.FlushInterval = fi
	}
	if v, ok := value(annotations, MaxDirtyBytesAnnotationKey); ok {
		n, err := config.ParseBytes(v)
		if err != nil {
			bad(MaxDirtyBytesAnnotationKey, v, err)
		}
		s.MaxDirtyBytes = n
	}
	if v, ok := value(annotations, PreloadAnnotationKey); ok {
		p, err := config.ParsePreload(v, d.Preload)
		if err != nil {
			bad(PreloadAnnotationKey, v, err)
		}
		s.Preload = p
	}
	if v, ok := value(annotations, StoreAnnotationKey); ok {
		ref, err := config.ParseStoreRef(v)
		if err != nil {
			bad(StoreAnnotationKey, v, err)
		}
		s.Store = ref
	}
	if v, ok := value(annotations, DedupWindowAnnotationKey); ok {
		n, err := config.ParseDedupWindow(v)
		if err != nil {
			bad(DedupWindowAnnotationKey, v, err)
		}
		s.DedupWindow = n
	}

	var unknown []string
	for k := range annotations {
		if IsKstateAnnotation(k) && !known(k) {
			unknown = append(unknown, k)
		}
	}
	sort.Strings(unknown)
	for _, k := range unknown {
		errs = errs.Also(&apis.FieldError{
			Message: "unknown kstate annotation",
			Paths:   []string{k},
			Details: "kstate reads " + strings.Join(Annotations, ", "),
		})
	}

	if errs != nil {
		return nil, errs
	}
	return s, nil
}

func known(key string) bool {
	for _, k := range Annotations {
		if k == key {
			return true
		}
	}
	return false
}
