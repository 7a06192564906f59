package agent

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
	"k8s.io/utils/clock"

	"github.com/kstate-dev/kstate/pkg/placement"
	adminv1 "github.com/kstate-dev/kstate/proto/admin/v1"
	functionv1 "github.com/kstate-dev/kstate/proto/function/v1"
	"github.com/kstate-dev/kstate/statestore"
)

// Function is the user function, called over gRPC on localhost.
type Function interface {
	Handle(ctx context.Context, req *functionv1.HandleRequest) (*functionv1.HandleResponse, error)
}

// Emitter sends the events a function asked to emit (to K_SINK).
type Emitter interface {
	Emit(ctx context.Context, events []*functionv1.CloudEvent)
}

// Invocation is one event for one key.
type Invocation struct {
	Key   string
	Event *functionv1.CloudEvent
	HTTP  *functionv1.HttpRequest
	// Dedup: the event is a CloudEvent whose (source, id) identifies a
	// redelivery. Plain HTTP requests have no such identity.
	Dedup bool
}

// Result is the outcome of an Invocation.
type Result struct {
	Slot uint32
	// Reply carries only the reply fields of the function's answer.
	Reply *functionv1.HandleResponse
	// Duplicate: a redelivered event, answered with its first outcome.
	Duplicate bool
}

// Agent is the per-pod engine. Create it with New, then Start it.
type Agent struct {
	cfg     Config
	store   statestore.Store
	fn      Function
	emitter Emitter
	clock   clock.WithTicker
	logger  *zap.SugaredLogger

	slots []*slot

	ctx    context.Context // ends when the agent stops; background work uses it
	cancel context.CancelFunc
	wg     sync.WaitGroup

	pending    atomic.Int64
	dirtyBytes atomic.Int64
	cacheBytes atomic.Int64
	draining   atomic.Bool
	storeReset atomic.Bool
	storeOK    atomic.Bool
	marker     atomic.Value // string: the store marker seen at start
	started    time.Time
	prepared   atomic.Bool // a Prepare call finished (the preload gate)
	watching   atomic.Bool // the handoff watch is subscribed (tests wait for it)

	flushKick   chan struct{}
	flushWaitMu sync.Mutex
	flushWait   chan struct{} // closed and replaced after every flush round

	stats struct {
		requests, hits, misses                   atomic.Int64
		flushes, flushedEntities, rejectedWrites atomic.Int64
		handoffsIn, handoffsOut                  atomic.Int64
	}
}

// Option customizes an Agent.
type Option func(*Agent)

// WithClock injects the clock (tests use a fake one).
func WithClock(c clock.WithTicker) Option { return func(a *Agent) { a.clock = c } }

// WithLogger sets the logger.
func WithLogger(l *zap.SugaredLogger) Option { return func(a *Agent) { a.logger = l } }

// WithEmitter sets where emitted events go.
func WithEmitter(e Emitter) Option { return func(a *Agent) { a.emitter = e } }

// New builds an agent over a store and a function. cfg must be valid.
func New(cfg Config, store statestore.Store, fn Function, opts ...Option) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Agent{
		cfg:       cfg,
		store:     store,
		fn:        fn,
		clock:     clock.RealClock{},
		logger:    zap.NewNop().Sugar(),
		flushKick: make(chan struct{}, 1),
		flushWait: make(chan struct{}),
	}
	for _, o := range opts {
		o(a)
	}
	if a.emitter == nil {
		a.emitter = newSinkEmitter(cfg.Sink, a.logger)
	}
	a.slots = make([]*slot, cfg.Slots)
	for i := range a.slots {
		a.slots[i] = newSlot(statestore.SlotRef{Space: cfg.Space, Slot: uint32(i)})
	}
	a.marker.Store("")
	return a, nil
}

// Start runs the background loops until Stop. It does not wait for the
// store: Ready stays false until the store answered.
func (a *Agent) Start(ctx context.Context) {
	a.ctx, a.cancel = context.WithCancel(context.WithoutCancel(ctx))
	a.started = a.clock.Now()
	a.loop(a.connectLoop)
	a.loop(a.flushLoop)
	a.loop(a.renewLoop)
	a.loop(a.evictLoop)
	a.loop(a.handoffLoop)
}

func (a *Agent) loop(f func()) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		f()
	}()
}

// Stop ends the background loops without flushing (Drain flushes).
func (a *Agent) Stop() {
	a.cancel()
	a.wg.Wait()
}

// Ready: the store answered, no reset was detected, we are not draining,
// and the preload gate (if any) is open.
func (a *Agent) Ready() bool {
	return a.marker.Load().(string) != "" && !a.storeReset.Load() && !a.draining.Load() && a.preloadGateOpen()
}

// preloadGateOpen: a joining pod stays unready until the controller's
// Prepare call preloaded what it is about to own, but never longer than
// KSTATE_PRELOAD_GATE, after which it loads lazily.
func (a *Agent) preloadGateOpen() bool {
	return a.cfg.PreloadGate == 0 || a.prepared.Load() || a.clock.Since(a.started) >= a.cfg.PreloadGate
}

// Invoke runs one event through the key's mailbox and the function.
func (a *Agent) Invoke(ctx context.Context, inv *Invocation) (*Result, error) {
	a.stats.requests.Add(1)
	slotNum := placement.SlotOf(inv.Key, a.cfg.Slots)
	res := &Result{Slot: slotNum}
	switch {
	case a.draining.Load():
		return res, errDraining
	case a.storeReset.Load():
		return res, errStoreReset
	}
	if n := a.pending.Add(1); n > int64(a.cfg.MaxPending) {
		a.pending.Add(-1)
		return res, &OverloadError{What: fmt.Sprintf("%d events pending (KSTATE_MAX_PENDING)", a.cfg.MaxPending), RetryAfter: time.Second}
	}
	defer a.pending.Add(-1)

	s := a.slots[slotNum]
	if _, err := a.enter(ctx, s); err != nil {
		return res, err
	}
	defer a.leave(s)
	e := s.entity(inv.Key)
	defer s.unref(e)
	if err := e.mb.lock(ctx, a.cfg.MaxQueuePerKey); err != nil {
		if errors.Is(err, errMailboxFull) {
			return res, &OverloadError{What: fmt.Sprintf("key %q has %d events queued (KSTATE_MAX_QUEUE_PER_KEY)", inv.Key, a.cfg.MaxQueuePerKey), RetryAfter: time.Second}
		}
		return res, fmt.Errorf("waiting for key %q: %w", inv.Key, errDeadline)
	}
	defer e.mb.unlock()

	if err := a.ensureLoaded(ctx, s, e); err != nil {
		return res, err
	}
	e.mu.Lock()
	if e.gone {
		e.mu.Unlock()
		return res, errSlotLost
	}
	req := &functionv1.HandleRequest{Key: inv.Key, State: e.rec.State, Exists: e.exists, Version: e.rec.Version, Event: inv.Event, Http: inv.HTTP}
	dedup, seen := e.rec.Dedup, e.rec.Version
	e.mu.Unlock()

	if inv.Dedup {
		for _, d := range dedup {
			if d.Source == inv.Event.GetSource() && d.ID == inv.Event.GetId() {
				reply := &functionv1.HandleResponse{}
				if err := proto.Unmarshal(d.Outcome, reply); err != nil {
					return res, fmt.Errorf("decoding the stored outcome of event %s/%s: %w", d.Source, d.ID, err)
				}
				// With sync durability a duplicate is acknowledged only
				// once the first delivery's update is durable, as the
				// first delivery would have been: its 503 may be why
				// this retry came. The entry is in the version seen here
				// or an earlier one.
				if a.cfg.Durability == DurabilitySync {
					if err := a.waitFlushed(ctx, e, seen); err != nil {
						return res, err
					}
				}
				res.Reply, res.Duplicate = reply, true
				return res, nil
			}
		}
	}

	callCtx, cancel := context.WithTimeout(ctx, a.cfg.InvokeTimeout)
	resp, err := a.fn.Handle(callCtx, req)
	cancel()
	if err != nil {
		return res, &FunctionError{Err: err}
	}
	res.Reply = replyOnly(resp)

	writes := resp.GetAction() != functionv1.HandleResponse_KEEP || (inv.Dedup && len(resp.GetEmit()) > 0)
	if writes && a.dirtyBytes.Load() >= a.cfg.MaxDirtyBytes {
		// Nothing was applied: the function's answer is dropped, so the
		// caller may retry safely.
		a.kickFlush()
		return res, &OverloadError{What: fmt.Sprintf("%d unflushed bytes (KSTATE_MAX_DIRTY_BYTES); the state store is slow or unreachable", a.dirtyBytes.Load()), RetryAfter: 2 * time.Second}
	}

	var version uint64
	e.mu.Lock()
	if e.gone {
		e.mu.Unlock()
		return res, errSlotLost
	}
	e.used = a.clock.Now()
	e.rec.LastAccess = e.used
	if writes {
		switch resp.GetAction() {
		case functionv1.HandleResponse_SET:
			e.rec.State, e.exists = resp.GetState(), true
		case functionv1.HandleResponse_DELETE:
			e.rec.State, e.exists = nil, false
			e.rec.Dedup = nil
		}
		e.rec.Version++
		if inv.Dedup && e.exists {
			outcome, err := proto.Marshal(res.Reply)
			if err == nil {
				e.rec.Dedup = appendDedup(e.rec.Dedup, statestore.DedupEntry{Source: inv.Event.GetSource(), ID: inv.Event.GetId(), Outcome: outcome}, a.cfg.DedupWindow)
			}
		}
		version = e.rec.Version
		a.markDirty(s, e)
	}
	e.mu.Unlock()

	if a.cfg.Durability == DurabilitySync {
		// A reply that writes waits for its own update; one that does
		// not still shows the state it read, which must not be an
		// update that is not durable yet (and may be lost) either.
		if !writes {
			version = seen
		}
		if err := a.waitFlushed(ctx, e, version); err != nil {
			return res, err
		}
	}
	if len(resp.GetEmit()) > 0 {
		a.emitter.Emit(a.ctx, resp.GetEmit())
	}
	return res, nil
}

// appendDedup keeps the newest window entries.
func appendDedup(d []statestore.DedupEntry, e statestore.DedupEntry, window int) []statestore.DedupEntry {
	out := make([]statestore.DedupEntry, 0, window)
	if len(d) >= window {
		d = d[len(d)-window+1:]
	}
	out = append(out, d...)
	return append(out, e)
}

func replyOnly(r *functionv1.HandleResponse) *functionv1.HandleResponse {
	out := &functionv1.HandleResponse{}
	switch rep := r.GetReply().(type) {
	case *functionv1.HandleResponse_ReplyEvent:
		out.Reply = rep
	case *functionv1.HandleResponse_ReplyHttp:
		out.Reply = rep
	}
	return out
}

// ensureLoaded reads e from the store on a miss. The caller holds e's
// mailbox, so there is one load per key at a time.
func (a *Agent) ensureLoaded(ctx context.Context, s *slot, e *entity) error {
	e.mu.Lock()
	// A hint preloaded while another agent held the slot may be older than
	// what that agent wrote since: it is read again under our lease (the
	// slot's revalidation usually did that already).
	loaded := e.loaded && !e.unverified
	e.mu.Unlock()
	if loaded {
		a.stats.hits.Add(1)
		return nil
	}
	a.stats.misses.Add(1)
	ctx, cancel := context.WithTimeout(ctx, a.cfg.FlushTimeout)
	defer cancel()
	recs, err := a.store.Load(ctx, s.ref, []string{e.key})
	if err != nil {
		a.noteStoreErr(err)
		return &UnavailableError{Err: err}
	}
	e.mu.Lock()
	e.setLoaded(recs[e.key], a)
	e.unverified = false
	e.mu.Unlock()
	return nil
}

// waitFlushed returns when version v of e is in the store. It gives up
// after KSTATE_LEASE_TTL: by then the store has been unreachable for longer
// than the slot's lease lasts, the write may be fenced or may land later,
// and a caller waiting for the request's own deadline (Knative's revision
// timeout, minutes) learns nothing more by waiting.
//
// The timer starts only when there is something to wait for: with sync
// durability every reply comes through here, and most find their version
// written already.
func (a *Agent) waitFlushed(ctx context.Context, e *entity, v uint64) error {
	var limit <-chan time.Time
	for {
		a.flushWaitMu.Lock()
		ch := a.flushWait
		a.flushWaitMu.Unlock()
		e.mu.Lock()
		done, gone := e.flushed >= v, e.gone
		e.mu.Unlock()
		if done {
			return nil
		}
		if gone {
			return errSlotLost
		}
		if limit == nil {
			limit = a.clock.After(a.cfg.LeaseTTL)
		}
		a.kickFlush()
		select {
		case <-ch:
		case <-ctx.Done():
			return &UnavailableError{Err: fmt.Errorf("the update is applied but not yet durable: %w", ctx.Err())}
		case <-limit:
			return &UnavailableError{Err: fmt.Errorf("the update is applied in this pod but not yet durable after %s (KSTATE_LEASE_TTL); it is written when the store answers, unless the slot moves first: retry with the same CloudEvent id to learn its outcome", a.cfg.LeaseTTL)}
		}
	}
}

func (a *Agent) kickFlush() {
	select {
	case a.flushKick <- struct{}{}:
	default:
	}
}

func (a *Agent) notifyFlushed() {
	a.flushWaitMu.Lock()
	close(a.flushWait)
	a.flushWait = make(chan struct{})
	a.flushWaitMu.Unlock()
}

// tick runs fn every d, and whenever kick fires (nil: never), until the
// agent stops.
func (a *Agent) tick(d time.Duration, kick <-chan struct{}, fn func()) {
	t := a.clock.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-t.C():
		case <-kick:
		}
		fn()
	}
}

func (a *Agent) flushLoop() {
	a.tick(a.cfg.FlushInterval, a.flushKick, func() {
		if !a.storeReset.Load() {
			a.flushAll(a.ctx) //nolint:errcheck // errors are logged and retried next round.
		}
	})
}

// flushAll flushes every slot with dirty entities, several slots at a time.
// It returns how many entities landed and the first error.
func (a *Agent) flushAll(ctx context.Context) (int, error) {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		total    int
		firstErr error
		sem      = make(chan struct{}, flushParallelism)
	)
	for _, s := range a.slots {
		if s.dirtyCount() == 0 {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func(s *slot) {
			defer func() { <-sem; wg.Done() }()
			n, err := a.flushSlot(ctx, s)
			mu.Lock()
			total += n
			if err != nil && firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
		}(s)
	}
	wg.Wait()
	a.notifyFlushed()
	return total, firstErr
}

// flushParallelism: slots flushed concurrently, so the round trips of
// different slots overlap on the connection pool.
const flushParallelism = 16

// flushSlot writes the dirty entities of one slot in one fenced batch.
func (a *Agent) flushSlot(ctx context.Context, s *slot) (int, error) {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	s.mu.Lock()
	lease, phase := s.lease, s.phase
	s.mu.Unlock()
	if phase != phaseHeld && phase != phaseDraining {
		return 0, nil
	}
	s.dirtyMu.Lock()
	ents := make([]*entity, 0, len(s.dirty))
	for _, e := range s.dirty {
		ents = append(ents, e)
	}
	s.dirtyMu.Unlock()
	if len(ents) == 0 {
		return 0, nil
	}
	recs := make([]*statestore.Record, len(ents))
	for i, e := range ents {
		e.mu.Lock()
		recs[i] = e.record()
		e.mu.Unlock()
	}
	fctx, cancel := context.WithTimeout(ctx, a.cfg.FlushTimeout)
	res, err := a.store.Flush(fctx, lease, recs)
	cancel()
	if err != nil {
		if errors.Is(err, statestore.ErrFenced) {
			a.fenced(s, lease, err)
			return 0, err
		}
		a.noteStoreErr(err)
		return 0, fmt.Errorf("flushing slot %s: %w", s.ref, err)
	}
	a.storeOK.Store(true)
	rejected := make(map[string]bool, len(res.Rejected))
	for _, k := range res.Rejected {
		rejected[k] = true
	}
	for i, e := range ents {
		e.mu.Lock()
		if rejected[e.key] {
			// The store has a newer version than ours under our own epoch:
			// our copy is stale. Forget it; the next event reloads.
			e.loaded = false
			a.uncharge(s, e)
		} else {
			a.markClean(s, e, recs[i].Version)
		}
		e.mu.Unlock()
	}
	if len(rejected) > 0 {
		a.stats.rejectedWrites.Add(int64(len(rejected)))
		a.logger.Errorw("store rejected stale entity versions", zap.Stringer("slot", s.ref), zap.Strings("keys", res.Rejected))
	}
	a.stats.flushes.Add(1)
	a.stats.flushedEntities.Add(int64(len(ents) - len(rejected)))
	return len(ents) - len(rejected), nil
}

// fenced handles a flush the store refused: either the slot was taken over
// (drop it) or the whole store was reset (keep everything, stop serving).
func (a *Agent) fenced(s *slot, lease statestore.Lease, cause error) {
	if a.checkReset() {
		return
	}
	// A renewal racing a release we made ourselves finds the lease gone too;
	// only a slot that was still ours is news.
	if a.dropSlot(s, lease, true) {
		a.logger.Warnw("slot lease lost", zap.Stringer("slot", s.ref), zap.Error(cause))
	}
}

// checkReset compares the store's marker with the one seen at start. A
// missing marker means the store came back empty: say so loudly, keep all
// state in memory, and stop serving until the store is restored.
func (a *Agent) checkReset() bool {
	marker := a.marker.Load().(string)
	if marker == "" {
		return false
	}
	ctx, cancel := context.WithTimeout(a.ctx, a.cfg.FlushTimeout)
	defer cancel()
	err := a.store.CheckMarker(ctx, a.cfg.Space, marker)
	switch {
	case errors.Is(err, statestore.ErrStoreReset):
		if !a.storeReset.Swap(true) {
			a.logger.Errorw("STATE STORE RESET DETECTED: the store's marker for this space is gone, so the store came back empty or was replaced. "+
				"kstate keeps every entity in memory, stops serving and stops writing; restore the store from its AOF or backup and the agent resumes by itself.",
				zap.String("space", a.cfg.Space), zap.String("expectedMarker", marker), zap.Int64("cachedBytes", a.cacheBytes.Load()), zap.Int64("dirtyBytes", a.dirtyBytes.Load()))
		}
		return true
	case err == nil:
		if a.storeReset.Swap(false) {
			a.logger.Infow("state store marker is back; resuming", zap.String("space", a.cfg.Space))
		}
	}
	return a.storeReset.Load()
}

func (a *Agent) noteStoreErr(err error) {
	if errors.Is(err, statestore.ErrUnavailable) && a.storeOK.Swap(false) {
		a.logger.Warnw("state store unreachable: serving warm entities, buffering writes up to KSTATE_MAX_DIRTY_BYTES", zap.Error(err))
	}
}

// connectLoop waits for the store and takes (or creates) the space's marker.
func (a *Agent) connectLoop() {
	backoff := 100 * time.Millisecond
	for a.ctx.Err() == nil {
		ctx, cancel := context.WithTimeout(a.ctx, a.cfg.FlushTimeout)
		id, created, err := a.store.EnsureMarker(ctx, a.cfg.Space)
		cancel()
		if err == nil {
			a.marker.Store(id)
			a.storeOK.Store(true)
			a.logger.Infow("state store connected", zap.String("space", a.cfg.Space), zap.Bool("newSpace", created))
			if !a.preloadGateOpen() {
				a.loop(a.prepareFromZero)
			}
			return
		}
		a.logger.Warnw("state store not reachable yet", zap.Error(err))
		select {
		case <-a.clock.After(backoff):
		case <-a.ctx.Done():
		}
		if backoff < 2*time.Second {
			backoff *= 2
		}
	}
}

// renewLoop renews held leases and watches for a store reset.
func (a *Agent) renewLoop() {
	a.tick(a.cfg.renewInterval(), nil, func() {
		if !a.checkReset() {
			a.renewAll()
		}
	})
}

// renewAll renews every held lease in one store call: one round trip of a
// few script calls (statestore.RedisOptions.BatchKeys leases each), not one
// command per lease.
func (a *Agent) renewAll() {
	var slots []*slot
	var leases []statestore.Lease
	for _, s := range a.slots {
		s.mu.Lock()
		if s.phase == phaseHeld || s.phase == phaseDraining {
			slots = append(slots, s)
			leases = append(leases, s.lease)
		}
		s.mu.Unlock()
	}
	if len(leases) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(a.ctx, a.cfg.FlushTimeout)
	renewed, errs := a.store.RenewAll(ctx, leases, a.cfg.LeaseTTL)
	cancel()
	for i, err := range errs {
		s, lease := slots[i], leases[i]
		switch {
		case err == nil:
			a.storeOK.Store(true)
			s.mu.Lock()
			if s.lease.Epoch == lease.Epoch {
				s.lease = renewed[i]
			}
			s.mu.Unlock()
		case errors.Is(err, statestore.ErrFenced):
			a.fenced(s, lease, err)
		default:
			// Outage: keep serving warm entities. In a full outage nobody
			// else can take the slot either. If only this agent is cut
			// off, another may take it after the TTL, and the store's
			// fencing then rejects what we buffered: the documented loss
			// case (docs/architecture.md, "What can be lost").
			a.noteStoreErr(err)
		}
	}
}

func (a *Agent) handoffLoop() {
	for a.ctx.Err() == nil {
		ch, err := a.store.WatchHandoffs(a.ctx, a.cfg.Pod)
		if err != nil {
			a.noteStoreErr(err)
			select {
			case <-a.clock.After(time.Second):
			case <-a.ctx.Done():
			}
			continue
		}
		a.watching.Store(true)
		for req := range ch {
			if req.Released {
				a.released(req)
				continue
			}
			go a.handOff(req)
		}
		a.watching.Store(false)
	}
}

// released wakes the acquisition that waits for req.Slot: its holder
// released it for us (statestore.Store.ReleaseFor).
func (a *Agent) released(req statestore.HandoffRequest) {
	if req.Slot.Space != a.cfg.Space || int(req.Slot.Slot) >= len(a.slots) {
		return
	}
	a.slots[req.Slot.Slot].wake()
}

func (a *Agent) evictLoop() {
	every := min(max(a.cfg.IdleEviction/4, 50*time.Millisecond), 10*time.Second)
	a.tick(every, nil, func() { a.evict(a.cfg.IdleEviction) })
}

// evict drops clean, unused entities idle for longer than idle, then the
// least recently used ones while the cache is over budget.
func (a *Agent) evict(idle time.Duration) {
	now := a.clock.Now()
	type candidate struct {
		s    *slot
		e    *entity
		last time.Time
	}
	var lru []candidate
	for _, s := range a.slots {
		s.mu.Lock()
		for _, e := range s.entities {
			if e.refs > 0 {
				continue
			}
			e.mu.Lock()
			if !e.dirty {
				if !e.loaded || now.Sub(e.used) >= idle {
					a.forget(s, e)
				} else {
					lru = append(lru, candidate{s, e, e.used})
				}
			}
			e.mu.Unlock()
		}
		s.mu.Unlock()
	}
	if a.cacheBytes.Load() <= a.cfg.CacheBytes {
		return
	}
	sort.Slice(lru, func(i, j int) bool { return lru[i].last.Before(lru[j].last) })
	for _, c := range lru {
		if a.cacheBytes.Load() <= a.cfg.CacheBytes {
			return
		}
		c.s.mu.Lock()
		c.e.mu.Lock()
		if c.e.refs == 0 && !c.e.dirty && c.s.entities[c.e.key] == c.e {
			a.forget(c.s, c.e)
		}
		c.e.mu.Unlock()
		c.s.mu.Unlock()
	}
	if a.cacheBytes.Load() > a.cfg.CacheBytes {
		a.kickFlush() // what is left is dirty: flush it so it can go.
	}
}

// Flush writes every dirty entity now, retrying until all landed or ctx ends.
func (a *Agent) Flush(ctx context.Context) (int, error) {
	total := 0
	for {
		n, err := a.flushAll(ctx)
		total += n
		if a.dirtyEntities() == 0 {
			return total, nil
		}
		if err == nil {
			continue
		}
		if errors.Is(err, statestore.ErrFenced) {
			continue // that slot was dropped; flush the rest.
		}
		select {
		case <-ctx.Done():
			return total, fmt.Errorf("flush incomplete, %d entities still dirty: %w", a.dirtyEntities(), err)
		case <-a.clock.After(100 * time.Millisecond):
		}
	}
}

func (a *Agent) dirtyEntities() int {
	n := 0
	for _, s := range a.slots {
		n += s.dirtyCount()
	}
	return n
}

// DrainSummary is what Drain did.
type DrainSummary struct {
	Flushed  int
	Released int
	Took     time.Duration
}

// Drain is the SIGTERM path: refuse new work, let in-flight events finish,
// flush everything, release every lease.
func (a *Agent) Drain(ctx context.Context) (DrainSummary, error) {
	start := a.clock.Now()
	a.draining.Store(true)
	for a.pending.Load() > 0 {
		select {
		case <-ctx.Done():
			return DrainSummary{Took: a.clock.Since(start)}, fmt.Errorf("%d events still in flight: %w", a.pending.Load(), ctx.Err())
		case <-a.clock.After(5 * time.Millisecond):
		}
	}
	flushed, err := a.Flush(ctx)
	sum := DrainSummary{Flushed: flushed}
	if err != nil {
		sum.Took = a.clock.Since(start)
		return sum, err
	}
	var leases []statestore.Lease
	for _, s := range a.slots {
		s.mu.Lock()
		for s.phase == phaseAcquiring {
			// An acquisition that started before the drain (its events were
			// waiting for it) may still win the lease: wait, then release
			// what it got, so no lease is left to expire.
			at := s.attempt
			s.mu.Unlock()
			<-at.done
			s.mu.Lock()
		}
		lease, phase := s.lease, s.phase
		s.mu.Unlock()
		if (phase == phaseHeld || phase == phaseDraining) && a.dropSlot(s, lease, false) {
			leases = append(leases, lease)
		}
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.FlushTimeout)
	defer cancel()
	for i, err := range a.store.ReleaseAll(rctx, leases) {
		if err != nil {
			// The lease expires on its own; nothing is unsafe.
			a.logger.Warnw("lease release failed", zap.Stringer("slot", leases[i].Slot), zap.Error(err))
		}
	}
	sum.Released = len(leases)
	sum.Took = a.clock.Since(start)
	return sum, nil
}

// Prepare preloads the hottest entities of slots (all when empty), within
// the budgets. The free slots among those with data are taken on the way,
// so their entities are authoritative at once (scale from zero); entities
// of a slot held elsewhere are hints, re-read when its lease comes to us.
//
// Its cost follows the data, not the slot count: the hot sets are read in
// one round trip that answers only for slots with keys, their free leases
// are taken in one more, and the entities come preloadBatch keys a round
// trip. A slot without data is left to be taken on first use. Taking all
// 4,096 from zero cost a pod 80-100 ms before it was ready, most of it the
// store writing and fsyncing 4,096 lease records (docs/performance.md,
// P5); and a slot nobody sends events to would only cost renewals.
func (a *Agent) Prepare(ctx context.Context, slots []uint32, maxEntities, maxBytes int64) (*adminv1.PrepareResponse, error) {
	resp, _, err := a.prepare(ctx, slots, maxEntities, maxBytes, false)
	if err == nil || resp != nil {
		a.prepared.Store(true)
	}
	return resp, err
}

// prepareFromZero is the preload of a pod that starts alone in its space
// (scale from zero), without waiting for the controller's Prepare: the
// controller learns of a pod only when the kubelet reports it running,
// which lagged the agent by 0.3 s and more on the e2e cluster, all of it
// added to the cold start. It takes the free slots with data and preloads
// their entities, and opens the preload gate if it got every slot with
// data: then nobody else holds a slot of the space, and every slot is this
// pod's in the placement. Otherwise another pod is up, and the gate waits
// for the controller's Prepare of the slots the placement gives this pod
// (the free slots taken on the way are handed over on their first event).
func (a *Agent) prepareFromZero() {
	resp, alone, err := a.prepare(a.ctx, nil, 0, 0, true)
	switch {
	case err != nil:
		a.logger.Warnw("preload from zero failed; waiting for the controller's Prepare", zap.Error(err))
	case alone:
		a.prepared.Store(true)
		a.logger.Infow("alone in the space: preloaded without the controller", zap.Int64("entities", resp.GetEntitiesLoaded()),
			zap.Int64("bytes", resp.GetBytesLoaded()), zap.Int64("tookMs", resp.GetDurationMs()))
	default:
		a.logger.Infow("other pods hold slots of the space; waiting for the controller's Prepare")
	}
}

// prepare is Prepare; with freeOnly it preloads only the slots it could
// take, and alone says whether it holds every slot with data.
func (a *Agent) prepare(ctx context.Context, slots []uint32, maxEntities, maxBytes int64, freeOnly bool) (resp *adminv1.PrepareResponse, alone bool, err error) {
	start := a.clock.Now()
	if maxEntities <= 0 {
		maxEntities = a.cfg.PreloadEntities
	}
	if maxBytes <= 0 {
		maxBytes = a.cfg.PreloadBytes
	}
	if len(slots) == 0 {
		slots = make([]uint32, len(a.slots))
		for i := range slots {
			slots[i] = uint32(i)
		}
	}
	for _, n := range slots {
		if int(n) >= len(a.slots) {
			return nil, false, fmt.Errorf("slot %d out of range: the space has %d slots", n, len(a.slots))
		}
	}
	// Spread the entity budget evenly, so one hot slot cannot starve the rest.
	perSlot := max(int(maxEntities/int64(len(slots))), 1)
	refs := make([]statestore.SlotRef, len(slots))
	for i, n := range slots {
		refs[i] = a.slots[n].ref
	}
	hot, err := a.store.HotKeysAll(ctx, refs, perSlot)
	if err != nil {
		return nil, false, fmt.Errorf("reading hot sets: %w", err)
	}
	var (
		withData []*slot
		keys     [][]string
	)
	for i, n := range slots {
		if len(hot[i]) > 0 {
			withData = append(withData, a.slots[n])
			keys = append(keys, hot[i])
		}
	}
	a.takeFree(ctx, withData)
	alone = true
	kept := 0
	for i, s := range withData {
		if !a.holds(s) {
			alone = false
			if freeOnly {
				continue
			}
		}
		withData[kept], keys[kept] = s, keys[i]
		kept++
	}
	withData, keys = withData[:kept], keys[:kept]

	var loaded, bytes int64
	for from := 0; from < len(withData) && loaded < maxEntities && bytes < maxBytes; {
		// One round trip loads the next slots' keys, preloadBatch or so.
		to, n := from, 0
		for to < len(withData) && (to == from || n+len(keys[to]) <= preloadBatch) {
			n += len(keys[to])
			to++
		}
		l, b, lerr := a.preload(ctx, withData[from:to], keys[from:to], maxEntities-loaded, maxBytes-bytes)
		loaded, bytes = loaded+l, bytes+b
		if lerr != nil {
			err = lerr
			break
		}
		from = to
	}
	resp = &adminv1.PrepareResponse{EntitiesLoaded: loaded, BytesLoaded: bytes, DurationMs: a.clock.Since(start).Milliseconds()}
	return resp, alone, err
}

// holds says whether the agent holds s's lease.
func (a *Agent) holds(s *slot) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.phase == phaseHeld
}

// preloadBatch is about how many keys Prepare loads in one round trip.
const preloadBatch = 1024

// preload loads keys[i] of slots[i] into the cache in one round trip,
// within the budgets, never replacing what events have already seen.
func (a *Agent) preload(ctx context.Context, slots []*slot, keys [][]string, maxEntities, maxBytes int64) (loaded, bytes int64, err error) {
	refs := make([]statestore.SlotRef, len(slots))
	// What was read counts as verified only if this agent held the slot,
	// at one epoch, from before the read until it is installed: a slot
	// taken over (or handed to us) in between may have been written by
	// its previous holder after the read.
	heldAt := make([]uint64, len(slots)) // epoch held before the read; 0: not held
	for i, s := range slots {
		refs[i] = s.ref
		s.mu.Lock()
		if s.phase == phaseHeld {
			heldAt[i] = s.lease.Epoch
		}
		s.mu.Unlock()
	}
	recs, err := a.store.LoadAll(ctx, refs, keys)
	if err != nil {
		return 0, 0, err
	}
	for i, s := range slots {
		s.mu.Lock()
		held := heldAt[i] != 0 && s.phase == phaseHeld && s.lease.Epoch == heldAt[i]
		for _, k := range keys[i] {
			rec := recs[i][k]
			if rec == nil || loaded >= maxEntities || bytes >= maxBytes || s.entities[k] != nil {
				continue
			}
			e := &entity{key: k}
			e.mu.Lock()
			e.setLoaded(rec, a)
			e.unverified = !held
			e.mu.Unlock()
			s.entities[k] = e
			loaded++
			bytes += int64(rec.Size())
		}
		s.mu.Unlock()
	}
	return loaded, bytes, nil
}

// takeFree takes the leases of the slots nobody holds, in one round trip.
// Held ones stay where they are.
func (a *Agent) takeFree(ctx context.Context, slots []*slot) {
	if a.draining.Load() {
		return
	}
	var (
		taking []*slot
		ats    []*acquisition
		refs   []statestore.SlotRef
	)
	for _, s := range slots {
		s.mu.Lock()
		if s.phase == phaseFree {
			at := &acquisition{done: make(chan struct{})}
			s.phase, s.attempt = phaseAcquiring, at
			taking, ats, refs = append(taking, s), append(ats, at), append(refs, s.ref)
		}
		s.mu.Unlock()
	}
	if len(taking) == 0 {
		return
	}
	lctx, cancel := context.WithTimeout(ctx, a.cfg.FlushTimeout)
	leases, errs := a.store.AcquireAll(lctx, refs, a.cfg.Pod, a.cfg.advertise(), a.cfg.LeaseTTL)
	cancel()
	for i, s := range taking {
		err := errs[i]
		if err == nil {
			// Hints preloaded while another agent held the slot become
			// authoritative only once re-read.
			err = a.revalidate(s)
			if err != nil {
				a.noteStoreErr(err)
				a.releaseLease(s.ref, leases[i])
			}
		}
		if err != nil {
			// Events that queued behind this attempt start their own,
			// which asks the holder for a handoff: a preload is no reason
			// to turn them away.
			err = errPreloadOnly
		}
		a.finishAcquire(s, ats[i], leases[i], err, false)
	}
}

// Stats reports what the agent holds.
func (a *Agent) Stats() *adminv1.StatsResponse {
	out := &adminv1.StatsResponse{
		Pod: a.cfg.Pod, Space: a.cfg.Space, SlotCount: uint32(a.cfg.Slots),
		DirtyBytes: a.dirtyBytes.Load(), CacheBytes: a.cacheBytes.Load(),
		Requests: a.stats.requests.Load(), CacheHits: a.stats.hits.Load(), CacheMisses: a.stats.misses.Load(),
		Flushes: a.stats.flushes.Load(), FlushedEntities: a.stats.flushedEntities.Load(),
		RejectedWrites: a.stats.rejectedWrites.Load(),
		HandoffsIn:     a.stats.handoffsIn.Load(), HandoffsOut: a.stats.handoffsOut.Load(),
		Ready: a.Ready(),
	}
	now := a.clock.Now()
	var oldest time.Time
	for _, s := range a.slots {
		s.mu.Lock()
		phase, epoch, ents := s.phase, s.lease.Epoch, int64(len(s.entities))
		s.mu.Unlock()
		s.dirtyMu.Lock()
		dirtyEnts := make([]*entity, 0, len(s.dirty))
		for _, e := range s.dirty {
			dirtyEnts = append(dirtyEnts, e)
		}
		s.dirtyMu.Unlock()
		dirty := int64(len(dirtyEnts))
		for _, e := range dirtyEnts {
			e.mu.Lock()
			if since := e.dirtySince; e.dirty && (oldest.IsZero() || since.Before(oldest)) {
				oldest = since
			}
			e.mu.Unlock()
		}
		out.Entities += ents
		out.DirtyEntities += dirty
		if phase == phaseHeld || phase == phaseDraining {
			out.Slots = append(out.Slots, &adminv1.SlotStats{Slot: s.ref.Slot, Epoch: epoch, Entities: ents, Dirty: dirty})
		}
	}
	if !oldest.IsZero() {
		out.FlushLagMs = now.Sub(oldest).Milliseconds()
	}
	return out
}
