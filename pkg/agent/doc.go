// Package agent is kstate's per-pod engine: it owns the entities of the slots
// this pod holds, runs the user function on them one event at a time per key,
// and writes them back to the state store behind the replies.
//
// Invariants:
//
//   - One writer per key: an event for key K runs only while this agent holds
//     the lease of slot(K), and only one event per key is in flight (the
//     mailbox), in arrival order.
//   - Every write carries the lease epoch it was made under; the store rejects
//     it if the slot moved on (statestore.ErrFenced). A fenced slot is dropped
//     from memory at once.
//   - A dirty entity is never evicted: it is flushed first.
//   - In sync durability the reply is sent only after the update landed.
//   - An acknowledged update is lost only if the process dies (async mode,
//     bounded by the flush interval) or if the slot was taken over while this
//     agent could not reach the store; both are counted and logged.
//
// Lock order: slot.mu → entity.mu → slot.dirtyMu. Never call the store or the
// function while holding any of them.
package agent
