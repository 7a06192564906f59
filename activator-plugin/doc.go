// Package plugin is kstate's key-affine routing inside Knative's activator
// (knative.dev/serving v0.42.2). The activation handler accepts any
// handler.Throttler, and Knative's own throttler, lbPolicy and pod trackers
// are unexported, so the plugin is a Throttler of its own that wraps
// Knative's (activatornet.Throttler) and three pieces that cmd/activator
// wires around the activation handler:
//
//	Handler(next)     key extraction, right before the activation handler
//	Plugin.Try        the Throttler: key -> slot -> pod, per-pod limit,
//	                  buffering at zero; other revisions go to Knative's
//	Transport(base)   follows the agents' 421 answers to the slot holder
//
// Routing itself (the table, limits, buffering, redirects) is in the
// Knative-independent package affinity; this package feeds it from the
// revision and Endpoints informers in the context.
//
// Invariants:
//
//   - All ready endpoints. A kstate revision's router sees every ready
//     address of the revision's private service (the Endpoints the
//     activator's own revisionBackendsManager watches), not the subset
//     Knative's throttler assigns to this activator when
//     containerConcurrency > 0. Every activator therefore computes the same
//     table from the same Endpoints object, and a key has one target pod
//     whichever activator a request reaches.
//   - Order independence. sync is serialized and reads the listers afresh
//     on every event, and a table depends only on the set of ready pods, so
//     activators that saw the same events in different orders end with the
//     same table.
//   - Pass-through. A request whose revision lacks kstate.dev/enabled:
//     "true" carries no affinity.Route: Handler passes it on untouched, Try
//     calls Knative's throttler with the same arguments, and Transport sends
//     it with the base transport once.
//   - Buffered requests count. Try waits inside the activation handler,
//     which runs inside Knative's concurrency reporter, so a kstate request
//     waiting for its revision's first pod is reported to the autoscaler
//     like any request waiting in Knative's throttler: scale from zero works
//     the same way.
//   - Safety does not depend on the plugin. Activators may disagree for a
//     moment (endpoint updates arrive at different times); the agents' slot
//     leases decide who writes, and the plugin follows their 421 answers.
package plugin
