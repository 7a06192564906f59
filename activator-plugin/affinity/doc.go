// Package affinity is kstate's key-affine router without Knative: given an
// entity key, the slot count of its entity space and the ready pods of a
// revision (name -> address), it picks the pod that owns the key, holds a
// place in that pod's concurrency limit, buffers while there is no ready
// pod, and follows the agents' 421 answers to the named slot holder. The
// activator plugin (package plugin, one directory up) feeds it from Knative
// informers; the CLI's local dev router can feed it from a static list.
//
// The parts:
//
//   - Router: one per revision. Update(pods) rebuilds the placement table
//     (pkg/placement) when the set of ready pods changes; Pick is the pure
//     routing decision; Acquire waits for a ready pod and for a place in the
//     owner's limit and returns a Ticket.
//   - Route: the routing state of one request (key, replayable body, the
//     Ticket it holds), carried in the request context from the handler that
//     extracted the key to the Transport that sends it.
//   - Transport: an http.RoundTripper that sends a routed request again to
//     the holder a pod names in a 421 answer, at most MaxRedirects times,
//     then answers 503 with a JSON error.
//   - Proxy: a complete http.Handler (key extraction, Acquire, reverse proxy
//     through Transport) for routers that are not the Knative activator.
//
// Invariants:
//
//   - One owner per key in a view. Acquire sends a key to the owner of its
//     slot in the router's current view, never to another pod because the
//     owner is busy: a request queues at its owner (bounded by QueueDepth)
//     and fails with ErrQueueFull beyond that. One writer per key is the
//     agents' job (slot leases); not spilling keeps their handoffs rare.
//   - A view is a pure function of the pod set and the slot count
//     (placement.New), so two routers given the same pods agree on every
//     key, whatever order the updates came in.
//   - A pod keeps its limiter across rebuilds as long as its name and
//     address stay; a pod that leaves wakes the requests queued on it, which
//     route again on the new view. Requests already sent to it are not
//     touched: they finish (Knative drains the pod before it stops).
//   - Buffering at zero. With no ready pod, Acquire waits until a pod
//     appears or the context ends, whichever is first. Waiting requests are
//     counted by Waiting.
//   - Redirects are safe to replay: an agent answers 421 only when it
//     applied nothing. Transport re-sends the buffered body; a body larger
//     than the buffer limit is never re-sent (503, Retry-After).
//   - A Route and its Ticket belong to one request and are used by one
//     goroutine at a time (the handler, then the throttler, then the
//     transport, in turn); Router is safe for concurrent use.
package affinity
