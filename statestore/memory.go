package statestore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// Memory is the Store in memory, for unit tests of agent logic. It keeps
// the same invariants as Redis, judged by the injected clock, and keeps
// times at millisecond precision as Redis does. A Flush batch is atomic as
// a whole (Redis is atomic per chunk). Handoff requests are dropped when a
// watcher's buffer is full, as pub/sub drops them for a slow subscriber.
type Memory struct {
	clk clock.PassiveClock

	mu         sync.Mutex
	hotSetSize int
	closed     bool
	done       chan struct{} // closed by Close: ends WatchHandoffs
	slots      map[SlotRef]*memSlot
	markers    map[string]string
	watchers   map[string]map[chan HandoffRequest]struct{} // by holder
}

type memSlot struct {
	lease   Lease // Holder is empty when free; Epoch survives release
	records map[string]*Record
	hot     map[string]int64 // key -> last access, unix ms
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty in-memory store whose time is clk.
func NewMemory(clk clock.PassiveClock) *Memory {
	return &Memory{
		clk:        clk,
		hotSetSize: DefaultHotSetSize,
		done:       make(chan struct{}),
		slots:      map[SlotRef]*memSlot{},
		markers:    map[string]string{},
		watchers:   map[string]map[chan HandoffRequest]struct{}{},
	}
}

// SetHotSetSize caps each slot's hot set at n keys (RedisOptions.HotSetSize).
func (m *Memory) SetHotSetSize(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if n <= 0 {
		n = DefaultHotSetSize
	}
	m.hotSetSize = n
}

func (m *Memory) nowMs() int64 { return m.clk.Now().UnixMilli() }

// lock takes the mutex unless the store is closed or space is invalid.
func (m *Memory) lock(space string) error {
	if err := validateSpace(space); err != nil {
		return err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	return nil
}

func (m *Memory) slot(s SlotRef) *memSlot {
	ms := m.slots[s]
	if ms == nil {
		ms = &memSlot{lease: Lease{Slot: s}, records: map[string]*Record{}, hot: map[string]int64{}}
		m.slots[s] = ms
	}
	return ms
}

// Load implements Store.
func (m *Memory) Load(_ context.Context, slot SlotRef, keys []string) (map[string]*Record, error) {
	if err := m.lock(slot.Space); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	out := make(map[string]*Record, len(keys))
	ms := m.slots[slot]
	if ms == nil {
		return out, nil
	}
	for _, k := range keys {
		if r, ok := ms.records[k]; ok {
			out[k] = cloneRecord(r)
		}
	}
	return out, nil
}

// LoadAll implements Store.
func (m *Memory) LoadAll(ctx context.Context, slots []SlotRef, keys [][]string) ([]map[string]*Record, error) {
	if len(keys) != len(slots) {
		return nil, fmt.Errorf("statestore: load from %d slots: %d key lists, want one per slot", len(slots), len(keys))
	}
	out := make([]map[string]*Record, len(slots))
	for i, s := range slots {
		recs, err := m.Load(ctx, s, keys[i])
		if err != nil {
			return nil, err
		}
		out[i] = recs
	}
	return out, nil
}

// Flush implements Store.
func (m *Memory) Flush(_ context.Context, lease Lease, records []*Record) (FlushResult, error) {
	var res FlushResult
	if err := validateLease(lease); err != nil {
		return res, err
	}
	if err := validateRecords(lease.Slot, records); err != nil {
		return res, err
	}
	if err := m.lock(lease.Slot.Space); err != nil {
		return res, err
	}
	defer m.mu.Unlock()
	ms := m.slot(lease.Slot)
	if ms.lease.Holder != lease.Holder || ms.lease.Epoch != lease.Epoch {
		return res, &FencedError{Lease: lease, Current: ms.lease}
	}
	now := m.nowMs()
	for _, r := range records {
		if cur, ok := ms.records[r.Key]; ok && cur.Version > r.Version {
			res.Rejected = append(res.Rejected, r.Key)
			continue
		}
		if r.Deleted {
			delete(ms.records, r.Key)
			delete(ms.hot, r.Key)
			continue
		}
		c := cloneRecord(r)
		at := r.LastAccess.UnixMilli()
		if r.LastAccess.IsZero() || at <= 0 {
			at = now
		}
		c.LastAccess = msTime(at)
		ms.records[r.Key] = c
		ms.hot[r.Key] = at
	}
	m.trimHot(ms)
	return res, nil
}

// trimHot drops the coldest keys beyond hotSetSize, in Redis rank order
// (score, then key), so both stores keep the same set.
func (m *Memory) trimHot(ms *memSlot) {
	extra := len(ms.hot) - m.hotSetSize
	if extra <= 0 {
		return
	}
	for _, k := range sortedHot(ms.hot)[:extra] {
		delete(ms.hot, k)
	}
}

// sortedHot returns the keys coldest first, ties by key, as a Redis sorted
// set ranks its members.
func sortedHot(hot map[string]int64) []string {
	keys := make([]string, 0, len(hot))
	for k := range hot {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := hot[keys[i]], hot[keys[j]]
		if a != b {
			return a < b
		}
		return keys[i] < keys[j]
	})
	return keys
}

// HotKeys implements Store.
func (m *Memory) HotKeys(_ context.Context, slot SlotRef, n int) ([]string, error) {
	if err := m.lock(slot.Space); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	ms := m.slots[slot]
	if ms == nil || n <= 0 {
		return nil, nil
	}
	keys := sortedHot(ms.hot)
	out := make([]string, 0, min(n, len(keys)))
	for i := len(keys) - 1; i >= 0 && len(out) < n; i-- {
		out = append(out, keys[i])
	}
	return out, nil
}

// Acquire implements Store.
func (m *Memory) Acquire(_ context.Context, slot SlotRef, holder, addr string, ttl time.Duration) (Lease, error) {
	if err := validateTTL("acquire", slot, holder, ttl); err != nil {
		return Lease{}, err
	}
	if err := m.lock(slot.Space); err != nil {
		return Lease{}, err
	}
	defer m.mu.Unlock()
	ms := m.slot(slot)
	now := m.nowMs()
	if l := ms.lease; l.Holder != "" && l.Holder != holder && l.Expires.UnixMilli() > now {
		return Lease{}, &HeldError{Lease: l}
	}
	ms.lease = Lease{
		Slot:     slot,
		Holder:   holder,
		Addr:     addr,
		Epoch:    ms.lease.Epoch + 1,
		Acquired: msTime(now),
		Expires:  msTime(now + ttl.Milliseconds()),
	}
	return ms.lease, nil
}

// AcquireWith implements Store.
func (m *Memory) AcquireWith(ctx context.Context, slot SlotRef, holder, addr string, ttl time.Duration, opts AcquireOptions) (Lease, map[string]*Record, error) {
	l, err := m.Acquire(ctx, slot, holder, addr, ttl)
	var held *HeldError
	if errors.As(err, &held) && opts.AskHolder {
		req := HandoffRequest{Slot: slot, Asker: holder, AskerAddr: addr}
		if err := m.RequestHandoff(ctx, req, held.Lease.Holder); err != nil {
			return Lease{}, nil, err
		}
	}
	if err != nil {
		return Lease{}, nil, err
	}
	// Nobody but the holder writes the slot now, so a second lock is as
	// good as one.
	recs, err := m.Load(ctx, slot, opts.Load)
	if err != nil {
		return l, nil, err
	}
	return l, recs, nil
}

// Renew implements Store.
func (m *Memory) Renew(_ context.Context, lease Lease, ttl time.Duration) (Lease, error) {
	if err := validateTTL("renew", lease.Slot, lease.Holder, ttl); err != nil {
		return Lease{}, err
	}
	if err := m.lock(lease.Slot.Space); err != nil {
		return Lease{}, err
	}
	defer m.mu.Unlock()
	ms := m.slot(lease.Slot)
	if ms.lease.Holder != lease.Holder || ms.lease.Epoch != lease.Epoch {
		return Lease{}, &FencedError{Lease: lease, Current: ms.lease}
	}
	ms.lease.Expires = msTime(m.nowMs() + ttl.Milliseconds())
	return ms.lease, nil
}

// RenewAll implements Store.
func (m *Memory) RenewAll(ctx context.Context, leases []Lease, ttl time.Duration) ([]Lease, []error) {
	renewed := make([]Lease, len(leases))
	errs := make([]error, len(leases))
	for i, l := range leases {
		renewed[i], errs[i] = m.Renew(ctx, l, ttl)
	}
	return renewed, errs
}

// AcquireAll implements Store.
func (m *Memory) AcquireAll(ctx context.Context, slots []SlotRef, holder, addr string, ttl time.Duration) ([]Lease, []error) {
	leases := make([]Lease, len(slots))
	errs := make([]error, len(slots))
	for i, s := range slots {
		leases[i], errs[i] = m.Acquire(ctx, s, holder, addr, ttl)
	}
	return leases, errs
}

// ReleaseAll implements Store.
func (m *Memory) ReleaseAll(ctx context.Context, leases []Lease) []error {
	errs := make([]error, len(leases))
	for i, l := range leases {
		errs[i] = m.Release(ctx, l)
	}
	return errs
}

// HotKeysAll implements Store.
func (m *Memory) HotKeysAll(ctx context.Context, slots []SlotRef, n int) ([][]string, error) {
	out := make([][]string, len(slots))
	for i, s := range slots {
		keys, err := m.HotKeys(ctx, s, n)
		if err != nil {
			return nil, err
		}
		out[i] = keys
	}
	return out, nil
}

// Release implements Store.
func (m *Memory) Release(_ context.Context, lease Lease) error {
	if err := validateLease(lease); err != nil {
		return err
	}
	if err := m.lock(lease.Slot.Space); err != nil {
		return err
	}
	defer m.mu.Unlock()
	ms := m.slot(lease.Slot)
	if ms.lease.Holder == lease.Holder && ms.lease.Epoch == lease.Epoch {
		ms.lease = Lease{Slot: lease.Slot, Epoch: lease.Epoch}
	}
	return nil
}

// ReleaseFor implements Store.
func (m *Memory) ReleaseFor(_ context.Context, lease Lease, req HandoffRequest) error {
	if err := validateLease(lease); err != nil {
		return err
	}
	if req.Asker == "" {
		return fmt.Errorf("statestore: release slot %s for a handoff: asker is empty", lease.Slot)
	}
	if err := m.lock(lease.Slot.Space); err != nil {
		return err
	}
	defer m.mu.Unlock()
	ms := m.slot(lease.Slot)
	if ms.lease.Holder != lease.Holder || ms.lease.Epoch != lease.Epoch {
		return nil
	}
	ms.lease = Lease{Slot: lease.Slot, Epoch: lease.Epoch}
	req.Slot, req.Released = lease.Slot, true
	m.deliver(req.Asker, req)
	return nil
}

// deliver sends msg to holder's watchers; the caller holds m.mu.
func (m *Memory) deliver(holder string, msg HandoffRequest) {
	for ch := range m.watchers[holder] {
		select {
		case ch <- msg:
		default: // a full buffer drops it, as pub/sub would
		}
	}
}

// Current implements Store.
func (m *Memory) Current(_ context.Context, slot SlotRef) (Lease, error) {
	if err := m.lock(slot.Space); err != nil {
		return Lease{}, err
	}
	defer m.mu.Unlock()
	if ms := m.slots[slot]; ms != nil {
		return ms.lease, nil
	}
	return Lease{Slot: slot}, nil
}

// RequestHandoff implements Store.
func (m *Memory) RequestHandoff(_ context.Context, req HandoffRequest, holder string) error {
	if err := m.lock(req.Slot.Space); err != nil {
		return err
	}
	defer m.mu.Unlock()
	if holder == "" {
		return fmt.Errorf("statestore: handoff of slot %s: holder is empty", req.Slot)
	}
	req.Released = false // only ReleaseFor sends notices
	m.deliver(holder, req)
	return nil
}

// WatchHandoffs implements Store.
func (m *Memory) WatchHandoffs(ctx context.Context, holder string) (<-chan HandoffRequest, error) {
	if holder == "" {
		return nil, errors.New("statestore: watch handoffs: holder is empty")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	ch := make(chan HandoffRequest, 16)
	if m.watchers[holder] == nil {
		m.watchers[holder] = map[chan HandoffRequest]struct{}{}
	}
	m.watchers[holder][ch] = struct{}{}
	go func() {
		select {
		case <-ctx.Done():
		case <-m.done:
		}
		// Under the lock, so RequestHandoff never sends on a closed channel.
		m.mu.Lock()
		defer m.mu.Unlock()
		delete(m.watchers[holder], ch)
		close(ch)
	}()
	return ch, nil
}

// EnsureMarker implements Store.
func (m *Memory) EnsureMarker(_ context.Context, space string) (string, bool, error) {
	if err := m.lock(space); err != nil {
		return "", false, err
	}
	defer m.mu.Unlock()
	if id, ok := m.markers[space]; ok {
		return id, false, nil
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", false, fmt.Errorf("statestore: marker id: %w", err)
	}
	id := hex.EncodeToString(b[:])
	m.markers[space] = id
	return id, true, nil
}

// CheckMarker implements Store.
func (m *Memory) CheckMarker(_ context.Context, space, id string) error {
	if err := m.lock(space); err != nil {
		return err
	}
	defer m.mu.Unlock()
	cur, ok := m.markers[space]
	switch {
	case !ok:
		return fmt.Errorf("%w: space %s: marker %s is missing", ErrStoreReset, space, id)
	case cur != id:
		return fmt.Errorf("%w: space %s: marker is %s, want %s", ErrStoreReset, space, cur, id)
	}
	return nil
}

// Reset empties the store as a Redis that came back without its data would
// be, markers included, so agents' reset detection can be tested.
func (m *Memory) Reset() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.slots = map[SlotRef]*memSlot{}
	m.markers = map[string]string{}
}

// Ping implements Store.
func (m *Memory) Ping(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	return nil
}

// Close implements Store. It ends every WatchHandoffs channel.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.closed {
		m.closed = true
		close(m.done)
	}
	return nil
}

func cloneRecord(r *Record) *Record {
	c := &Record{Key: r.Key, Version: r.Version, LastAccess: r.LastAccess}
	if len(r.State) > 0 {
		c.State = append([]byte(nil), r.State...)
	}
	if len(r.Dedup) > 0 {
		c.Dedup = make([]DedupEntry, len(r.Dedup))
		for i, d := range r.Dedup {
			c.Dedup[i] = DedupEntry{Source: d.Source, ID: d.ID}
			if len(d.Outcome) > 0 {
				c.Dedup[i].Outcome = append([]byte(nil), d.Outcome...)
			}
		}
	}
	return c
}
