package keyspec

import (
	"errors"
	"fmt"
	"net/http"
	"unicode"
	"unicode/utf8"
)

var (
	// ErrInvalidSpec is wrapped by every error Parse returns.
	ErrInvalidSpec = errors.New("invalid key spec")

	// ErrNoKey means the request does not carry the key its spec names: the
	// header, attribute, path segment or query parameter is missing or empty,
	// or a ce: spec met a request that is not a CloudEvent.
	ErrNoKey = errors.New("no entity key")

	// ErrInvalidKey means the key is present but breaks the key invariants
	// (see ValidateKey).
	ErrInvalidKey = errors.New("invalid entity key")

	// ErrBatch means a ce: spec met a batched CloudEvents request
	// (application/cloudevents-batch+json): the events of a batch may belong
	// to different entities, so the batch has no single owner pod.
	ErrBatch = errors.New("batched CloudEvents have no single entity key")

	// ErrMalformedEvent means a CloudEvent needed to find the key could not
	// be decoded: a structured-mode body that sdk-go rejects, or a
	// binary-mode ce-source header that is not a URI reference.
	ErrMalformedEvent = errors.New("malformed CloudEvent")

	// ErrBodyTooLarge means a structured-mode body is larger than the limit
	// FromRequest was given, so the key inside it was not read.
	ErrBodyTooLarge = errors.New("CloudEvent body too large")
)

// MaxKeyLen is the longest entity key in bytes. Keys are embedded in Redis
// key names, hashed on every request and printed in logs; 1 KiB leaves room
// for composite keys without letting a client make every one of those large.
const MaxKeyLen = 1024

// ValidateKey reports whether key can be an entity key: 1 to MaxKeyLen
// bytes of valid UTF-8 with no control characters (Unicode category Cc:
// C0, DEL and C1). The error wraps ErrInvalidKey.
func ValidateKey(key string) error {
	if reason := keyProblem(key); reason != "" {
		return fmt.Errorf("%w: %s", ErrInvalidKey, reason)
	}
	return nil
}

// keyProblem returns why key is not a valid entity key, or "" when it is.
// It does not allocate on success: it runs on every routed request.
func keyProblem(key string) string {
	if key == "" {
		return "empty"
	}
	if len(key) > MaxKeyLen {
		return fmt.Sprintf("longer than %d bytes (got %d)", MaxKeyLen, len(key))
	}
	for i := 0; i < len(key); {
		c := key[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f {
				return fmt.Sprintf("contains control character %U at byte %d", rune(c), i)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(key[i:])
		if r == utf8.RuneError && size == 1 {
			return fmt.Sprintf("not valid UTF-8 at byte %d", i)
		}
		if unicode.IsControl(r) {
			return fmt.Sprintf("contains control character %U at byte %d", r, i)
		}
		i += size
	}
	return ""
}

// HTTPStatus is the status a call site answers with when extraction fails
// with err, so the activator and the agent answer the same: 400 when the
// request does not carry a usable key, 415 for batched CloudEvents, 413 when the key is in a body larger
// than the limit, 500 otherwise (for example a failed body read), and 200
// for a nil error.
func HTTPStatus(err error) int {
	switch {
	case err == nil:
		return http.StatusOK
	case errors.Is(err, ErrBodyTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrBatch):
		// The agent answers a batch with 415 too: it is a content type
		// kstate does not take, whatever the key spec.
		return http.StatusUnsupportedMediaType
	case errors.Is(err, ErrNoKey), errors.Is(err, ErrInvalidKey), errors.Is(err, ErrMalformedEvent):
		return http.StatusBadRequest
	default:
		return http.StatusInternalServerError
	}
}

// specError is a Parse error. Its message starts with the spec text, not
// with ErrInvalidSpec's, because it is shown to users verbatim by the
// webhook ("key spec "headr:x": unknown source ...").
type specError struct {
	spec   string
	reason string
}

func (e *specError) Error() string { return fmt.Sprintf("key spec %q: %s", e.spec, e.reason) }

func (e *specError) Unwrap() error { return ErrInvalidSpec }
