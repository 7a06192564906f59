package sdk

import (
	"context"
	"encoding/json"
	"fmt"
)

// Handler is the low-level form of a function: it sees the state as the
// bytes it last stored. Most functions use JSON instead.
type Handler interface {
	Handle(ctx context.Context, req Request) (Result, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, req Request) (Result, error)

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, req Request) (Result, error) {
	return f(ctx, req)
}

// Request is one call: one event for one key, with the key's state.
type Request struct {
	Key string
	// State is the state as the function last stored it; nil when the
	// entity does not exist. kstate never looks inside it.
	State []byte
	// Exists is false for an entity that was never stored or was deleted.
	Exists bool
	// Version increases by one with every update of the entity.
	Version uint64
	Event   Event
}

// Entity describes the entity a call is for. EntityFromContext gives it to
// handlers whose signature has no room for it (JSON handlers).
type Entity struct {
	Key     string
	Exists  bool
	Version uint64
}

type entityKey struct{}

// EntityFromContext returns the entity of the call whose context this is.
// ok is false outside a call.
func EntityFromContext(ctx context.Context) (e Entity, ok bool) {
	e, ok = ctx.Value(entityKey{}).(Entity)
	return e, ok
}

func withEntity(ctx context.Context, e Entity) context.Context {
	return context.WithValue(ctx, entityKey{}, e)
}

// JSONFunc is a handler whose state is a Go value stored as JSON.
type JSONFunc[S any] func(ctx context.Context, key string, state *S, ev Event) (Result, error)

// JSON makes a Handler of fn, which works on its state as a *S decoded from
// JSON. state is never nil: it points to the zero S when the entity does not
// exist. fn changes *state in place and returns a Result with Save to store
// it (as JSON, as it is when fn returns), or Delete; a change without Save is
// not stored.
//
// A stored state that does not decode as S fails the call (500, state kept):
// the state of that key must then be repaired or deleted outside the function.
func JSON[S any](fn JSONFunc[S]) Handler {
	return HandlerFunc(func(ctx context.Context, req Request) (Result, error) {
		var state S
		if req.Exists && len(req.State) > 0 {
			if err := json.Unmarshal(req.State, &state); err != nil {
				return Result{}, fmt.Errorf("decoding the stored state of key %q as %T: %w", req.Key, state, err)
			}
		}
		res, err := fn(ctx, req.Key, &state, req.Event)
		if err != nil || res.action != saveState {
			return res, err
		}
		b, err := json.Marshal(&state)
		if err != nil {
			return Result{}, fmt.Errorf("encoding the state of key %q: %w", req.Key, err)
		}
		return res.SetState(b), nil
	})
}
