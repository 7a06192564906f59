package keyspec_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kstate-dev/kstate/pkg/keyspec"
)

const grammar = "expected one of header:NAME, ce:ATTRIBUTE, path:/prefix/{key}, query:NAME"

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    string // String() of the parsed spec
		wantCE  bool
		wantErr string
	}{
		// header:
		{in: "header:Kstate-Key", want: "header:Kstate-Key"},
		{in: "header:kstate-key", want: "header:Kstate-Key"},
		{in: " header:x-tenant-id\n", want: "header:X-Tenant-Id"},
		{in: "header:Ce-Partitionkey", want: "header:Ce-Partitionkey"},
		{in: "header:", wantErr: `key spec "header:": header name is empty; expected header:NAME, e.g. header:Kstate-Key`},
		{in: "header:Kstate Key", wantErr: `key spec "header:Kstate Key": header name "Kstate Key" contains ' '; a header name is letters, digits and !#$%&'*+-.^_` + "`|~"},
		{in: "header:a:b", wantErr: `key spec "header:a:b": header name "a:b" contains ':'; a header name is letters, digits and !#$%&'*+-.^_` + "`|~"},
		{in: "header:host", wantErr: `key spec "header:host": header "Host" cannot carry the key: Go moves it out of the request headers`},
		{in: "header:connection", wantErr: `key spec "header:connection": header "Connection" cannot carry the key: it is a hop-by-hop header that proxies remove`},
		{in: "header:X-Forwarded-For", wantErr: `key spec "header:X-Forwarded-For": header "X-Forwarded-For" cannot carry the key: proxies rewrite it on the way to the pod`},

		// ce:
		{in: "ce:partitionkey", want: "ce:partitionkey", wantCE: true},
		{in: "ce:subject", want: "ce:subject", wantCE: true},
		{in: "ce:type", want: "ce:type", wantCE: true},
		{in: "ce:source", want: "ce:source", wantCE: true},
		{in: "ce:tenant2", want: "ce:tenant2", wantCE: true},
		{in: "ce:abcdefghijklmnopqrst", want: "ce:abcdefghijklmnopqrst", wantCE: true},
		{in: "ce:", wantErr: `key spec "ce:": CloudEvents attribute name "" must be 1 to 20 lowercase letters or digits (CloudEvents naming rules), e.g. ce:partitionkey`},
		{in: "ce:partitionKey", wantErr: `key spec "ce:partitionKey": CloudEvents attribute name "partitionKey" must be 1 to 20 lowercase letters or digits (CloudEvents naming rules), e.g. ce:partitionkey`},
		{in: "ce:partition-key", wantErr: `key spec "ce:partition-key": CloudEvents attribute name "partition-key" must be 1 to 20 lowercase letters or digits (CloudEvents naming rules), e.g. ce:partitionkey`},
		{in: "ce:abcdefghijklmnopqrstu", wantErr: `key spec "ce:abcdefghijklmnopqrstu": CloudEvents attribute name "abcdefghijklmnopqrstu" must be 1 to 20 lowercase letters or digits (CloudEvents naming rules), e.g. ce:partitionkey`},
		{in: "ce:id", wantErr: `key spec "ce:id": CloudEvents attribute "id" cannot be an entity key: it is unique per event, so every event would be its own entity; use ce:subject, ce:partitionkey or another extension`},
		{in: "ce:time", wantErr: `key spec "ce:time": CloudEvents attribute "time" cannot be an entity key: it is a timestamp, not an entity; use ce:subject, ce:partitionkey or another extension`},
		{in: "ce:datacontenttype", wantErr: `key spec "ce:datacontenttype": CloudEvents attribute "datacontenttype" cannot be an entity key: it describes the payload, not an entity; use ce:subject, ce:partitionkey or another extension`},

		// path:
		{in: "path:/carts/{key}", want: "path:/carts/{key}"},
		{in: "path:/{key}", want: "path:/{key}"},
		{in: "path:/tenants/{key}/cart", want: "path:/tenants/{key}/cart"},
		{in: "path:/v1:beta/~x/{key}", want: "path:/v1:beta/~x/{key}"},
		{in: "path:carts/{key}", wantErr: `key spec "path:carts/{key}": path template must start with "/", e.g. path:/carts/{key}`},
		{in: "path:", wantErr: `key spec "path:": path template must start with "/", e.g. path:/carts/{key}`},
		{in: "path:/carts", wantErr: `key spec "path:/carts": path template must contain exactly one {key} segment, found 0`},
		{in: "path:/{key}/{key}", wantErr: `key spec "path:/{key}/{key}": path template must contain exactly one {key} segment, found 2`},
		{in: "path:/carts/{key}/", wantErr: `key spec "path:/carts/{key}/": path template has an empty segment ("//" or a trailing "/"); segments are literals or {key}`},
		{in: "path://{key}", wantErr: `key spec "path://{key}": path template has an empty segment ("//" or a trailing "/"); segments are literals or {key}`},
		{in: "path:/carts/{id}", wantErr: `key spec "path:/carts/{id}": path template segment "{id}" contains '{'; a segment is exactly {key} or a literal of letters, digits and -._~!$&'()*+,;=:@`},
		{in: "path:/carts-{key}", wantErr: `key spec "path:/carts-{key}": path template segment "carts-{key}" contains '{'; a segment is exactly {key} or a literal of letters, digits and -._~!$&'()*+,;=:@`},
		{in: "path:/a%20b/{key}", wantErr: `key spec "path:/a%20b/{key}": path template segment "a%20b" contains '%'; a segment is exactly {key} or a literal of letters, digits and -._~!$&'()*+,;=:@`},
		{in: "path:/a/{key}?x=1", wantErr: `key spec "path:/a/{key}?x=1": path template segment "{key}?x=1" contains '{'; a segment is exactly {key} or a literal of letters, digits and -._~!$&'()*+,;=:@`},

		// query:
		{in: "query:id", want: "query:id"},
		{in: "query:user.ID_2~x-y", want: "query:user.ID_2~x-y"},
		{in: "query:", wantErr: `key spec "query:": query parameter name is empty; expected query:NAME`},
		{in: "query:a b", wantErr: `key spec "query:a b": query parameter name "a b" contains ' '; a name is letters, digits and -._~`},
		{in: "query:a&b", wantErr: `key spec "query:a&b": query parameter name "a&b" contains '&'; a name is letters, digits and -._~`},

		// sources
		{in: "", wantErr: `key spec "": empty; ` + grammar},
		{in: "   ", wantErr: `key spec "   ": empty; ` + grammar},
		{in: "headr:x", wantErr: `key spec "headr:x": unknown source "headr"; ` + grammar},
		{in: "Header:X", wantErr: `key spec "Header:X": unknown source "Header"; ` + grammar},
		{in: "header", wantErr: `key spec "header": missing ":" after the source; ` + grammar},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := keyspec.Parse(tc.in)
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("Parse(%q) = %q, want error %q", tc.in, got, tc.wantErr)
				}
				if diff := cmp.Diff(tc.wantErr, err.Error()); diff != "" {
					t.Errorf("Parse(%q) error (-want +got):\n%s", tc.in, diff)
				}
				if !errors.Is(err, keyspec.ErrInvalidSpec) {
					t.Errorf("Parse(%q) error %v does not wrap ErrInvalidSpec", tc.in, err)
				}
				if !got.IsZero() {
					t.Errorf("Parse(%q) returned non-zero spec %q with an error", tc.in, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q) = %v", tc.in, err)
			}
			if diff := cmp.Diff(tc.want, got.String()); diff != "" {
				t.Errorf("Parse(%q).String() (-want +got):\n%s", tc.in, diff)
			}
			if got.IsCloudEvent() != tc.wantCE {
				t.Errorf("Parse(%q).IsCloudEvent() = %v, want %v", tc.in, got.IsCloudEvent(), tc.wantCE)
			}
			again, err := keyspec.Parse(got.String())
			if err != nil || again != got {
				t.Errorf("Parse(%q) = %v, %v; want the spec back", got.String(), again, err)
			}
		})
	}
}

func TestMustParsePanics(t *testing.T) {
	defer func() {
		r := recover()
		err, ok := r.(error)
		if !ok || !errors.Is(err, keyspec.ErrInvalidSpec) {
			t.Errorf("MustParse panicked with %v, want an ErrInvalidSpec error", r)
		}
	}()
	keyspec.MustParse("headr:x")
}

func TestZeroSpec(t *testing.T) {
	var s keyspec.Spec
	if !s.IsZero() || s.IsCloudEvent() || s.String() != "" {
		t.Errorf("zero Spec: IsZero=%v IsCloudEvent=%v String=%q, want true, false, empty", s.IsZero(), s.IsCloudEvent(), s.String())
	}
	r, _ := http.NewRequest(http.MethodGet, "/", nil)
	_, err := s.FromRequest(r, 0)
	if diff := cmp.Diff("invalid key spec: the key spec is not set", errString(err)); diff != "" {
		t.Errorf("zero Spec FromRequest error (-want +got):\n%s", diff)
	}
	if got := keyspec.HTTPStatus(err); got != http.StatusInternalServerError {
		t.Errorf("HTTPStatus(zero spec error) = %d, want 500: it is a caller bug, not a bad request", got)
	}
}

func TestResolve(t *testing.T) {
	header := keyspec.MustParse("header:X-Cart")
	tests := []struct {
		name         string
		configured   *keyspec.Spec
		isCloudEvent bool
		want         string
	}{
		{name: "unset, plain HTTP", want: keyspec.DefaultHTTPSpec},
		{name: "unset, CloudEvent", isCloudEvent: true, want: keyspec.DefaultCloudEventSpec},
		{name: "zero, CloudEvent", configured: &keyspec.Spec{}, isCloudEvent: true, want: keyspec.DefaultCloudEventSpec},
		{name: "zero, plain HTTP", configured: &keyspec.Spec{}, want: keyspec.DefaultHTTPSpec},
		{name: "configured wins for CloudEvents", configured: &header, isCloudEvent: true, want: "header:X-Cart"},
		{name: "configured wins for plain HTTP", configured: &header, want: "header:X-Cart"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, keyspec.Resolve(tc.configured, tc.isCloudEvent).String()); diff != "" {
				t.Errorf("Resolve (-want +got):\n%s", diff)
			}
		})
	}
	// The defaults are documented as these exact strings; they must parse
	// to themselves.
	for _, s := range []string{keyspec.DefaultHTTPSpec, keyspec.DefaultCloudEventSpec} {
		if got := keyspec.MustParse(s).String(); got != s {
			t.Errorf("MustParse(%q).String() = %q", s, got)
		}
	}
}

func TestValidateKey(t *testing.T) {
	tests := []struct {
		name    string
		key     string
		wantErr string
	}{
		{name: "ascii", key: "cart-42"},
		{name: "unicode and spaces", key: "Ünïcödé 🛒 key"},
		{name: "max length", key: strings.Repeat("k", keyspec.MaxKeyLen)},
		{name: "max length in multibyte runes", key: strings.Repeat("é", keyspec.MaxKeyLen/2)},
		{name: "empty", key: "", wantErr: "invalid entity key: empty"},
		{name: "too long", key: strings.Repeat("k", keyspec.MaxKeyLen+1), wantErr: "invalid entity key: longer than 1024 bytes (got 1025)"},
		{name: "NUL", key: "a\x00b", wantErr: "invalid entity key: contains control character U+0000 at byte 1"},
		{name: "newline", key: "a\nb", wantErr: "invalid entity key: contains control character U+000A at byte 1"},
		{name: "tab", key: "\tb", wantErr: "invalid entity key: contains control character U+0009 at byte 0"},
		{name: "DEL", key: "ab\x7f", wantErr: "invalid entity key: contains control character U+007F at byte 2"},
		{name: "C1 NEL", key: "é\u0085", wantErr: "invalid entity key: contains control character U+0085 at byte 2"},
		{name: "invalid UTF-8", key: "ab\xff", wantErr: "invalid entity key: not valid UTF-8 at byte 2"},
		{name: "truncated rune", key: "a\xc3", wantErr: "invalid entity key: not valid UTF-8 at byte 1"},
		{name: "encoded U+FFFD is valid", key: "a\uFFFDb"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := keyspec.ValidateKey(tc.key)
			if diff := cmp.Diff(tc.wantErr, errString(err)); diff != "" {
				t.Errorf("ValidateKey error (-want +got):\n%s", diff)
			}
			if err != nil && !errors.Is(err, keyspec.ErrInvalidKey) {
				t.Errorf("ValidateKey error %v does not wrap ErrInvalidKey", err)
			}
		})
	}
}

func TestHTTPStatus(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{err: nil, want: http.StatusOK},
		{err: keyspec.ErrNoKey, want: http.StatusBadRequest},
		{err: keyspec.ErrInvalidKey, want: http.StatusBadRequest},
		{err: keyspec.ErrBatch, want: http.StatusUnsupportedMediaType},
		{err: keyspec.ErrMalformedEvent, want: http.StatusBadRequest},
		{err: keyspec.ErrBodyTooLarge, want: http.StatusRequestEntityTooLarge},
		{err: errors.Join(errors.New("wrapped"), keyspec.ErrNoKey), want: http.StatusBadRequest},
		{err: keyspec.ErrInvalidSpec, want: http.StatusInternalServerError},
		{err: errors.New("connection reset"), want: http.StatusInternalServerError},
	}
	for _, tc := range tests {
		t.Run(errString(tc.err), func(t *testing.T) {
			if got := keyspec.HTTPStatus(tc.err); got != tc.want {
				t.Errorf("HTTPStatus(%v) = %d, want %d", tc.err, got, tc.want)
			}
		})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
