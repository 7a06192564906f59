package agent

import (
	"sync"
	"time"

	"github.com/kstate-dev/kstate/statestore"
)

// entity is one cached entity. The mailbox orders its events; mu guards the
// data, which the flusher and the evictor read between events.
type entity struct {
	key  string
	mb   mailbox
	refs int // guarded by slot.mu: events holding it; >0 keeps it cached

	mu         sync.Mutex
	loaded     bool
	unverified bool // preloaded while another agent held the slot
	gone       bool // its slot was dropped; updates can no longer land
	rec        statestore.Record
	exists     bool
	dirty      bool
	dirtySince time.Time
	flushed    uint64 // highest version known to be in the store
	// used is when this agent last loaded or ran an event on the entity:
	// idle eviction counts from it. rec.LastAccess is the stored value (what
	// the hot set is ordered by) and may be old for a fresh preload.
	used time.Time
	// Bytes this entity adds to the agent's cache and dirty totals.
	cacheCharged, dirtyCharged int64
}

// setLoaded installs a record read from the store (nil: no such entity).
// Called with e.mu held.
func (e *entity) setLoaded(rec *statestore.Record, a *Agent) {
	if rec == nil {
		e.rec = statestore.Record{Key: e.key}
		e.exists = false
	} else {
		e.rec = *rec
		e.exists = true
	}
	e.flushed = e.rec.Version
	e.loaded = true
	e.used = a.clock.Now()
	a.charge(e)
}

// record is what the flusher writes for e. Called with e.mu held. The state
// slice is never modified in place, so sharing it is safe.
func (e *entity) record() *statestore.Record {
	r := e.rec
	r.Key = e.key
	r.Deleted = !e.exists
	return &r
}

// charge brings the agent's byte totals up to date with e's size. Called
// with e.mu held.
func (a *Agent) charge(e *entity) {
	size := int64(e.rec.Size())
	a.cacheBytes.Add(size - e.cacheCharged)
	e.cacheCharged = size
	if e.dirty {
		a.dirtyBytes.Add(size - e.dirtyCharged)
		e.dirtyCharged = size
	}
}

// markDirty records that e changed and must be flushed. Called with e.mu held.
func (a *Agent) markDirty(s *slot, e *entity) {
	if !e.dirty {
		e.dirty = true
		e.dirtySince = a.clock.Now()
		s.dirtyMu.Lock()
		s.dirty[e.key] = e
		s.dirtyMu.Unlock()
	}
	a.charge(e)
	if a.dirtyBytes.Load() >= a.cfg.MaxDirtyBytes/2 {
		a.kickFlush()
	}
}

// markClean records that version v of e landed. Called with e.mu held.
func (a *Agent) markClean(s *slot, e *entity, v uint64) {
	if v > e.flushed {
		e.flushed = v
	}
	if !e.dirty || e.rec.Version != v {
		return // updated again since the snapshot: still dirty.
	}
	e.dirty = false
	a.dirtyBytes.Add(-e.dirtyCharged)
	e.dirtyCharged = 0
	s.dirtyMu.Lock()
	delete(s.dirty, e.key)
	s.dirtyMu.Unlock()
}

// uncharge removes e from the agent's totals when it leaves the cache.
// Called with e.mu held.
func (a *Agent) uncharge(s *slot, e *entity) {
	a.cacheBytes.Add(-e.cacheCharged)
	e.cacheCharged = 0
	a.dirtyBytes.Add(-e.dirtyCharged)
	e.dirtyCharged = 0
	if e.dirty {
		e.dirty = false
		s.dirtyMu.Lock()
		delete(s.dirty, e.key)
		s.dirtyMu.Unlock()
	}
}

// forget removes e from s's cache after eviction. Called with s.mu and e.mu held.
func (a *Agent) forget(s *slot, e *entity) {
	a.uncharge(s, e)
	e.gone = true
	delete(s.entities, e.key)
}
