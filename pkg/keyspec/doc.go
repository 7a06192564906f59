// Package keyspec owns entity-key extraction: it parses the value of a
// Service's kstate.dev/key annotation into a Spec and pulls the entity key
// out of a request with it. The activator plugin and the per-pod agent both
// use it, and the slot a request is routed to (activator) and the slot lease
// a pod checks (agent) are both computed from the key it returns.
//
// Grammar of a spec (see docs/routing.md (Key specs) for the user-facing text):
//
//	header:NAME           the HTTP header NAME (canonicalized)
//	ce:ATTRIBUTE          a CloudEvents attribute: subject, type, source, or
//	                      any extension such as partitionkey
//	path:/prefix/{key}    one whole path segment, after literal segments
//	query:NAME            the URL query parameter NAME
//
// Invariants:
//
//   - Agreement. For one request, the activator's FromRequest (which only has
//     the *http.Request) and the agent's FromEvent (on the event sdk-go parsed
//     from the same request) return the same key. Two different keys would
//     route a request to a pod that does not own its slot. This is why the
//     binary-mode path applies the same normalization sdk-go's event builder
//     does (TrimSpace on subject and type, URI-reference parsing of source),
//     why structured mode is decoded by sdk-go's own format code rather than
//     by a second JSON reader here, and why the CloudEvent encoding is
//     detected exactly as sdk-go's HTTP binding detects it. The fuzz target
//     FuzzFromRequest checks this against sdk-go.
//   - Every key returned without error satisfies ValidateKey: 1 to MaxKeyLen
//     bytes of valid UTF-8 without control characters. Keys become parts of
//     Redis key names and of log lines.
//   - FromRequest never loses request bytes: when it has to read a
//     structured-mode body it replaces r.Body with a reader that yields the
//     same bytes, on success and on every error, so the activator can still
//     proxy the whole body.
//   - Both call sites pick the default spec the same way: Resolve with
//     IsCloudEventRequest, which mirrors sdk-go's encoding detection.
//   - Every error from extracting a key with a valid Spec wraps one of
//     ErrNoKey, ErrInvalidKey, ErrBatch, ErrMalformedEvent or
//     ErrBodyTooLarge (or is a body read error), and HTTPStatus maps them to
//     the status both call sites answer with.
package keyspec
