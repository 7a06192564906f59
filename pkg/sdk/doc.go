// Package sdk turns a plain Go handler into a kstate function: the gRPC
// server (service kstate.function.v1.Function, see docs/protocol.md) that the
// kstate agent in the same pod calls once per event, with the entity's key and
// its current state.
//
// A typed handler is a few lines:
//
//	type cart struct{ Items []string `json:"items"` }
//
//	h := sdk.JSON(func(ctx context.Context, key string, c *cart, ev sdk.Event) (sdk.Result, error) {
//		var in struct{ Item string `json:"item"` }
//		if err := ev.DecodeJSON(&in); err != nil {
//			return sdk.Result{}, err // 400 naming the bad field
//		}
//		if in.Item == "" {
//			return sdk.Result{}, sdk.Errorf(http.StatusBadRequest, "item is required")
//		}
//		c.Items = append(c.Items, in.Item)
//		return sdk.ReplyJSON(c).Save(), nil
//	})
//	err := sdk.Serve(ctx, h)
//
// The package owns the translation between the wire protocol and Go values
// (including ToProto and FromProto, which the agent reuses for CloudEvents),
// the result and error contract below, and the server's life cycle. It does
// not own state: the agent keeps it, orders the calls, writes it to the store
// and deduplicates redelivered events. A handler must not write state
// anywhere else.
//
// Contract (the same for every handler):
//
//   - Calls for one key never overlap and arrive in order; calls for
//     different keys run concurrently, so a handler must not share mutable
//     values between keys without locking.
//   - The state changes only when a call returns no error and a Result that
//     says so (Save, SetState or Delete). The zero Result keeps the state,
//     emits nothing and replies 204 No Content.
//   - An error made by Errorf (a *StatusError, also when wrapped) becomes an
//     HTTP reply with its status and the JSON body {"error": "<message>"}.
//     Any other error, and a panic in the handler (recovered and logged with
//     its stack), becomes a 500 reply with the same body shape. In every error
//     case the state is kept and nothing is emitted, whatever Result came
//     with the error.
//   - Only a request the SDK cannot read (no event, an invalid event) or a
//     call cancelled by the agent fails the gRPC call itself.
//   - A reply or emitted event without an ID gets one derived from the input
//     event's source and id, so running the same input again (the agent
//     redelivers an event whose effect was not yet written when a pod died)
//     emits the same IDs and receivers can deduplicate.
//
// Serving: Serve listens on KSTATE_FUNCTION_ADDR (default 127.0.0.1:9081)
// and refuses a non-loopback address unless AllowNonLoopback is given, since
// only the agent in the same pod may call the function. It registers the
// standard gRPC health service so the agent can wait for the function. When
// its context ends it reports NOT_SERVING, keeps answering until the agent
// has disconnected (the agent drains its own queue on SIGTERM and may still
// call), at most the drain timeout, then stops gracefully.
package sdk
