package statestore

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Sentinel errors callers branch on. Implementations wrap them with %w.
var (
	// ErrFenced: the slot's lease no longer names this holder at this epoch.
	// The holder must stop serving the slot; its unflushed writes are stale.
	ErrFenced = errors.New("statestore: slot lease fenced")
	// ErrLeaseHeld: another holder has a live lease on the slot. The error is
	// a *HeldError that names the holder.
	ErrLeaseHeld = errors.New("statestore: slot lease held by another holder")
	// ErrUnavailable: the store could not be reached. The operation may be
	// retried; its outcome is unknown for writes.
	ErrUnavailable = errors.New("statestore: store unavailable")
	// ErrStoreReset: the store's marker vanished while this process was
	// using it: the store came back empty. Never treated as a fresh start.
	ErrStoreReset = errors.New("statestore: store was reset (marker missing)")
)

// SlotRef names one slot of one entity space. A space is "<namespace>/<name>"
// (by default the Knative Service); slots are numbered 0..slots-1.
type SlotRef struct {
	Space string
	Slot  uint32
}

func (s SlotRef) String() string { return fmt.Sprintf("%s/%d", s.Space, s.Slot) }

// DedupEntry remembers a processed CloudEvent and the outcome it got, so a
// redelivery is answered with the same outcome and not applied again.
type DedupEntry struct {
	Source string `json:"s"`
	ID     string `json:"i"`
	// Outcome is the encoded reply the event got (opaque to the store).
	Outcome []byte `json:"o,omitempty"`
}

// Record is one entity as stored.
type Record struct {
	Key     string
	State   []byte
	Version uint64
	// Dedup is the bounded window of recently processed events, oldest first.
	Dedup      []DedupEntry
	LastAccess time.Time
	// Deleted marks a tombstone in Flush: the entity is removed.
	Deleted bool
}

// Size is the approximate number of bytes the record occupies.
func (r *Record) Size() int {
	n := len(r.Key) + len(r.State) + 32
	for _, d := range r.Dedup {
		n += len(d.Source) + len(d.ID) + len(d.Outcome) + 8
	}
	return n
}

// Lease is a holder's claim on a slot. Epoch is the fencing token.
type Lease struct {
	Slot SlotRef
	// Holder identifies the agent (its pod name).
	Holder string
	// Addr is where the holder serves, so a 421 can name it.
	Addr  string
	Epoch uint64
	// Acquired and Expires are in the store's clock.
	Acquired time.Time
	Expires  time.Time
}

// HeldError is returned (wrapping ErrLeaseHeld) when Acquire finds a live
// lease of another holder.
type HeldError struct {
	Lease Lease
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("slot %s is held by %s (%s) at epoch %d until %s",
		e.Lease.Slot, e.Lease.Holder, e.Lease.Addr, e.Lease.Epoch, e.Lease.Expires.Format(time.RFC3339Nano))
}

func (e *HeldError) Unwrap() error { return ErrLeaseHeld }

// FlushResult reports what an accepted Flush did not write.
type FlushResult struct {
	// Rejected lists keys whose record version was lower than the stored one.
	Rejected []string
}

// HandoffRequest asks the holder of Slot to hand it to Asker.
type HandoffRequest struct {
	Slot      SlotRef
	Asker     string
	AskerAddr string
	// Released marks the answer instead, which WatchHandoffs delivers to
	// the asker after the holder's ReleaseFor: the slot is free, so the
	// asker can take it now rather than when it next polls the lease.
	Released bool `json:"-"`
}

// AcquireOptions is what AcquireWith does besides Acquire, in the same
// round trip.
type AcquireOptions struct {
	// Load lists keys of the slot to read once the lease is the caller's:
	// nothing written before it can be missing, and nobody else can write
	// after it. The records come back only with the lease.
	Load []string
	// AskHolder: when another live holder has the slot, ask it to hand the
	// slot over to the caller, as RequestHandoff would (with the caller's
	// holder and addr as Asker and AskerAddr).
	AskHolder bool
}

// Store is the state store. All methods are safe for concurrent use.
type Store interface {
	// Load returns the stored records of keys in one slot, in one pipelined
	// round trip. Keys that do not exist are absent from the map.
	Load(ctx context.Context, slot SlotRef, keys []string) (map[string]*Record, error)
	// LoadAll is Load for several slots in one round trip: out[i] holds
	// the stored records of keys[i] in slots[i].
	LoadAll(ctx context.Context, slots []SlotRef, keys [][]string) ([]map[string]*Record, error)
	// Flush writes records (or tombstones) of one slot atomically if lease
	// is still current, and updates the slot's hot-set index. It returns an
	// error wrapping ErrFenced when the lease is not current.
	Flush(ctx context.Context, lease Lease, records []*Record) (FlushResult, error)
	// HotKeys returns up to n keys of the slot, most recently written first.
	HotKeys(ctx context.Context, slot SlotRef, n int) ([]string, error)
	// HotKeysAll is HotKeys for many slots in one round trip; out[i]
	// belongs to slots[i] and is empty for a slot without keys. Redis
	// answers for the slots with keys only, so its cost follows the data,
	// not the slot count.
	HotKeysAll(ctx context.Context, slots []SlotRef, n int) ([][]string, error)

	// Acquire takes the slot's lease for holder if it is free, expired or
	// already held by holder, and returns it with the epoch incremented
	// (also when holder re-acquires its own lease). A live lease of another
	// holder gives a *HeldError.
	Acquire(ctx context.Context, slot SlotRef, holder, addr string, ttl time.Duration) (Lease, error)
	// AcquireWith is Acquire that does more in the same round trip (see
	// AcquireOptions), for an agent waiting for a handoff. When the lease
	// was granted but the loads failed, the lease comes back with the
	// error, for the caller to give back.
	AcquireWith(ctx context.Context, slot SlotRef, holder, addr string, ttl time.Duration, opts AcquireOptions) (Lease, map[string]*Record, error)
	// AcquireAll is Acquire for many slots in one round trip (Redis: one
	// script call per RedisOptions.BatchKeys slots, as for RenewAll and
	// ReleaseAll); errs[i]
	// belongs to slots[i].
	AcquireAll(ctx context.Context, slots []SlotRef, holder, addr string, ttl time.Duration) (leases []Lease, errs []error)
	// Renew extends a lease still held at its epoch (also after it expired,
	// provided nobody took it over). Otherwise it returns ErrFenced.
	Renew(ctx context.Context, lease Lease, ttl time.Duration) (Lease, error)
	// RenewAll renews many leases in one round trip, with Renew's rules for
	// each; errs[i] (nil, ErrFenced, or ErrUnavailable when the round trip
	// failed) belongs to leases[i].
	RenewAll(ctx context.Context, leases []Lease, ttl time.Duration) (renewed []Lease, errs []error)
	// Release frees a lease still held at its epoch, keeping the epoch.
	// Releasing a lease that is no longer current is not an error.
	Release(ctx context.Context, lease Lease) error
	// ReleaseAll is Release for many leases in one round trip.
	ReleaseAll(ctx context.Context, leases []Lease) []error
	// ReleaseFor is Release at the end of a handoff: when it frees the
	// lease it also tells req.Asker so, in the same round trip, through
	// the asker's WatchHandoffs channel (req with Released set). Like a
	// request, the notice is delivered at most once; the asker must not
	// count on it.
	ReleaseFor(ctx context.Context, lease Lease, req HandoffRequest) error
	// Current returns the slot's lease as stored (zero Holder when free).
	Current(ctx context.Context, slot SlotRef) (Lease, error)

	// RequestHandoff asks the slot's current holder to hand it over, and
	// returns at once. The request is seen by whoever watches the holder.
	RequestHandoff(ctx context.Context, req HandoffRequest, holder string) error
	// WatchHandoffs delivers handoff requests addressed to holder, and the
	// notices of ReleaseFor for slots holder asked for (Released set),
	// until ctx ends. The channel is closed when ctx ends.
	WatchHandoffs(ctx context.Context, holder string) (<-chan HandoffRequest, error)

	// EnsureMarker returns the space's store marker, creating it when the
	// space has never been used (created == true).
	EnsureMarker(ctx context.Context, space string) (id string, created bool, err error)
	// CheckMarker returns ErrStoreReset when the space's marker is not id.
	CheckMarker(ctx context.Context, space, id string) error

	// Ping checks that the store answers.
	Ping(ctx context.Context) error
	Close() error
}
