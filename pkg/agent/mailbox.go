package agent

import (
	"context"
	"errors"
	"sync"
)

// errMailboxFull: the key already has the maximum number of queued events.
var errMailboxFull = errors.New("too many queued events for this key")

// mailbox serializes the events of one key in arrival order. sync.Mutex is
// not FIFO, and order per key is part of kstate's contract, so waiters queue
// explicitly and the lock is passed to the head of the queue on unlock.
type mailbox struct {
	mu      sync.Mutex
	busy    bool
	waiters []chan struct{}
}

// lock waits for this key's turn. At most maxQueued events may wait behind
// the one in flight.
func (m *mailbox) lock(ctx context.Context, maxQueued int) error {
	m.mu.Lock()
	if !m.busy {
		m.busy = true
		m.mu.Unlock()
		return nil
	}
	if len(m.waiters) >= maxQueued {
		m.mu.Unlock()
		return errMailboxFull
	}
	ch := make(chan struct{})
	m.waiters = append(m.waiters, ch)
	m.mu.Unlock()

	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		m.mu.Lock()
		defer m.mu.Unlock()
		for i, w := range m.waiters {
			if w == ch {
				m.waiters = append(m.waiters[:i], m.waiters[i+1:]...)
				return ctx.Err()
			}
		}
		// The lock was handed to us as we gave up: pass it on.
		m.unlockLocked()
		return ctx.Err()
	}
}

func (m *mailbox) unlock() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.unlockLocked()
}

func (m *mailbox) unlockLocked() {
	if len(m.waiters) == 0 {
		m.busy = false
		return
	}
	next := m.waiters[0]
	m.waiters = m.waiters[1:]
	close(next) // busy stays true: ownership moves to next.
}
