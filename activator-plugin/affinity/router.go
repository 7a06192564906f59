package affinity

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kstate-dev/kstate/pkg/placement"
)

// DefaultQueueDepth is how many requests may wait for a place at one pod
// beyond its concurrency limit, per router: the value Knative's activator
// uses for its per-pod breakers (breakerQueueDepth in
// knative.dev/serving/pkg/activator/net).
const DefaultQueueDepth = 10000

var (
	// ErrQueueFull means the owner pod of the key has Concurrency requests
	// in flight and QueueDepth more waiting. The request was not sent.
	ErrQueueFull = errors.New("the pod that owns this key is at its concurrency limit and its queue is full")

	// ErrClosed means the router was closed (its revision went away) while
	// the request waited.
	ErrClosed = errors.New("the revision is no longer routed")

	// ErrNoReadyPod wraps the context's error when a request ends while the
	// revision has no ready pod.
	ErrNoReadyPod = errors.New("no ready pod for the revision")
)

// Pod is a ready endpoint of a revision: its pod name (the placement member
// and the name agents give in Kstate-Holder) and the host:port requests are
// sent to.
type Pod struct {
	Name string
	Addr string
}

// Options configure a Router. The zero value of a field means its default.
type Options struct {
	// Slots is the slot count of the entity space (placement.DefaultSlots if
	// 0). Every router and agent of a space must use the same value.
	Slots int
	// Concurrency is the most requests one pod gets at a time from this
	// router; 0 means unlimited (Knative's containerConcurrency: 0).
	Concurrency int
	// QueueDepth is how many more requests may wait for a place at one pod
	// (DefaultQueueDepth if 0). It only applies with Concurrency > 0.
	QueueDepth int
}

// Router routes the keys of one revision to its ready pods. The zero value
// is not usable; call NewRouter.
type Router struct {
	slots      int
	limit      int
	queueDepth int

	// mu serializes Update and Close; readers use cur only.
	mu  sync.Mutex
	cur atomic.Pointer[view]

	waiting atomic.Int64
}

// view is an immutable routing state: one placement table and the pods it
// names. A newer view closes changed when it replaces this one.
type view struct {
	table   *placement.Table
	bySlot  []*pod // slot -> owner; nil when there are no pods
	byName  map[string]*pod
	pods    []Pod // sorted by name
	closed  bool
	changed chan struct{}
}

// NewRouter returns a router with no ready pods: Acquire waits until Update
// gives it some.
func NewRouter(opts Options) (*Router, error) {
	if opts.Slots == 0 {
		opts.Slots = placement.DefaultSlots
	}
	if opts.QueueDepth == 0 {
		opts.QueueDepth = DefaultQueueDepth
	}
	if opts.Concurrency < 0 {
		return nil, fmt.Errorf("concurrency %d: want 0 (unlimited) or more", opts.Concurrency)
	}
	if opts.QueueDepth < 0 {
		return nil, fmt.Errorf("queue depth %d: want 0 (default) or more", opts.QueueDepth)
	}
	table, err := placement.New(nil, opts.Slots)
	if err != nil {
		return nil, fmt.Errorf("building the empty table: %w", err)
	}
	r := &Router{slots: opts.Slots, limit: opts.Concurrency, queueDepth: opts.QueueDepth}
	r.cur.Store(&view{table: table, byName: map[string]*pod{}, changed: make(chan struct{})})
	return r, nil
}

// Slots is the slot count of the router's entity space.
func (r *Router) Slots() int { return r.slots }

// Concurrency is the per-pod limit (0: unlimited).
func (r *Router) Concurrency() int { return r.limit }

// Update makes pods the ready set. When the set (names and addresses)
// differs from the current one it builds a new placement table and reports
// true; requests that Acquire afterwards use it. Pod names must be unique
// and non-empty, addresses non-empty; the order of pods does not matter.
func (r *Router) Update(pods []Pod) (bool, error) {
	sorted := slices.Clone(pods)
	slices.SortFunc(sorted, func(a, b Pod) int { return strings.Compare(a.Name, b.Name) })
	for i, p := range sorted {
		switch {
		case p.Name == "":
			return false, fmt.Errorf("pod with address %q has no name", p.Addr)
		case p.Addr == "":
			return false, fmt.Errorf("pod %q has no address", p.Name)
		case i > 0 && sorted[i-1].Name == p.Name:
			return false, fmt.Errorf("pod %q listed twice", p.Name)
		}
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.cur.Load()
	if old.closed {
		return false, ErrClosed
	}
	if slices.Equal(old.pods, sorted) {
		return false, nil
	}

	names := make([]string, len(sorted))
	for i, p := range sorted {
		names[i] = p.Name
	}
	table, err := placement.New(names, r.slots)
	if err != nil {
		return false, fmt.Errorf("building the placement table of %d pods: %w", len(names), err)
	}
	next := &view{table: table, byName: make(map[string]*pod, len(sorted)), pods: sorted, changed: make(chan struct{})}
	for _, p := range sorted {
		if o := old.byName[p.Name]; o != nil && o.Addr == p.Addr {
			next.byName[p.Name] = o
			continue
		}
		next.byName[p.Name] = newPod(p, r.limit, r.queueDepth)
	}
	if len(sorted) > 0 {
		next.bySlot = make([]*pod, r.slots)
		for s := range next.bySlot {
			next.bySlot[s] = next.byName[table.Owner(uint32(s))]
		}
	}
	r.cur.Store(next)
	for name, o := range old.byName {
		if next.byName[name] != o {
			o.leave()
		}
	}
	close(old.changed)
	return true, nil
}

// Close stops the router: requests waiting in Acquire and later calls fail
// with ErrClosed. Requests already sent are not touched.
func (r *Router) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.cur.Load()
	if old.closed {
		return
	}
	r.cur.Store(&view{table: old.table, byName: map[string]*pod{}, closed: true, changed: make(chan struct{})})
	for _, o := range old.byName {
		o.leave()
	}
	close(old.changed)
}

// Table is the current placement table.
func (r *Router) Table() *placement.Table { return r.cur.Load().table }

// Pods is the current ready set, sorted by name.
func (r *Router) Pods() []Pod { return slices.Clone(r.cur.Load().pods) }

// Waiting is the number of requests waiting in Acquire because the revision
// has no ready pod.
func (r *Router) Waiting() int { return int(r.waiting.Load()) }

// InFlight is the number of requests holding or waiting for a place at the
// ready pod name (0 for a pod that is not ready).
func (r *Router) InFlight(name string) int {
	if p := r.cur.Load().byName[name]; p != nil {
		return int(p.pending.Load())
	}
	return 0
}

// Pick is the routing decision alone: the key's slot and the pod that owns
// it in the current view, or ok == false when there is no ready pod. It
// neither waits nor takes a place in the pod's limit.
func (r *Router) Pick(key string) (slot uint32, owner Pod, ok bool) {
	v := r.cur.Load()
	slot = placement.SlotOf(key, r.slots)
	if v.bySlot == nil {
		return slot, Pod{}, false
	}
	p := v.bySlot[slot]
	return slot, p.Pod, true
}

// lookup returns the ready pod called name, or nil.
func (r *Router) lookup(name string) *pod { return r.cur.Load().byName[name] }

// Acquire waits until the revision has a ready pod and the owner of key's
// slot has room, and returns a Ticket holding that room. It fails with the
// context's error (wrapped in ErrNoReadyPod when there was no pod),
// ErrQueueFull or ErrClosed. The caller must Release the ticket.
//
// When the table changes while the request waits for its owner, the request
// routes again: a request leaves Acquire for the owner of its slot in a view
// that was current after it got its place.
func (r *Router) Acquire(ctx context.Context, key string) (Ticket, error) {
	return r.acquireSlot(ctx, placement.SlotOf(key, r.slots))
}

func (r *Router) acquireSlot(ctx context.Context, slot uint32) (Ticket, error) {
	for {
		v := r.cur.Load()
		if v.closed {
			return Ticket{}, ErrClosed
		}
		if v.bySlot == nil {
			if err := r.waitForPods(ctx, v); err != nil {
				return Ticket{}, err
			}
			continue
		}
		p := v.bySlot[slot]
		if err := p.acquire(ctx); err != nil {
			if errors.Is(err, errLeft) {
				continue // the pod left while we waited; route again
			}
			return Ticket{}, err
		}
		if now := r.cur.Load(); now != v && (now.bySlot == nil || now.bySlot[slot] != p) {
			// The owner changed between the lookup and the place.
			p.release()
			continue
		}
		return Ticket{router: r, pod: p, addr: p.Addr, slot: slot}, nil
	}
}

// waitForPods blocks until v is replaced or ctx ends.
func (r *Router) waitForPods(ctx context.Context, v *view) error {
	r.waiting.Add(1)
	defer r.waiting.Add(-1)
	select {
	case <-v.changed:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: waited for one until the request ended: %w", ErrNoReadyPod, ctx.Err())
	}
}

// Ticket is a routed request's place at a pod. The zero Ticket holds
// nothing. A Ticket is used by one goroutine at a time.
type Ticket struct {
	router *Router
	pod    *pod // whose limit is held; nil when sent to an address outside the ready set
	addr   string
	slot   uint32
}

// Valid reports whether t came from a successful Acquire and was not
// released.
func (t *Ticket) Valid() bool { return t.router != nil }

// Addr is the host:port the request goes to.
func (t *Ticket) Addr() string { return t.addr }

// Slot is the key's slot.
func (t *Ticket) Slot() uint32 { return t.slot }

// PodName is the ready pod the ticket holds a place at, or "" after a
// redirect to an address outside the ready set.
func (t *Ticket) PodName() string {
	if t.pod == nil {
		return ""
	}
	return t.pod.Name
}

// Release gives the place back. It is idempotent.
func (t *Ticket) Release() {
	if t.pod != nil {
		t.pod.release()
	}
	*t = Ticket{}
}

// reroute moves the ticket away from the pod it was sent to, which answered
// that it is draining: once the router's view no longer makes that pod the
// slot's owner (the endpoints update that follows a drain), the slot routes
// again. It waits at most maxWait for that view.
func (t *Ticket) reroute(ctx context.Context, maxWait time.Duration) error {
	r, slot, leaving := t.router, t.slot, t.PodName()
	if leaving == "" { // sent to a holder's address outside the ready set
		leaving = t.addr
	}
	t.Release()
	t.router, t.slot = r, slot
	wctx, cancel := context.WithTimeout(ctx, maxWait)
	defer cancel()
	for {
		v := r.cur.Load()
		if v.closed || v.bySlot == nil || (v.bySlot[slot].Name != leaving && v.bySlot[slot].Addr != leaving) {
			break
		}
		select {
		case <-v.changed:
		case <-wctx.Done():
			*t = Ticket{}
			return fmt.Errorf("%s is draining but still the slot's owner for this router after %s", leaving, maxWait)
		}
	}
	nt, err := r.acquireSlot(ctx, slot)
	if err != nil {
		*t = Ticket{}
		return err
	}
	*t = nt
	return nil
}

// redirect moves the ticket to the slot holder a pod named: the holder's
// ready endpoint when it is one (taking a place in its limit), otherwise
// holderAddr. The old place is given back first, so a request never holds
// two places.
func (t *Ticket) redirect(ctx context.Context, holder, holderAddr string) error {
	r, slot := t.router, t.slot
	t.Release()
	t.router, t.slot = r, slot
	for {
		p := r.lookup(holder)
		if p == nil {
			if holderAddr == "" {
				return fmt.Errorf("the slot holder %q is not a ready pod of the revision and no %s was given", holder, HeaderHolderAddr)
			}
			t.addr = holderAddr
			return nil
		}
		if err := p.acquire(ctx); err != nil {
			if errors.Is(err, errLeft) {
				continue
			}
			return err
		}
		t.pod, t.addr = p, p.Addr
		return nil
	}
}
