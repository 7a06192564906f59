// Package dev runs kstate on one machine with zero setup: an embedded
// Redis-compatible store (or a real Redis), a built-in example function and
// the agent, all in one process. It is what `kn kstate dev` runs.
//
// Invariants: everything dev starts it stops; on the way out every dirty
// entity is flushed to the store before Run returns, and Run says how many.
// The embedded store lives only as long as the process: use a real Redis
// (Options.Redis) to keep state across runs.
package dev
