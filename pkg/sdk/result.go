package sdk

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"

	"github.com/cloudevents/sdk-go/v2/event"
)

// stateAction is what a Result does to the entity's state.
type stateAction int

const (
	keepState stateAction = iota
	setState
	// saveState is resolved by the typed layer (JSON) into setState with the
	// handler's encoded state; a raw Handler cannot use it.
	saveState
	deleteState
)

type replyKind int

const (
	noReply replyKind = iota
	httpReply
	eventReply
)

// Result is what a handler returns: what happens to the state, the reply, and
// the events to emit. Build it with the functions and chainable methods
// below, e.g. sdk.ReplyJSON(v).Save().Emit(ev). The zero Result keeps the
// state, emits nothing and replies 204 No Content.
//
// A Result is a value: every method returns a changed copy and never changes
// the receiver, so a partly built Result can be reused.
type Result struct {
	action stateAction
	state  []byte

	reply       replyKind
	status      int
	contentType string
	header      http.Header
	body        []byte
	event       event.Event

	emit []event.Event

	// err is a mistake made while building (a value that does not encode, a
	// method that does not fit): it surfaces as a 500 reply.
	err error
}

// Keep returns a Result that keeps the state and replies 204. It is the zero
// Result, spelled out for readability.
func Keep() Result { return Result{} }

// Save returns a Result that stores the handler's state (see JSON) and
// replies 204.
func Save() Result { return Result{}.Save() }

// SetState returns a Result that replaces the state with b, verbatim, and
// replies 204.
func SetState(b []byte) Result { return Result{}.SetState(b) }

// Delete returns a Result that deletes the entity and replies 204.
func Delete() Result { return Result{}.Delete() }

// ReplyJSON returns a Result that keeps the state and replies 200 with v
// encoded as JSON (Content-Type application/json). v is encoded now, so later
// changes to it do not show in the reply.
func ReplyJSON(v any) Result {
	body, err := json.Marshal(v)
	if err != nil {
		return Result{err: fmt.Errorf("encoding the JSON reply: %w", err)}
	}
	return Reply(http.StatusOK, "application/json", body)
}

// Reply returns a Result that keeps the state and replies with this HTTP
// status, content type and body.
func Reply(status int, contentType string, body []byte) Result {
	return Result{reply: httpReply, status: status, contentType: contentType, body: body}
}

// ReplyEvent returns a Result that keeps the state and replies with a
// CloudEvent (the agent answers in CloudEvents binary mode). An empty ID is
// filled in as described in the package documentation; source and type are
// required.
func ReplyEvent(e event.Event) Result {
	return Result{reply: eventReply, event: e}
}

// Emit returns a Result that keeps the state, replies 204 and sends events
// to the agent's sink (K_SINK) once the call's update is applied.
func Emit(events ...event.Event) Result { return Result{}.Emit(events...) }

// Keep makes r keep the state.
func (r Result) Keep() Result {
	r.action, r.state = keepState, nil
	return r
}

// Save makes r store the typed handler's state, as it is when the handler
// returns. Only handlers built with JSON have one: from a raw Handler, Save
// is an error (use SetState).
func (r Result) Save() Result {
	r.action, r.state = saveState, nil
	return r
}

// SetState makes r replace the state with b, verbatim.
func (r Result) SetState(b []byte) Result {
	r.action, r.state = setState, b
	return r
}

// Delete makes r delete the entity.
func (r Result) Delete() Result {
	r.action, r.state = deleteState, nil
	return r
}

// WithStatus sets the HTTP status of r's reply. On a Result without a reply
// it makes an empty reply with this status; on a CloudEvent reply it is an
// error, since an event reply has no status of its own.
func (r Result) WithStatus(status int) Result {
	switch r.reply {
	case eventReply:
		r.err = fmt.Errorf("WithStatus(%d) on a CloudEvent reply: an event reply has no status", status)
	default:
		r.reply, r.status = httpReply, status
	}
	return r
}

// WithHeader adds a header to r's HTTP reply. On a Result without a reply it
// makes a 200 reply with an empty body; on a CloudEvent reply it is an error.
func (r Result) WithHeader(name, value string) Result {
	switch r.reply {
	case eventReply:
		r.err = fmt.Errorf("WithHeader(%q) on a CloudEvent reply: put it in an extension instead", name)
		return r
	case noReply:
		r.reply, r.status = httpReply, http.StatusOK
	}
	r.header = r.header.Clone()
	if r.header == nil {
		r.header = http.Header{}
	}
	r.header.Add(name, value)
	return r
}

// Emit adds events to send to the agent's sink (K_SINK) once the call's
// update is applied. An empty ID is filled in as described in the package
// documentation; source and type are required.
func (r Result) Emit(events ...event.Event) Result {
	// Clip so that appending never writes into a slice another copy shares.
	r.emit = append(slices.Clip(r.emit), events...)
	return r
}

// StatusError is an error with an HTTP status: a handler returning it (also
// wrapped) replies that status with the JSON body {"error": Message} and
// keeps the state. Make one with Errorf.
type StatusError struct {
	// Code is the HTTP status, 400 to 599. Any other value replies 500.
	Code int
	// Message is sent to the caller.
	Message string

	err error
}

// Errorf returns a *StatusError with this HTTP status and a message formatted
// as by fmt.Errorf; %w wraps as usual, so errors.Is and errors.As see the
// wrapped error.
func Errorf(code int, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &StatusError{Code: code, Message: err.Error(), err: err}
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Code, http.StatusText(e.Code), e.Message)
}

// Unwrap returns the error formatted by Errorf, through which the errors it
// wrapped are reached.
func (e *StatusError) Unwrap() error { return e.err }
