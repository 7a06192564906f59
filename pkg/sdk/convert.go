package sdk

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"mime"
	"net/http"
	"slices"
	"strings"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"google.golang.org/protobuf/types/known/timestamppb"

	functionv1 "github.com/kstate-dev/kstate/proto/function/v1"
)

// ErrInvalidEvent is wrapped by every ToProto and FromProto error: the event
// is not a valid CloudEvents 1.0 event (a required attribute is missing, an
// attribute or extension is malformed, or the spec version is not 1.0).
var ErrInvalidEvent = errors.New("invalid CloudEvent")

// ToProto converts a CloudEvent to its wire form. A CloudEvents 0.3 event is
// converted to 1.0 first (schemaurl becomes dataschema). Extensions are
// carried in their canonical string form (CloudEvents 1.0 "Type System"), so
// an int32 extension 42 arrives as "42", the same as in HTTP binary mode.
// The data bytes are shared, not copied.
func ToProto(e event.Event) (*functionv1.CloudEvent, error) {
	if e.Context == nil {
		return nil, fmt.Errorf("%w: the event has no context (use event.New)", ErrInvalidEvent)
	}
	if e.SpecVersion() != event.CloudEventsVersionV1 {
		// The context is replaced, not changed: the caller's event is untouched.
		e.Context = e.Context.AsV1()
	}
	if err := validate(e); err != nil {
		return nil, err
	}
	pb := &functionv1.CloudEvent{
		Id:              e.ID(),
		Source:          e.Source(),
		SpecVersion:     event.CloudEventsVersionV1,
		Type:            e.Type(),
		Subject:         e.Subject(),
		DataContentType: e.DataContentType(),
		DataSchema:      e.DataSchema(),
	}
	if t := e.Time(); !t.IsZero() {
		pb.Time = timestamppb.New(t)
	}
	if ext := e.Extensions(); len(ext) > 0 {
		pb.Extensions = make(map[string]string, len(ext))
		for name, v := range ext {
			s, err := types.Format(v)
			if err != nil {
				return nil, fmt.Errorf("%w: extension %q: %w", ErrInvalidEvent, name, err)
			}
			pb.Extensions[name] = s
		}
	}
	if data := e.Data(); len(data) > 0 {
		pb.Data = data
	}
	return pb, nil
}

// FromProto converts the wire form of a CloudEvent back to an event.Event
// and validates it. An empty spec_version means 1.0; any other version than
// 1.0 is refused. Extensions come back as strings (their canonical form).
// The data bytes are shared, not copied.
func FromProto(pb *functionv1.CloudEvent) (event.Event, error) {
	if pb == nil {
		return event.Event{}, fmt.Errorf("%w: no event", ErrInvalidEvent)
	}
	if v := pb.GetSpecVersion(); v != "" && v != event.CloudEventsVersionV1 {
		return event.Event{}, fmt.Errorf("%w: spec_version %q is not supported, kstate speaks CloudEvents %s",
			ErrInvalidEvent, v, event.CloudEventsVersionV1)
	}
	e := event.New(event.CloudEventsVersionV1)
	e.SetID(pb.GetId())
	e.SetSource(pb.GetSource())
	e.SetType(pb.GetType())
	e.SetSubject(pb.GetSubject())
	e.SetDataSchema(pb.GetDataSchema())
	e.SetDataContentType(pb.GetDataContentType())
	if ts := pb.GetTime(); ts != nil {
		if ts.CheckValid() != nil {
			// protobuf's own message is deliberately unstable; say it plainly.
			return event.Event{}, fmt.Errorf("%w: time: seconds %d and nanos %d are not a valid timestamp",
				ErrInvalidEvent, ts.GetSeconds(), ts.GetNanos())
		}
		e.SetTime(ts.AsTime())
	}
	// Setters record bad values in FieldErrors; Validate below reports them.
	for name, v := range pb.GetExtensions() {
		e.SetExtension(name, v)
	}
	if data := pb.GetData(); len(data) > 0 {
		e.DataEncoded = data
		// Base64 only matters if the event is later written in structured
		// JSON mode: sdk-go writes JSON-typed data verbatim, so anything that
		// is not valid JSON (whatever its type says) must be base64 to
		// survive the trip unchanged.
		e.DataBase64 = !isJSONMediaType(e.DataContentType()) || !json.Valid(data)
	}
	if err := validate(e); err != nil {
		return event.Event{}, err
	}
	return e, nil
}

// validate wraps sdk-go's validation in ErrInvalidEvent.
func validate(e event.Event) error {
	err := e.Validate()
	var ve event.ValidationError
	if errors.As(err, &ve) {
		err = validationError{ve}
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidEvent, err)
	}
	return nil
}

// validationError formats an event.ValidationError in a stable order on one
// line; sdk-go's own form follows map order and ends with a newline.
type validationError struct{ event.ValidationError }

func (v validationError) Error() string {
	msgs := make([]string, 0, len(v.ValidationError))
	for _, attr := range slices.Sorted(maps.Keys(v.ValidationError)) {
		msgs = append(msgs, attr+": "+v.ValidationError[attr].Error())
	}
	return strings.Join(msgs, "; ")
}

func (v validationError) Unwrap() error { return v.ValidationError }

// isJSONMediaType reports whether sdk-go writes data of this content type
// verbatim into a structured JSON event.
func isJSONMediaType(contentType string) bool {
	if contentType == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	return mt == event.ApplicationJSON || mt == event.TextJSON
}

// protoHeaders turns the agent's one-value-per-name headers into an
// http.Header with canonical names.
func protoHeaders(h map[string]string) http.Header {
	if len(h) == 0 {
		return nil
	}
	out := make(http.Header, len(h))
	for k, v := range h {
		out[http.CanonicalHeaderKey(k)] = []string{v}
	}
	return out
}

// headerMap flattens reply headers to the wire form, joining repeated values
// with ", ".
func headerMap(h http.Header) map[string]string {
	if len(h) == 0 {
		return nil
	}
	out := make(map[string]string, len(h))
	for k, vs := range h {
		out[k] = strings.Join(vs, ", ")
	}
	return out
}
