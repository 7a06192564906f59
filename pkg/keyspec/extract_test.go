package keyspec_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/go-cmp/cmp"

	"github.com/kstate-dev/kstate/pkg/keyspec"
)

// sentinels are the errors a caller branches on; each test row names the
// one its error must wrap.
var sentinels = []error{
	keyspec.ErrNoKey, keyspec.ErrInvalidKey, keyspec.ErrBatch,
	keyspec.ErrMalformedEvent, keyspec.ErrBodyTooLarge, keyspec.ErrInvalidSpec,
}

func checkErr(t *testing.T, err error, wantErr string, wantIs error) {
	t.Helper()
	if diff := cmp.Diff(wantErr, errString(err)); diff != "" {
		t.Errorf("error (-want +got):\n%s", diff)
	}
	for _, s := range sentinels {
		if got, want := errors.Is(err, s), s == wantIs; got != want {
			t.Errorf("errors.Is(%v, %v) = %v, want %v", err, s, got, want)
		}
	}
}

func TestFromRequest(t *testing.T) {
	long := strings.Repeat("k", keyspec.MaxKeyLen+1)
	tests := []struct {
		name    string
		spec    string
		target  string
		header  http.Header
		want    string
		wantErr string
		wantIs  error
	}{
		// header:
		{name: "header", spec: "header:Kstate-Key", header: http.Header{"Kstate-Key": {"cart-42"}}, want: "cart-42"},
		{name: "header first value", spec: "header:Kstate-Key", header: http.Header{"Kstate-Key": {"a", "b"}}, want: "a"},
		{name: "header unicode", spec: "header:X-Tenant", header: http.Header{"X-Tenant": {"Zürich 🏔"}}, want: "Zürich 🏔"},
		{name: "header max length", spec: "header:Kstate-Key", header: http.Header{"Kstate-Key": {long[1:]}}, want: long[1:]},
		{name: "header missing", spec: "header:Kstate-Key",
			wantErr: `no entity key: header "Kstate-Key" is missing or empty`, wantIs: keyspec.ErrNoKey},
		{name: "header empty", spec: "header:Kstate-Key", header: http.Header{"Kstate-Key": {""}},
			wantErr: `no entity key: header "Kstate-Key" is missing or empty`, wantIs: keyspec.ErrNoKey},
		{name: "header too long", spec: "header:Kstate-Key", header: http.Header{"Kstate-Key": {long}},
			wantErr: `invalid entity key: header "Kstate-Key": longer than 1024 bytes (got 1025)`, wantIs: keyspec.ErrInvalidKey},
		{name: "header control character", spec: "header:Kstate-Key", header: http.Header{"Kstate-Key": {"a\x00b"}},
			wantErr: `invalid entity key: header "Kstate-Key": contains control character U+0000 at byte 1`, wantIs: keyspec.ErrInvalidKey},
		{name: "header invalid UTF-8", spec: "header:Kstate-Key", header: http.Header{"Kstate-Key": {"\xfe"}},
			wantErr: `invalid entity key: header "Kstate-Key": not valid UTF-8 at byte 0`, wantIs: keyspec.ErrInvalidKey},
		{name: "header ignores CloudEvents encoding", spec: "header:Kstate-Key",
			header: http.Header{"Kstate-Key": {"h"}, "Content-Type": {"application/cloudevents-batch+json"}}, want: "h"},

		// query:
		{name: "query", spec: "query:id", target: "/?id=42", want: "42"},
		{name: "query first of many", spec: "query:id", target: "/?x=1&id=2&id=3", want: "2"},
		{name: "query plus is space", spec: "query:id", target: "/?id=a+b", want: "a b"},
		{name: "query escapes", spec: "query:id", target: "/?id=%2Fcarts%2F%C3%BC", want: "/carts/ü"},
		{name: "query escaped name", spec: "query:id", target: "/?i%64=7", want: "7"},
		{name: "query bad escape skipped", spec: "query:id", target: "/?id=%zz&id=ok", want: "ok"},
		{name: "query name is case-sensitive", spec: "query:id", target: "/?ID=1",
			wantErr: `no entity key: query parameter "id" is missing or empty`, wantIs: keyspec.ErrNoKey},
		{name: "query semicolon pair skipped", spec: "query:id", target: "/?id=1;x=2",
			wantErr: `no entity key: query parameter "id" is missing or empty`, wantIs: keyspec.ErrNoKey},
		{name: "query empty", spec: "query:id", target: "/?id=&x=1",
			wantErr: `no entity key: query parameter "id" is missing or empty`, wantIs: keyspec.ErrNoKey},
		{name: "query no query", spec: "query:id", target: "/carts",
			wantErr: `no entity key: query parameter "id" is missing or empty`, wantIs: keyspec.ErrNoKey},
		{name: "query control character", spec: "query:id", target: "/?id=a%0Ab",
			wantErr: `invalid entity key: query parameter "id": contains control character U+000A at byte 1`, wantIs: keyspec.ErrInvalidKey},

		// path:
		{name: "path", spec: "path:/carts/{key}", target: "/carts/42", want: "42"},
		{name: "path trailing segments", spec: "path:/carts/{key}", target: "/carts/42/items/7", want: "42"},
		{name: "path trailing slash", spec: "path:/carts/{key}", target: "/carts/42/", want: "42"},
		{name: "path with query", spec: "path:/carts/{key}", target: "/carts/42?x=1", want: "42"},
		{name: "path encoded slash stays in the key", spec: "path:/carts/{key}", target: "/carts/a%2Fb/items", want: "a/b"},
		{name: "path encoded space", spec: "path:/carts/{key}", target: "/carts/a%20b", want: "a b"},
		{name: "path encoded literal", spec: "path:/carts/{key}", target: "/c%61rts/a%2Fb", want: "a/b"},
		{name: "path plus is literal", spec: "path:/carts/{key}", target: "/carts/a+b", want: "a+b"},
		{name: "path root key", spec: "path:/{key}", target: "/abc/def", want: "abc"},
		{name: "path literal after key", spec: "path:/tenants/{key}/cart", target: "/tenants/t1/cart/items", want: "t1"},
		{name: "path literal after key escaped", spec: "path:/tenants/{key}/cart", target: "/tenants/t%2F1/cart", want: "t/1"},
		{name: "path literal after key mismatch", spec: "path:/tenants/{key}/cart", target: "/tenants/t1/carts",
			wantErr: `no entity key: request path does not match "/tenants/{key}/cart"`, wantIs: keyspec.ErrNoKey},
		{name: "path literal after key missing", spec: "path:/tenants/{key}/cart", target: "/tenants/t1",
			wantErr: `no entity key: request path does not match "/tenants/{key}/cart"`, wantIs: keyspec.ErrNoKey},
		{name: "path literal mismatch", spec: "path:/carts/{key}", target: "/cart/42",
			wantErr: `no entity key: request path does not match "/carts/{key}"`, wantIs: keyspec.ErrNoKey},
		{name: "path literal is case-sensitive", spec: "path:/carts/{key}", target: "/Carts/42",
			wantErr: `no entity key: request path does not match "/carts/{key}"`, wantIs: keyspec.ErrNoKey},
		{name: "path too short", spec: "path:/carts/{key}", target: "/carts",
			wantErr: `no entity key: request path does not match "/carts/{key}"`, wantIs: keyspec.ErrNoKey},
		{name: "path double slash", spec: "path:/carts/{key}", target: "//carts/42",
			wantErr: `no entity key: request path does not match "/carts/{key}"`, wantIs: keyspec.ErrNoKey},
		{name: "path empty key segment", spec: "path:/carts/{key}", target: "/carts/",
			wantErr: `no entity key: path segment {key} of "/carts/{key}" is missing or empty`, wantIs: keyspec.ErrNoKey},
		{name: "path empty root key", spec: "path:/{key}", target: "/",
			wantErr: `no entity key: path segment {key} of "/{key}" is missing or empty`, wantIs: keyspec.ErrNoKey},
		{name: "path control character", spec: "path:/carts/{key}", target: "/carts/%00",
			wantErr: `invalid entity key: path segment {key} of "/carts/{key}": contains control character U+0000 at byte 0`, wantIs: keyspec.ErrInvalidKey},
		{name: "path invalid UTF-8", spec: "path:/carts/{key}", target: "/carts/%FF",
			wantErr: `invalid entity key: path segment {key} of "/carts/{key}": not valid UTF-8 at byte 0`, wantIs: keyspec.ErrInvalidKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			target := tc.target
			if target == "" {
				target = "/"
			}
			r := httptest.NewRequest(http.MethodPost, target, strings.NewReader("body"))
			for k, v := range tc.header {
				r.Header[k] = v
			}
			got, err := keyspec.MustParse(tc.spec).FromRequest(r, 0)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("key (-want +got):\n%s", diff)
			}
			checkErr(t, err, tc.wantErr, tc.wantIs)
			// Only structured-mode ce: specs may touch the body.
			if b, _ := io.ReadAll(r.Body); string(b) != "body" {
				t.Errorf("body after FromRequest = %q, want %q", b, "body")
			}
		})
	}
}

// mode is how a test sends a CloudEvent.
type mode string

const (
	binaryMode     mode = "binary"
	structuredMode mode = "structured"
)

func newEvent(t testing.TB, edit func(*event.Event)) event.Event {
	t.Helper()
	ev := event.New()
	ev.SetID("evt-1")
	ev.SetSource("/kstate/test")
	ev.SetType("dev.kstate.test")
	if err := ev.SetData(event.ApplicationJSON, map[string]int{"n": 1}); err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(&ev)
	}
	if err := ev.Validate(); err != nil {
		t.Fatalf("test event is invalid: %v", err)
	}
	return ev
}

// writeEvent encodes ev into r the way sdk-go senders (brokers, triggers,
// sdk-go clients) do.
func writeEvent(t testing.TB, r *http.Request, ev event.Event, m mode) {
	t.Helper()
	ctx := binding.WithForceBinary(context.Background())
	if m == structuredMode {
		ctx = binding.WithForceStructured(context.Background())
	}
	if err := cehttp.WriteRequest(ctx, (*binding.EventMessage)(&ev), r); err != nil {
		t.Fatalf("WriteRequest: %v", err)
	}
}

// wireResult is what the receiving side of a real HTTP exchange saw.
type wireResult struct {
	key      string
	err      error
	restored []byte // r.Body read after FromRequest
	// What the agent computes: sdk-go parses the restored request, then
	// FromEvent.
	eventKey string
	eventErr error
	parseErr error
}

// overWire sends req to a real HTTP server (so headers are canonicalized
// and trimmed exactly as the activator sees them) whose handler runs
// FromRequest, reads the body back, and runs sdk-go + FromEvent on the
// restored request like the agent.
func overWire(t *testing.T, spec keyspec.Spec, maxBody int64, build func(url string) *http.Request) (sent []byte, res wireResult) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		res.key, res.err = spec.FromRequest(r, maxBody)
		var err error
		if res.restored, err = io.ReadAll(r.Body); err != nil {
			t.Errorf("reading restored body: %v", err)
		}
		r.Body = io.NopCloser(bytes.NewReader(res.restored))
		ev, err := cehttp.NewEventFromHTTPRequest(r)
		if err != nil {
			res.parseErr = err
			return
		}
		res.eventKey, res.eventErr = spec.FromEvent(ev)
	}))
	defer srv.Close()

	req := build(srv.URL)
	if req.GetBody != nil {
		b, err := req.GetBody()
		if err != nil {
			t.Fatal(err)
		}
		sent, _ = io.ReadAll(b)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("sending request: %v", err)
	}
	resp.Body.Close()
	return sent, res
}

func TestFromRequestCloudEventModes(t *testing.T) {
	long := strings.Repeat("k", keyspec.MaxKeyLen+1)
	tests := []struct {
		name    string
		spec    string
		edit    func(*event.Event)
		want    string
		wantErr map[mode]string // by mode; the same sentinel in both
		wantIs  error
	}{{
		name: "partitionkey",
		spec: "ce:partitionkey",
		edit: func(ev *event.Event) { ev.SetExtension("partitionkey", "cart-42") },
		want: "cart-42",
	}, {
		name: "partitionkey unicode",
		spec: "ce:partitionkey",
		edit: func(ev *event.Event) { ev.SetExtension("partitionkey", "Zürich/🏔") },
		want: "Zürich/🏔",
	}, {
		name: "subject",
		spec: "ce:subject",
		edit: func(ev *event.Event) { ev.SetSubject("users/7") },
		want: "users/7",
	}, {
		name: "type",
		spec: "ce:type",
		want: "dev.kstate.test",
	}, {
		name: "source",
		spec: "ce:source",
		edit: func(ev *event.Event) { ev.SetSource("https://example.com/devices/7?x=1") },
		want: "https://example.com/devices/7?x=1",
	}, {
		name: "other extension",
		spec: "ce:deviceid",
		edit: func(ev *event.Event) { ev.SetExtension("deviceid", "sensor-9") },
		want: "sensor-9",
	}, {
		name: "integer extension has its canonical string form",
		spec: "ce:tenant",
		edit: func(ev *event.Event) { ev.SetExtension("tenant", 42) },
		want: "42",
	}, {
		name: "boolean extension has its canonical string form",
		spec: "ce:flag",
		edit: func(ev *event.Event) { ev.SetExtension("flag", true) },
		want: "true",
	}, {
		name: "partitionkey missing",
		spec: "ce:partitionkey",
		wantErr: map[mode]string{
			binaryMode:     `no entity key: CloudEvents attribute "partitionkey" is missing or empty (binary mode: header "Ce-Partitionkey")`,
			structuredMode: `no entity key: CloudEvents attribute "partitionkey" is missing or empty`,
		},
		wantIs: keyspec.ErrNoKey,
	}, {
		name: "subject missing",
		spec: "ce:subject",
		wantErr: map[mode]string{
			binaryMode:     `no entity key: CloudEvents attribute "subject" is missing or empty (binary mode: header "Ce-Subject")`,
			structuredMode: `no entity key: CloudEvents attribute "subject" is missing or empty`,
		},
		wantIs: keyspec.ErrNoKey,
	}, {
		name: "partitionkey too long",
		spec: "ce:partitionkey",
		edit: func(ev *event.Event) { ev.SetExtension("partitionkey", long) },
		wantErr: map[mode]string{
			binaryMode:     `invalid entity key: CloudEvents attribute "partitionkey": longer than 1024 bytes (got 1025)`,
			structuredMode: `invalid entity key: CloudEvents attribute "partitionkey": longer than 1024 bytes (got 1025)`,
		},
		wantIs: keyspec.ErrInvalidKey,
	}, {
		name: "partitionkey with a tab",
		spec: "ce:partitionkey",
		edit: func(ev *event.Event) { ev.SetExtension("partitionkey", "a\tb") },
		wantErr: map[mode]string{
			binaryMode:     `invalid entity key: CloudEvents attribute "partitionkey": contains control character U+0009 at byte 1`,
			structuredMode: `invalid entity key: CloudEvents attribute "partitionkey": contains control character U+0009 at byte 1`,
		},
		wantIs: keyspec.ErrInvalidKey,
	}}
	for _, tc := range tests {
		for _, m := range []mode{binaryMode, structuredMode} {
			t.Run(tc.name+"/"+string(m), func(t *testing.T) {
				spec := keyspec.MustParse(tc.spec)
				ev := newEvent(t, tc.edit)
				sent, res := overWire(t, spec, 0, func(url string) *http.Request {
					r, err := http.NewRequest(http.MethodPost, url, nil)
					if err != nil {
						t.Fatal(err)
					}
					writeEvent(t, r, ev, m)
					return r
				})
				if diff := cmp.Diff(tc.want, res.key); diff != "" {
					t.Errorf("key (-want +got):\n%s", diff)
				}
				checkErr(t, res.err, tc.wantErr[m], tc.wantIs)
				if !bytes.Equal(sent, res.restored) {
					t.Errorf("body after FromRequest = %q, want the sent body %q", res.restored, sent)
				}
				// The agent, parsing the same request with sdk-go, must
				// compute the same key.
				if res.parseErr != nil {
					t.Fatalf("sdk-go cannot parse the restored request: %v", res.parseErr)
				}
				if res.eventKey != res.key || keyspec.HTTPStatus(res.eventErr) != keyspec.HTTPStatus(res.err) {
					t.Errorf("FromEvent = %q, %v; FromRequest = %q, %v; want the same key and status", res.eventKey, res.eventErr, res.key, res.err)
				}
			})
		}
	}
}

// TestFromRequestCloudEventEdges covers requests sdk-go senders do not
// produce but clients can.
func TestFromRequestCloudEventEdges(t *testing.T) {
	const ceJSON = "application/cloudevents+json"
	body := func(extra string) string {
		return `{"specversion":"1.0","id":"1","source":"/s","type":"t"` + extra + `}`
	}
	tests := []struct {
		name    string
		spec    string
		header  http.Header
		body    string
		chunked bool // hide the length, as a chunked request does
		maxBody int64
		want    string
		wantErr string
		wantIs  error
	}{{
		name:   "binary 0.3",
		spec:   "ce:partitionkey",
		header: http.Header{"Ce-Specversion": {"0.3"}, "Ce-Partitionkey": {"k"}},
		want:   "k",
	}, {
		name:   "binary subject is trimmed like sdk-go",
		spec:   "ce:subject",
		header: http.Header{"Ce-Specversion": {"1.0"}, "Ce-Subject": {"\u00a0s\u00a0"}},
		want:   "s",
	}, {
		name:   "binary extension is verbatim like sdk-go",
		spec:   "ce:partitionkey",
		header: http.Header{"Ce-Specversion": {"1.0"}, "Ce-Partitionkey": {"\u00a0k"}},
		want:   "\u00a0k",
	}, {
		name:   "binary source is normalized like sdk-go",
		spec:   "ce:source",
		header: http.Header{"Ce-Specversion": {"1.0"}, "Ce-Source": {"HTTPS://example.com/x"}},
		want:   "https://example.com/x",
	}, {
		name:    "binary source that is not a URI reference",
		spec:    "ce:source",
		header:  http.Header{"Ce-Specversion": {"1.0"}, "Ce-Source": {"http://[::1"}},
		wantErr: `malformed CloudEvent: binary-mode header Ce-Source is not a URI reference: parse "http://[::1": missing ']' in host`,
		wantIs:  keyspec.ErrMalformedEvent,
	}, {
		name:    "unknown spec version is not a CloudEvent",
		spec:    "ce:partitionkey",
		header:  http.Header{"Ce-Specversion": {"2.0"}, "Ce-Partitionkey": {"k"}},
		wantErr: `no entity key: key spec "ce:partitionkey" needs a CloudEvent, but the request is neither binary mode (Ce-Specversion: 1.0) nor structured mode (Content-Type: application/cloudevents+json)`,
		wantIs:  keyspec.ErrNoKey,
	}, {
		name:    "plain request with a ce header is not a CloudEvent",
		spec:    "ce:partitionkey",
		header:  http.Header{"Content-Type": {"application/json"}, "Ce-Partitionkey": {"k"}},
		body:    `{"partitionkey":"k"}`,
		wantErr: `no entity key: key spec "ce:partitionkey" needs a CloudEvent, but the request is neither binary mode (Ce-Specversion: 1.0) nor structured mode (Content-Type: application/cloudevents+json)`,
		wantIs:  keyspec.ErrNoKey,
	}, {
		name:   "structured with parameters and upper case",
		spec:   "ce:partitionkey",
		header: http.Header{"Content-Type": {"Application/CloudEvents+JSON; charset=utf-8"}},
		body:   body(`,"partitionkey":"k"`),
		want:   "k",
	}, {
		name:   "structured wins over binary headers, as in sdk-go",
		spec:   "ce:partitionkey",
		header: http.Header{"Content-Type": {ceJSON}, "Ce-Specversion": {"1.0"}, "Ce-Partitionkey": {"from-header"}},
		body:   body(`,"partitionkey":"from-body"`),
		want:   "from-body",
	}, {
		name:   "structured number extension",
		spec:   "ce:partitionkey",
		header: http.Header{"Content-Type": {ceJSON}},
		body:   body(`,"partitionkey":42`),
		want:   "42",
	}, {
		name:   "structured extension before specversion",
		spec:   "ce:partitionkey",
		header: http.Header{"Content-Type": {ceJSON}},
		body:   `{"partitionkey":"early","specversion":"1.0","id":"1","source":"/s","type":"t"}`,
		want:   "early",
	}, {
		name:    "structured null extension is missing",
		spec:    "ce:partitionkey",
		header:  http.Header{"Content-Type": {ceJSON}},
		body:    body(`,"partitionkey":null`),
		wantErr: `no entity key: CloudEvents attribute "partitionkey" is missing or empty`,
		wantIs:  keyspec.ErrNoKey,
	}, {
		name:    "structured escaped control character",
		spec:    "ce:subject",
		header:  http.Header{"Content-Type": {ceJSON}},
		body:    body(`,"subject":"a\u0000b"`),
		wantErr: `invalid entity key: CloudEvents attribute "subject": contains control character U+0000 at byte 1`,
		wantIs:  keyspec.ErrInvalidKey,
	}, {
		name:    "structured body is not JSON",
		spec:    "ce:partitionkey",
		header:  http.Header{"Content-Type": {ceJSON}},
		body:    `{"specversion":`,
		wantErr: `malformed CloudEvent: structured-mode body (application/cloudevents+json) does not decode: unexpected end of JSON input`,
		wantIs:  keyspec.ErrMalformedEvent,
	}, {
		name:    "structured empty body",
		spec:    "ce:partitionkey",
		header:  http.Header{"Content-Type": {ceJSON}},
		wantErr: `malformed CloudEvent: structured-mode body (application/cloudevents+json) does not decode: unexpected end of JSON input`,
		wantIs:  keyspec.ErrMalformedEvent,
	}, {
		name:    "structured unknown spec version",
		spec:    "ce:partitionkey",
		header:  http.Header{"Content-Type": {ceJSON}},
		body:    `{"specversion":"2.0","partitionkey":"k"}`,
		wantErr: `malformed CloudEvent: structured-mode body (application/cloudevents+json) does not decode: specversion: unknown value: 2.0`,
		wantIs:  keyspec.ErrMalformedEvent,
	}, {
		name:    "structured object extension",
		spec:    "ce:partitionkey",
		header:  http.Header{"Content-Type": {ceJSON}},
		body:    body(`,"partitionkey":{"a":1}`),
		wantErr: `malformed CloudEvent: structured-mode body (application/cloudevents+json) does not decode: invalid CloudEvents value: map[string]interface {}{"a":1}`,
		wantIs:  keyspec.ErrMalformedEvent,
	}, {
		name:    "structured body over the limit, length known",
		spec:    "ce:partitionkey",
		header:  http.Header{"Content-Type": {ceJSON}},
		body:    body(`,"partitionkey":"k"`),
		maxBody: 16,
		wantErr: `CloudEvent body too large: the structured-mode body is over the 16-byte limit for reading the entity key`,
		wantIs:  keyspec.ErrBodyTooLarge,
	}, {
		name:    "structured body over the limit, length unknown",
		spec:    "ce:partitionkey",
		header:  http.Header{"Content-Type": {ceJSON}},
		body:    body(`,"partitionkey":"k"`),
		chunked: true,
		maxBody: 16,
		wantErr: `CloudEvent body too large: the structured-mode body is over the 16-byte limit for reading the entity key`,
		wantIs:  keyspec.ErrBodyTooLarge,
	}, {
		name:    "structured body exactly at the limit, length unknown",
		spec:    "ce:partitionkey",
		header:  http.Header{"Content-Type": {ceJSON}},
		body:    body(`,"partitionkey":"k"`),
		chunked: true,
		maxBody: int64(len(body(`,"partitionkey":"k"`))),
		want:    "k",
	}, {
		name:    "largest possible limit, length unknown",
		spec:    "ce:partitionkey",
		header:  http.Header{"Content-Type": {ceJSON}},
		body:    body(`,"partitionkey":"k"`),
		chunked: true,
		maxBody: math.MaxInt64,
		want:    "k",
	}, {
		name:    "batch",
		spec:    "ce:partitionkey",
		header:  http.Header{"Content-Type": {"application/cloudevents-batch+json"}},
		body:    "[" + body(`,"partitionkey":"k"`) + "]",
		wantErr: `batched CloudEvents have no single entity key: key spec "ce:partitionkey" needs one event per request, got Content-Type application/cloudevents-batch+json`,
		wantIs:  keyspec.ErrBatch,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var rd io.Reader = strings.NewReader(tc.body)
			if tc.chunked {
				rd = struct{ io.Reader }{rd} // hides the type NewRequest sizes
			}
			r := httptest.NewRequest(http.MethodPost, "/", rd)
			if tc.chunked {
				r.ContentLength = -1
			}
			for k, v := range tc.header {
				r.Header[k] = v
			}
			got, err := keyspec.MustParse(tc.spec).FromRequest(r, tc.maxBody)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("key (-want +got):\n%s", diff)
			}
			checkErr(t, err, tc.wantErr, tc.wantIs)
			if b, _ := io.ReadAll(r.Body); string(b) != tc.body {
				t.Errorf("body after FromRequest = %q, want %q", b, tc.body)
			}
		})
	}
}

func TestFromRequestBatchFromSDK(t *testing.T) {
	evs := []event.Event{
		newEvent(t, func(ev *event.Event) { ev.SetExtension("partitionkey", "a") }),
		newEvent(t, func(ev *event.Event) { ev.SetExtension("partitionkey", "b") }),
	}
	spec := keyspec.MustParse(keyspec.DefaultCloudEventSpec)
	sent, res := overWire(t, spec, 0, func(url string) *http.Request {
		r, err := cehttp.NewHTTPRequestFromEvents(context.Background(), url, evs)
		if err != nil {
			t.Fatal(err)
		}
		return r
	})
	checkErr(t, res.err, `batched CloudEvents have no single entity key: key spec "ce:partitionkey" needs one event per request, got Content-Type application/cloudevents-batch+json`, keyspec.ErrBatch)
	if !bytes.Equal(sent, res.restored) {
		t.Errorf("body after FromRequest = %q, want %q", res.restored, sent)
	}
}

// failingBody returns some bytes, then an error, like a client that goes
// away mid-body.
type failingBody struct {
	data   []byte
	err    error
	closed bool
}

func (b *failingBody) Read(p []byte) (int, error) {
	if len(b.data) == 0 {
		return 0, b.err
	}
	n := copy(p, b.data)
	b.data = b.data[n:]
	return n, nil
}

func (b *failingBody) Close() error { b.closed = true; return nil }

func TestFromRequestBodyReadError(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantErr    string
		wantIs     error
		wantStatus int
	}{{
		name:       "client went away",
		err:        errors.New("connection reset"),
		wantErr:    "reading the structured-mode CloudEvent body: connection reset",
		wantStatus: http.StatusInternalServerError,
	}, {
		name:       "server body limit",
		err:        &http.MaxBytesError{Limit: 3},
		wantErr:    "CloudEvent body too large: http: request body too large",
		wantIs:     keyspec.ErrBodyTooLarge,
		wantStatus: http.StatusRequestEntityTooLarge,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fb := &failingBody{data: []byte(`{"spec`), err: tc.err}
			r := httptest.NewRequest(http.MethodPost, "/", nil)
			r.Body, r.ContentLength = fb, -1
			r.Header.Set("Content-Type", "application/cloudevents+json")
			_, err := keyspec.MustParse("ce:subject").FromRequest(r, 0)
			checkErr(t, err, tc.wantErr, tc.wantIs)
			if got := keyspec.HTTPStatus(err); got != tc.wantStatus {
				t.Errorf("HTTPStatus = %d, want %d", got, tc.wantStatus)
			}
			// The bytes read so far come back, then the original error.
			b, rerr := io.ReadAll(r.Body)
			if string(b) != `{"spec` || !errors.Is(rerr, tc.err) {
				t.Errorf("restored body = %q, %v; want %q, %v", b, rerr, `{"spec`, tc.err)
			}
			if err := r.Body.Close(); err != nil || !fb.closed {
				t.Errorf("closing the restored body: %v, original closed = %v; want it closed", err, fb.closed)
			}
		})
	}
}

func TestFromEvent(t *testing.T) {
	v03 := newEvent(t, func(ev *event.Event) {
		ev.SetSpecVersion(event.CloudEventsVersionV03)
		ev.SetSubject("old-subject")
		ev.SetExtension("partitionkey", "old-pk")
	})
	tests := []struct {
		name    string
		spec    string
		ev      *event.Event
		want    string
		wantErr string
		wantIs  error
	}{{
		name: "v0.3 subject",
		spec: "ce:subject",
		ev:   &v03,
		want: "old-subject",
	}, {
		name: "v0.3 extension",
		spec: "ce:partitionkey",
		ev:   &v03,
		want: "old-pk",
	}, {
		name: "binary extension value is base64",
		spec: "ce:blob",
		ev:   ptr(newEvent(t, func(ev *event.Event) { ev.SetExtension("blob", []byte{0xde, 0xad}) })),
		want: "3q0=",
	}, {
		name:    "nil event",
		spec:    "ce:partitionkey",
		wantErr: `no entity key: CloudEvents attribute "partitionkey" is missing: the event has no context attributes`,
		wantIs:  keyspec.ErrNoKey,
	}, {
		name:    "event without context",
		spec:    "ce:partitionkey",
		ev:      &event.Event{},
		wantErr: `no entity key: CloudEvents attribute "partitionkey" is missing: the event has no context attributes`,
		wantIs:  keyspec.ErrNoKey,
	}, {
		name:    "not a ce: spec",
		spec:    "header:Kstate-Key",
		ev:      &v03,
		wantErr: `key spec "header:Kstate-Key" does not read a CloudEvents attribute; use FromRequest`,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := keyspec.MustParse(tc.spec).FromEvent(tc.ev)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("key (-want +got):\n%s", diff)
			}
			checkErr(t, err, tc.wantErr, tc.wantIs)
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestIsCloudEventRequest(t *testing.T) {
	tests := []struct {
		name   string
		header http.Header
		want   bool
	}{
		{name: "plain", header: http.Header{"Content-Type": {"application/json"}}},
		{name: "no headers"},
		{name: "binary 1.0", header: http.Header{"Ce-Specversion": {"1.0"}}, want: true},
		{name: "binary 0.3", header: http.Header{"Ce-Specversion": {"0.3"}}, want: true},
		{name: "binary unknown version", header: http.Header{"Ce-Specversion": {"1.1"}}},
		{name: "structured", header: http.Header{"Content-Type": {"application/cloudevents+json"}}, want: true},
		{name: "structured with parameters", header: http.Header{"Content-Type": {" application/cloudevents+JSON ; charset=utf-8"}}, want: true},
		{name: "batch", header: http.Header{"Content-Type": {"application/cloudevents-batch+json"}}, want: true},
		{name: "unregistered structured format", header: http.Header{"Content-Type": {"application/cloudevents+avro"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/", nil)
			r.Header = tc.header
			if r.Header == nil {
				r.Header = http.Header{}
			}
			if got := keyspec.IsCloudEventRequest(r); got != tc.want {
				t.Errorf("IsCloudEventRequest = %v, want %v", got, tc.want)
			}
			// sdk-go must agree: it is what the agent parses with.
			msg := cehttp.NewMessageFromHttpRequest(r)
			if sdk := msg.ReadEncoding() != binding.EncodingUnknown; sdk != tc.want {
				t.Errorf("sdk-go ReadEncoding says CloudEvent = %v, want %v", sdk, tc.want)
			}
		})
	}
}
