package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/kstate-dev/kstate/statestore"
)

type slotPhase int

const (
	phaseFree      slotPhase = iota // no lease; entities here are preloaded hints only
	phaseAcquiring                  // one goroutine is taking the lease; requests wait
	phaseHeld                       // we hold the lease and serve the slot
	phaseDraining                   // handing off: in-flight work finishes, new work is redirected
)

func (p slotPhase) String() string {
	return [...]string{"free", "acquiring", "held", "draining"}[p]
}

// acquisition is one attempt at taking a slot's lease; every request that
// needs the slot meanwhile waits on done and shares err.
type acquisition struct {
	done chan struct{}
	err  error
}

// slot is this agent's view of one slot. Its entity map is the cache shard.
type slot struct {
	ref statestore.SlotRef

	mu        sync.Mutex
	phase     slotPhase
	lease     statestore.Lease
	heldSince time.Time // local clock
	attempt   *acquisition
	inflight  int
	idle      chan struct{} // closed when inflight drops to 0 while draining
	redirect  statestore.Lease
	gaveUpAt  time.Time
	entities  map[string]*entity

	dirtyMu sync.Mutex
	dirty   map[string]*entity

	flushMu sync.Mutex // one flush of this slot at a time

	// released wakes an acquisition waiting for a handoff: the holder's
	// notice (statestore.Store.ReleaseFor) that the slot is free. It holds
	// at most one wake-up, so a notice that arrives before the wait begins
	// is not lost.
	released chan struct{}
}

func newSlot(ref statestore.SlotRef) *slot {
	return &slot{ref: ref, entities: map[string]*entity{}, dirty: map[string]*entity{}, released: make(chan struct{}, 1)}
}

// wake tells an acquisition of s waiting for a handoff to try now.
func (s *slot) wake() {
	select {
	case s.released <- struct{}{}:
	default: // a wake-up is pending already
	}
}

// entity returns the cache entry for key, creating it, and takes a reference
// that keeps it from eviction until unref.
func (s *slot) entity(key string) *entity {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entities[key]
	if e == nil {
		e = &entity{key: key}
		s.entities[key] = e
	}
	e.refs++
	return e
}

func (s *slot) unref(e *entity) {
	s.mu.Lock()
	e.refs--
	s.mu.Unlock()
}

func (s *slot) dirtyCount() int {
	s.dirtyMu.Lock()
	defer s.dirtyMu.Unlock()
	return len(s.dirty)
}

// enter makes sure this agent holds the slot and counts the caller as in
// flight on it; leave undoes that.
func (a *Agent) enter(ctx context.Context, s *slot) (statestore.Lease, error) {
	for {
		s.mu.Lock()
		switch s.phase {
		case phaseHeld:
			s.inflight++
			l := s.lease
			s.mu.Unlock()
			return l, nil
		case phaseDraining:
			r := s.redirect
			s.mu.Unlock()
			return statestore.Lease{}, &NotOwnerError{Slot: s.ref.Slot, Holder: r.Holder, Addr: r.Addr}
		case phaseAcquiring:
			at := s.attempt
			s.mu.Unlock()
			select {
			case <-at.done:
			case <-ctx.Done():
				return statestore.Lease{}, fmt.Errorf("waiting for slot %d: %w", s.ref.Slot, errDeadline)
			}
			if at.err != nil && !errors.Is(at.err, errPreloadOnly) {
				return statestore.Lease{}, at.err
			}
		case phaseFree:
			if a.draining.Load() {
				s.mu.Unlock()
				return statestore.Lease{}, errDraining
			}
			at := &acquisition{done: make(chan struct{})}
			s.attempt = at
			s.phase = phaseAcquiring
			s.mu.Unlock()
			go a.acquire(s, at)
		}
	}
}

func (a *Agent) leave(s *slot) {
	s.mu.Lock()
	s.inflight--
	if s.inflight == 0 && s.idle != nil {
		close(s.idle)
		s.idle = nil
	}
	s.mu.Unlock()
}

// acquire takes the slot's lease, asking the current holder to hand it over
// when it is held elsewhere, for at most HandoffTimeout. While it waits, the
// holder's notice that it released the slot (handoffLoop calls s.wake) makes
// it try again at once; a poll every handoffPollInterval covers a notice
// that pub/sub dropped, or a holder too old to send one. Each attempt is one
// round trip, asking and re-reading hints included.
func (a *Agent) acquire(s *slot, at *acquisition) {
	deadline := a.clock.Now().Add(a.cfg.HandoffTimeout)
	var lastAsk time.Time
	// A wake-up left over from an earlier handoff is stale. Any notice for
	// this attempt answers a request sent below, so it comes after this.
	select {
	case <-s.released:
	default:
	}
	for {
		now := a.clock.Now()
		s.mu.Lock()
		// Having just given this slot away, do not ask for it back at once:
		// two routers that disagree would otherwise make it bounce.
		coolingDown := !s.gaveUpAt.IsZero() && now.Sub(s.gaveUpAt) < a.cfg.MinHold
		s.mu.Unlock()
		opts := statestore.AcquireOptions{
			// If the slot is held, the attempt itself asks for it, and
			// asks again each handoffAskInterval: pub/sub may drop a
			// request.
			AskHolder: !coolingDown && now.Before(deadline) && now.Sub(lastAsk) >= handoffAskInterval,
		}
		if !lastAsk.IsZero() {
			// Once a handoff was asked for, the attempt also re-reads the
			// hints preloaded while the other agent held the slot; before,
			// the slot is most likely still held and the loads would be
			// wasted.
			opts.Load = a.hintKeys(s)
		}
		ctx, cancel := context.WithTimeout(a.ctx, a.cfg.FlushTimeout)
		lease, recs, err := a.store.AcquireWith(ctx, s.ref, a.cfg.Pod, a.cfg.advertise(), a.cfg.LeaseTTL, opts)
		cancel()
		if err == nil || lease.Holder != "" {
			if err == nil {
				a.verify(s, opts.Load, recs)
				err = a.revalidate(s) // the hints not loaded with the lease, if any
			}
			if err != nil {
				// We hold a lease we cannot use yet; give it back.
				a.noteStoreErr(err)
				a.releaseLease(s.ref, lease)
				a.finishAcquire(s, at, statestore.Lease{}, &UnavailableError{Err: err}, false)
				return
			}
			a.finishAcquire(s, at, lease, nil, !lastAsk.IsZero())
			return
		}
		var held *statestore.HeldError
		if !errors.As(err, &held) {
			a.noteStoreErr(err)
			a.finishAcquire(s, at, statestore.Lease{}, &UnavailableError{Err: err}, false)
			return
		}
		if opts.AskHolder {
			lastAsk = now
		}
		if coolingDown || !a.clock.Now().Before(deadline) || a.ctx.Err() != nil {
			a.finishAcquire(s, at, statestore.Lease{}, &NotOwnerError{Slot: s.ref.Slot, Holder: held.Lease.Holder, Addr: held.Lease.Addr}, false)
			return
		}
		select {
		case <-s.released:
		case <-a.clock.After(handoffPollInterval):
		case <-a.ctx.Done():
		}
	}
}

const (
	// handoffAskInterval: pub/sub may drop a request, so it is repeated.
	handoffAskInterval = 250 * time.Millisecond
	// handoffPollInterval is only the fallback for a lost notice: each poll
	// is an Acquire per waiting slot, and the notice is what makes a
	// handoff fast (it used to be a 20 ms poll, which the requests of every
	// moved slot waited out; docs/performance.md, P4).
	handoffPollInterval = 100 * time.Millisecond
)

func (a *Agent) finishAcquire(s *slot, at *acquisition, lease statestore.Lease, err error, handedOver bool) {
	s.mu.Lock()
	if err == nil {
		s.phase = phaseHeld
		s.lease = lease
		s.heldSince = a.clock.Now()
		if handedOver {
			a.stats.handoffsIn.Add(1)
		}
	} else {
		s.phase = phaseFree
	}
	at.err = err
	s.attempt = nil
	s.mu.Unlock()
	close(at.done)
}

// hintKeys returns the keys of the entities preloaded while another agent
// held the slot: that holder may have written them since.
func (a *Agent) hintKeys(s *slot) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var keys []string
	for k, e := range s.entities {
		if e.unverified {
			keys = append(keys, k)
		}
	}
	return keys
}

// verify replaces the hints of keys with recs, read under the lease.
func (a *Agent) verify(s *slot, keys []string, recs map[string]*statestore.Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range keys {
		e := s.entities[k]
		if e == nil {
			continue
		}
		e.mu.Lock()
		e.setLoaded(recs[k], a)
		e.unverified = false
		e.mu.Unlock()
	}
}

// revalidate reloads the slot's hints, once its lease is ours.
func (a *Agent) revalidate(s *slot) error {
	keys := a.hintKeys(s)
	if len(keys) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(a.ctx, a.cfg.FlushTimeout)
	defer cancel()
	recs, err := a.store.Load(ctx, s.ref, keys)
	if err != nil {
		return err
	}
	a.verify(s, keys, recs)
	return nil
}

// handOff gives a slot to the agent that asked for it: stop new work, let
// in-flight work finish, flush, release. It gives up (and keeps the slot)
// if any step fails.
func (a *Agent) handOff(req statestore.HandoffRequest) {
	if req.Slot.Space != a.cfg.Space || int(req.Slot.Slot) >= len(a.slots) || req.Asker == a.cfg.Pod {
		return
	}
	s := a.slots[req.Slot.Slot]
	log := a.logger.With(zap.Stringer("slot", s.ref), zap.String("to", req.Asker))
	s.mu.Lock()
	if s.phase != phaseHeld {
		s.mu.Unlock()
		return
	}
	if held := a.clock.Since(s.heldSince); held < a.cfg.MinHold {
		s.mu.Unlock()
		log.Debugw("handoff refused: slot held for less than the minimum", zap.Duration("held", held))
		return
	}
	s.phase = phaseDraining
	s.redirect = statestore.Lease{Holder: req.Asker, Addr: req.AskerAddr}
	idle := make(chan struct{})
	if s.inflight == 0 {
		close(idle)
	} else {
		s.idle = idle
	}
	lease := s.lease
	s.mu.Unlock()

	abort := func(why string, err error) {
		log.Warnw("handoff aborted, keeping the slot: "+why, zap.Error(err))
		s.mu.Lock()
		if s.phase == phaseDraining {
			s.phase = phaseHeld
		}
		s.idle = nil
		s.mu.Unlock()
	}
	select {
	case <-idle:
	case <-a.clock.After(a.cfg.DrainTimeout):
		abort("in-flight events did not finish", nil)
		return
	case <-a.ctx.Done():
		abort("agent stopping", a.ctx.Err())
		return
	}
	if _, err := a.flushSlot(a.ctx, s); err != nil {
		if errors.Is(err, statestore.ErrFenced) {
			return // flushSlot dropped the slot already.
		}
		abort("flush failed", err)
		return
	}
	a.dropSlot(s, lease, false)
	// Counted before the release: the asker may serve the slot as soon as
	// the release lands, and whoever reads both agents' stats then must
	// see this side of the handoff too.
	a.stats.handoffsOut.Add(1)
	// Releasing and telling the asker is one round trip: the asker's
	// requests for the slot are waiting for it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(a.ctx), a.cfg.FlushTimeout)
	if err := a.store.ReleaseFor(ctx, lease, req); err != nil {
		// The lease will expire on its own; nothing is unsafe.
		log.Warnw("lease release failed", zap.Error(err))
	}
	cancel()
	log.Infow("slot handed off", zap.Uint64("epoch", lease.Epoch))
}

func (a *Agent) releaseLease(ref statestore.SlotRef, lease statestore.Lease) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(a.ctx), a.cfg.FlushTimeout)
	defer cancel()
	if err := a.store.Release(ctx, lease); err != nil {
		// The lease will expire on its own; nothing is unsafe.
		a.logger.Warnw("lease release failed", zap.Stringer("slot", ref), zap.Error(err))
	}
}

// dropSlot forgets a slot's entities after it was handed off (lost=false,
// everything flushed) or fenced (lost=true: its dirty entities are stale and
// counted as rejected). It reports false when the slot was not held at that
// lease any more (dropped already).
func (a *Agent) dropSlot(s *slot, lease statestore.Lease, lost bool) bool {
	s.mu.Lock()
	if s.lease.Epoch != lease.Epoch || (s.phase != phaseHeld && s.phase != phaseDraining) {
		s.mu.Unlock()
		return false
	}
	s.phase = phaseFree
	s.gaveUpAt = a.clock.Now()
	if lost {
		s.redirect = statestore.Lease{}
	}
	ents := s.entities
	s.entities = map[string]*entity{}
	s.mu.Unlock()

	var rejected int64
	for _, e := range ents {
		e.mu.Lock()
		if e.dirty {
			rejected++
		}
		e.gone = true
		a.uncharge(s, e)
		e.mu.Unlock()
	}
	if lost && rejected > 0 {
		a.stats.rejectedWrites.Add(rejected)
		a.logger.Errorw("slot taken over while holding unflushed updates; they were rejected by the store's fencing",
			zap.Stringer("slot", s.ref), zap.Uint64("epoch", lease.Epoch), zap.Int64("rejected", rejected))
	}
	a.notifyFlushed() // wake sync waiters on these entities
	return true
}
