package sdk

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"

	"github.com/cloudevents/sdk-go/v2/event"
)

// HTTPTypePrefix starts the type of an event the agent made from a plain
// HTTP request: "kstate.http." followed by the lowercase method, unless the
// request set the Kstate-Type header.
const HTTPTypePrefix = "kstate.http."

// HTTPType is the event type the agent gives a plain HTTP request with this
// method, e.g. HTTPType(http.MethodPost) == "kstate.http.post".
func HTTPType(method string) string {
	return HTTPTypePrefix + strings.ToLower(method)
}

// Event is the input of one call: a CloudEvent, and the HTTP request it was
// made from when it arrived as a plain HTTP request.
type Event struct {
	event.Event

	// HTTP is nil when the input arrived as a CloudEvent.
	HTTP *HTTPRequest
}

// HTTPRequest describes the plain HTTP request an event was made from. Its
// body is the event's data and its Content-Type the event's datacontenttype.
type HTTPRequest struct {
	Method   string
	Path     string
	RawQuery string
	// Header has one value per name: the agent joins repeated headers with
	// ", " (as HTTP/1.1 allows), and a joined value cannot be split back
	// safely, so it is kept whole.
	Header http.Header
}

// DecodeJSON decodes the event's data as JSON into v, whatever the
// datacontenttype says. Empty data leaves v as it is, so defaults set before
// the call stay. Bad data yields a *StatusError with status 400 whose message
// names the offending field, so a handler can return it unchanged.
func (e Event) DecodeJSON(v any) error {
	data := e.Data()
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	err := json.Unmarshal(data, v)
	if err == nil {
		return nil
	}
	var (
		syntaxErr    *json.SyntaxError
		typeErr      *json.UnmarshalTypeError
		unmarshalErr *json.InvalidUnmarshalError
	)
	switch {
	case errors.As(err, &unmarshalErr):
		// v is not a pointer: the handler's bug, not the caller's.
		return fmt.Errorf("decoding event data: %w", err)
	case errors.As(err, &syntaxErr):
		return &StatusError{Code: http.StatusBadRequest, Message: "data is not valid JSON: " + err.Error(), err: err}
	case errors.As(err, &typeErr):
		return &StatusError{Code: http.StatusBadRequest, Message: describeTypeError(typeErr), err: err}
	default:
		// An UnmarshalJSON method of the target refused the value.
		return &StatusError{Code: http.StatusBadRequest, Message: "data is invalid: " + err.Error(), err: err}
	}
}

// describeTypeError names the field and what it should have been in JSON
// terms, e.g. `field "by" must be an integer, got string`.
func describeTypeError(err *json.UnmarshalTypeError) string {
	want := jsonKind(err.Type)
	got := err.Value
	if n, ok := strings.CutPrefix(got, "number "); ok && want == "an integer" && !strings.ContainsAny(n, ".eE") {
		// Integral but too large (or negative for an unsigned field).
		want = fmt.Sprintf("an integer that fits %s", err.Type.Kind())
	}
	if err.Field == "" {
		return fmt.Sprintf("data must be %s, got %s", want, got)
	}
	return fmt.Sprintf("data field %q must be %s, got %s", err.Field, want, got)
}

func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return "a base64 string"
		}
		return "an array"
	case reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "a JSON object"
	default:
		return "a " + t.String()
	}
}
