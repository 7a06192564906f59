package keyspec

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strings"

	"github.com/cloudevents/sdk-go/v2/binding/format"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
)

// DefaultMaxBody is the structured-mode body limit FromRequest uses when it
// is given a limit <= 0. The activator holds the body in memory while it
// routes, so the limit is per request memory, not a cap on event size
// elsewhere.
const DefaultMaxBody int64 = 1 << 20

// Header names as sdk-go's HTTP binding uses them.
const (
	headerContentType = "Content-Type"
	headerSpecVersion = "Ce-Specversion"
)

// encoding is how a request carries a CloudEvent.
type encoding uint8

const (
	encNone encoding = iota
	encBinary
	encStructured
	encBatch
)

// encodingOf mirrors sdk-go's HTTP binding (protocol/http.NewMessage and
// Message.ReadEncoding): a Content-Type naming a registered event format
// wins; otherwise the request is binary mode if ce-specversion names a
// version sdk-go knows. Deciding any other way would let the activator read
// a key from a request the agent parses differently.
func encodingOf(h http.Header) (encoding, format.Format) {
	if f := format.Lookup(headerValue(h, headerContentType)); f != nil {
		if f == format.JSONBatch {
			return encBatch, f
		}
		return encStructured, f
	}
	switch headerValue(h, headerSpecVersion) {
	case event.CloudEventsVersionV1, event.CloudEventsVersionV03:
		return encBinary, nil
	}
	return encNone, nil
}

// IsCloudEventRequest reports whether r carries CloudEvents in binary,
// structured or batched mode, decided exactly as sdk-go decides it. Pass
// the result to Resolve.
func IsCloudEventRequest(r *http.Request) bool {
	enc, _ := encodingOf(r.Header)
	return enc != encNone
}

// headerValue is Header.Get for a canonical name, without canonicalizing
// again.
func headerValue(h http.Header, canonical string) string {
	if v := h[canonical]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// FromRequest returns the entity key r carries according to s.
//
// For a ce: spec it reads a binary-mode request's ce-* header, or decodes a
// structured-mode body of at most maxBody bytes (DefaultMaxBody if
// maxBody <= 0). In that case r.Body is replaced by a reader of the same
// bytes, whatever the outcome, so the caller can still forward the whole
// body; FromRequest must therefore not run concurrently with other readers
// of r. Batched CloudEvents give ErrBatch; a request that is not a
// CloudEvent gives ErrNoKey.
//
// The header, binary-mode ce: and path specs do not allocate when the key is
// found and valid.
func (s Spec) FromRequest(r *http.Request, maxBody int64) (string, error) {
	switch s.src {
	case srcHeader:
		return s.checked(headerValue(r.Header, s.arg))
	case srcQuery:
		return s.checked(queryValue(r.URL.RawQuery, s.arg))
	case srcPath:
		return s.fromPath(r.URL)
	case srcCE:
		return s.fromCloudEventRequest(r, maxBody)
	default:
		return "", fmt.Errorf("%w: the key spec is not set", ErrInvalidSpec)
	}
}

// FromEvent returns the entity key of an event sdk-go has already decoded,
// for a ce: spec. Extension values that are not strings (a JSON number in a
// structured event, for instance) are turned into their canonical
// CloudEvents string form, the form binary mode carries them in, so an event
// has the same key in both modes.
func (s Spec) FromEvent(ev *event.Event) (string, error) {
	if s.src != srcCE {
		return "", fmt.Errorf("key spec %q does not read a CloudEvents attribute; use FromRequest", s.String())
	}
	if ev == nil || ev.Context == nil {
		return "", fmt.Errorf("%w: %s is missing: the event has no context attributes", ErrNoKey, s.describe())
	}
	var v string
	switch s.attr {
	case ceSubject:
		v = ev.Context.GetSubject()
	case ceType:
		v = ev.Context.GetType()
	case ceSource:
		v = ev.Context.GetSource()
	default:
		raw, err := ev.Context.GetExtension(s.arg)
		if err != nil || raw == nil {
			break // GetExtension fails only when the extension is absent.
		}
		if str, ok := raw.(string); ok {
			v = str
			break
		}
		str, err := types.Format(raw)
		if err != nil {
			return "", fmt.Errorf("%w: %s: value %T has no CloudEvents string form: %w", ErrInvalidKey, s.describe(), raw, err)
		}
		v = str
	}
	return s.checked(v)
}

func (s Spec) fromCloudEventRequest(r *http.Request, maxBody int64) (string, error) {
	enc, f := encodingOf(r.Header)
	switch enc {
	case encBinary:
		return s.fromBinary(r.Header)
	case encStructured:
		return s.fromStructured(r, f, maxBody)
	case encBatch:
		return "", fmt.Errorf("%w: key spec %q needs one event per request, got Content-Type %s",
			ErrBatch, s.String(), event.ApplicationCloudEventsBatchJSON)
	default:
		return "", fmt.Errorf("%w: key spec %q needs a CloudEvent, but the request is neither binary mode (%s: %s) nor structured mode (%s: %s)",
			ErrNoKey, s.String(), headerSpecVersion, event.CloudEventsVersionV1, headerContentType, event.ApplicationCloudEventsJSON)
	}
}

// fromBinary reads a binary-mode attribute. sdk-go takes the first value of
// the header verbatim and then runs the context attribute setters, which
// trim subject and type and parse source as a URI reference; the key must
// be what FromEvent returns on the event sdk-go builds, so the same is done
// here. Extensions are stored verbatim.
func (s Spec) fromBinary(h http.Header) (string, error) {
	v := headerValue(h, s.ceHeader)
	switch s.attr {
	case ceSubject, ceType:
		v = strings.TrimSpace(v)
	case ceSource:
		if v != "" {
			var ec event.EventContextV1
			if err := ec.SetSource(v); err != nil {
				return "", fmt.Errorf("%w: binary-mode header %s is not a URI reference: %w", ErrMalformedEvent, s.ceHeader, err)
			}
			v = ec.GetSource()
		}
	}
	if v == "" {
		return "", fmt.Errorf("%w: %s is missing or empty (binary mode: header %q)", ErrNoKey, s.describe(), s.ceHeader)
	}
	return s.checked(v)
}

func (s Spec) fromStructured(r *http.Request, f format.Format, maxBody int64) (string, error) {
	body, err := readBody(r, maxBody)
	if err != nil {
		return "", err
	}
	// event.New and Format.Unmarshal are what sdk-go's binding.ToEvent runs
	// for a structured message; any other decoder could disagree with the
	// agent on an odd body.
	ev := event.New()
	if err := f.Unmarshal(body, &ev); err != nil {
		return "", fmt.Errorf("%w: structured-mode body (%s) does not decode: %w", ErrMalformedEvent, f.MediaType(), oneLine{err})
	}
	return s.FromEvent(&ev)
}

// oneLine renders an sdk-go error on one line: event.ValidationError ends
// every entry with a newline, which would split log lines and 400 bodies.
type oneLine struct{ err error }

func (e oneLine) Error() string {
	return strings.ReplaceAll(strings.TrimRight(e.err.Error(), "\n"), "\n", "; ")
}

func (e oneLine) Unwrap() error { return e.err }

// readBody reads at most maxBody bytes of r.Body and always leaves r.Body
// yielding the request's full, unchanged byte stream.
func readBody(r *http.Request, maxBody int64) ([]byte, error) {
	if maxBody <= 0 {
		maxBody = DefaultMaxBody
	}
	// The reader below is limited to maxBody+1, which must not overflow.
	maxBody = min(maxBody, math.MaxInt64-1)
	tooLarge := func() error {
		return fmt.Errorf("%w: the structured-mode body is over the %d-byte limit for reading the entity key", ErrBodyTooLarge, maxBody)
	}
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	if r.ContentLength > maxBody {
		return nil, tooLarge() // Nothing read, nothing to restore.
	}
	orig := r.Body
	size := int64(512)
	if r.ContentLength > 0 {
		size = r.ContentLength
	}
	// One byte more than the limit tells "exactly maxBody" from "more".
	buf := make([]byte, 0, size+1)
	lr := io.LimitReader(orig, maxBody+1)
	var readErr error
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := lr.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			readErr = err
			break
		}
	}
	if readErr != nil || int64(len(buf)) > maxBody {
		// orig still holds the rest of the body.
		r.Body = &replayBody{Reader: io.MultiReader(bytes.NewReader(buf), orig), closer: orig}
		if readErr != nil {
			var mbe *http.MaxBytesError
			if errors.As(readErr, &mbe) {
				return nil, fmt.Errorf("%w: %w", ErrBodyTooLarge, readErr)
			}
			return nil, fmt.Errorf("reading the structured-mode CloudEvent body: %w", readErr)
		}
		return nil, tooLarge()
	}
	r.Body = &replayBody{Reader: bytes.NewReader(buf), closer: orig}
	return buf, nil
}

// replayBody replays a body FromRequest has read. Close still closes the
// original so the server's and the transport's bookkeeping is unchanged.
type replayBody struct {
	io.Reader
	closer io.Closer
}

func (b *replayBody) Close() error { return b.closer.Close() }

// fromPath matches the request path against the template s.arg: literal
// segments must equal the leading request segments, {key} takes one whole
// segment, and request segments after the template are ignored.
func (s Spec) fromPath(u *url.URL) (string, error) {
	// When RawPath is empty, Path escapes back to the original, so it holds
	// no encoded '/' and can be split as is; otherwise the escaped form must
	// be split first and each segment unescaped.
	p, escaped := u.Path, false
	if u.RawPath != "" {
		p, escaped = u.EscapedPath(), true
	}
	if !strings.HasPrefix(p, "/") {
		return "", s.noPathMatch()
	}
	tmpl, p := s.arg[1:], p[1:]
	for {
		tseg, trest, tmore := strings.Cut(tmpl, "/")
		pseg, prest, pmore := strings.Cut(p, "/")
		if escaped {
			unescaped, err := url.PathUnescape(pseg)
			if err != nil {
				// EscapedPath only returns valid escapes; stay safe anyway.
				return "", fmt.Errorf("%w: %s: segment is not valid URL escaping: %w", ErrInvalidKey, s.describe(), err)
			}
			pseg = unescaped
		}
		if tseg == keySegment {
			if pseg == "" {
				return "", fmt.Errorf("%w: %s is missing or empty", ErrNoKey, s.describe())
			}
			// Later literal segments must still match.
			if err := matchRest(trest, prest, tmore, pmore, escaped); err != nil {
				return "", s.noPathMatch()
			}
			return s.checked(pseg)
		}
		// A literal is never last: {key} follows it.
		if tseg != pseg || !tmore || !pmore {
			return "", s.noPathMatch()
		}
		tmpl, p = trest, prest
	}
}

// matchRest checks the literal template segments after {key}.
func matchRest(tmpl, p string, tmore, pmore bool, escaped bool) error {
	for tmore {
		if !pmore {
			return errNoMatch
		}
		var tseg, pseg string
		tseg, tmpl, tmore = strings.Cut(tmpl, "/")
		pseg, p, pmore = strings.Cut(p, "/")
		if escaped {
			unescaped, err := url.PathUnescape(pseg)
			if err != nil {
				return err
			}
			pseg = unescaped
		}
		if tseg != pseg {
			return errNoMatch
		}
	}
	return nil
}

var errNoMatch = errors.New("path does not match")

func (s Spec) noPathMatch() error {
	return fmt.Errorf("%w: request path does not match %q", ErrNoKey, s.arg)
}

// queryValue returns the first value of name in rawQuery, with the
// semantics of url.ParseQuery followed by Values.Get (pairs with a ';' or
// bad escaping are skipped, '+' is a space) but without building the map.
func queryValue(rawQuery, name string) string {
	for q := rawQuery; q != ""; {
		var pair string
		pair, q, _ = strings.Cut(q, "&")
		if pair == "" || strings.IndexByte(pair, ';') >= 0 {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		if strings.ContainsAny(k, "%+") {
			var err error
			if k, err = url.QueryUnescape(k); err != nil {
				continue
			}
		}
		if k != name {
			continue
		}
		if strings.ContainsAny(v, "%+") {
			var err error
			if v, err = url.QueryUnescape(v); err != nil {
				continue
			}
		}
		return v
	}
	return ""
}

// checked applies the key invariants to a value the spec found.
func (s Spec) checked(v string) (string, error) {
	if v == "" {
		return "", fmt.Errorf("%w: %s is missing or empty", ErrNoKey, s.describe())
	}
	if reason := keyProblem(v); reason != "" {
		return "", fmt.Errorf("%w: %s: %s", ErrInvalidKey, s.describe(), reason)
	}
	return v, nil
}

// describe names where s looks, for error messages.
func (s Spec) describe() string {
	switch s.src {
	case srcHeader:
		return fmt.Sprintf("header %q", s.arg)
	case srcCE:
		return fmt.Sprintf("CloudEvents attribute %q", s.arg)
	case srcPath:
		return fmt.Sprintf("path segment {key} of %q", s.arg)
	case srcQuery:
		return fmt.Sprintf("query parameter %q", s.arg)
	default:
		return "unset key spec"
	}
}
