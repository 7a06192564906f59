package affinity

import (
	"context"
	"errors"
	"sync/atomic"
)

// errLeft tells a request waiting for a place at a pod that the pod left the
// ready set: it routes again instead of waiting for a pod that gets no more
// traffic.
var errLeft = errors.New("the pod left the ready set")

// pod is a ready pod with its limiter: a semaphore of Concurrency places and
// a bound on in-flight plus queued requests, like Knative's queue.Breaker
// (knative.dev/serving/pkg/queue/breaker.go), plus a way to wake the queue
// when the pod leaves.
type pod struct {
	Pod

	// pending counts requests holding or waiting for a place. It is also
	// kept when the limit is off, for InFlight.
	pending    atomic.Int64
	maxPending int64
	sem        chan struct{} // nil: unlimited
	left       chan struct{} // closed by leave
}

func newPod(p Pod, limit, queueDepth int) *pod {
	o := &pod{Pod: p, left: make(chan struct{})}
	if limit > 0 {
		o.sem = make(chan struct{}, limit)
		o.maxPending = int64(limit) + int64(queueDepth)
	}
	return o
}

// acquire takes a place, waiting while the pod is full. It fails with
// ErrQueueFull when too many requests wait, with errLeft when the pod left
// while this one waited, and with ctx's error when ctx ends first.
func (p *pod) acquire(ctx context.Context) error {
	if p.sem == nil {
		p.pending.Add(1)
		return nil
	}
	if p.pending.Add(1) > p.maxPending {
		p.pending.Add(-1)
		return ErrQueueFull
	}
	select {
	case p.sem <- struct{}{}:
		return nil
	default:
	}
	select {
	case p.sem <- struct{}{}:
		return nil
	case <-p.left:
		p.pending.Add(-1)
		return errLeft
	case <-ctx.Done():
		p.pending.Add(-1)
		return ctx.Err()
	}
}

// release gives a place back.
func (p *pod) release() {
	if p.sem != nil {
		<-p.sem
	}
	p.pending.Add(-1)
}

// leave wakes the requests waiting for a place; those holding one keep it.
func (p *pod) leave() { close(p.left) }
