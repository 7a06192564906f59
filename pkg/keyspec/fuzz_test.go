package keyspec_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/kstate-dev/kstate/pkg/keyspec"
)

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"header:Kstate-Key", "header:x-tenant", " header:a\n", "header:", "header:host",
		"ce:partitionkey", "ce:subject", "ce:source", "ce:type", "ce:id", "ce:Upper", "ce:abcdefghijklmnopqrstu",
		"path:/carts/{key}", "path:/{key}", "path:/t/{key}/c", "path:/{key}/{key}", "path://{key}", "path:/a{key}",
		"query:id", "query:a b", "query:",
		"", ":", "headr:x", "header", "ce:\x00", "path:/\xff/{key}",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		spec, err := keyspec.Parse(s)
		if err != nil {
			if !errors.Is(err, keyspec.ErrInvalidSpec) {
				t.Fatalf("Parse(%q) error %v does not wrap ErrInvalidSpec", s, err)
			}
			if !spec.IsZero() {
				t.Fatalf("Parse(%q) returned %q with an error", s, spec)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, "key spec ") || strings.ContainsAny(msg, "\n\r") {
				t.Fatalf("Parse(%q) error %q is not one line starting with the spec", s, msg)
			}
			return
		}
		if spec.IsZero() {
			t.Fatalf("Parse(%q) returned the zero Spec without an error", s)
		}
		text := spec.String()
		again, err := keyspec.Parse(text)
		if err != nil {
			t.Fatalf("Parse(%q) = %q, but Parse(%q) = %v", s, text, text, err)
		}
		if again != spec || again.String() != text {
			t.Fatalf("Parse(%q) = %q, Parse(String()) = %q: not a round trip", s, text, again)
		}
	})
}

// fuzzSpecs stand in when the fuzzed spec text does not parse, so every
// input exercises extraction.
var fuzzSpecs = []keyspec.Spec{
	keyspec.MustParse("header:Kstate-Key"),
	keyspec.MustParse("ce:partitionkey"),
	keyspec.MustParse("ce:subject"),
	keyspec.MustParse("ce:source"),
	keyspec.MustParse("ce:type"),
	keyspec.MustParse("ce:deviceid"),
	keyspec.MustParse("path:/carts/{key}"),
	keyspec.MustParse("path:/t/{key}/cart"),
	keyspec.MustParse("query:id"),
}

const fuzzMaxBody = 4096

func FuzzFromRequest(f *testing.F) {
	structured := func(edit func(*event.Event)) []byte {
		ev := newEvent(f, edit)
		b, err := ev.MarshalJSON()
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	const ceJSON = "application/cloudevents+json"
	// spec, Content-Type, Ce-Specversion, header name, header value, request target, body, chunked
	f.Add("header:Kstate-Key", "", "", "Kstate-Key", "cart-42", "/", []byte("x"), false)
	f.Add("header:Kstate-Key", "", "", "Kstate-Key", "a\x00b", "/", []byte(nil), false)
	f.Add("ce:partitionkey", "", "1.0", "Ce-Partitionkey", "k", "/", []byte("data"), false)
	f.Add("ce:partitionkey", "", "0.3", "Ce-Partitionkey", "", "/", []byte(nil), false)
	f.Add("ce:subject", "text/plain", "1.0", "Ce-Subject", " s ", "/", []byte("data"), true)
	f.Add("ce:source", "", "1.0", "Ce-Source", "HTTP://x/%7e", "/", []byte(nil), false)
	f.Add("ce:source", "", "1.0", "Ce-Source", "http://[::1", "/", []byte(nil), false)
	f.Add("ce:type", "", "1.0", "Ce-Type", "t", "/", []byte(nil), false)
	f.Add("ce:partitionkey", ceJSON, "", "", "", "/", structured(func(ev *event.Event) { ev.SetExtension("partitionkey", "k") }), false)
	f.Add("ce:partitionkey", ceJSON+"; charset=utf-8", "1.0", "Ce-Partitionkey", "h", "/", structured(func(ev *event.Event) { ev.SetExtension("partitionkey", 7) }), true)
	f.Add("ce:subject", ceJSON, "", "", "", "/", structured(func(ev *event.Event) { ev.SetSubject("s") }), false)
	f.Add("ce:deviceid", ceJSON, "", "", "", "/", []byte(`{"specversion":"1.0","id":"1","source":"/s","type":"t","deviceid":true}`), false)
	f.Add("ce:partitionkey", ceJSON, "", "", "", "/", []byte(`{"specversion":"1.0","partitionkey":"a\u0085"}`), false)
	f.Add("ce:partitionkey", ceJSON, "", "", "", "/", []byte(`{"specversion":`), true)
	f.Add("ce:partitionkey", ceJSON, "", "", "", "/", bytes.Repeat([]byte("x"), fuzzMaxBody+1), true)
	f.Add("ce:partitionkey", "application/cloudevents-batch+json", "", "", "", "/", []byte(`[]`), false)
	f.Add("ce:partitionkey", "application/json", "", "Ce-Partitionkey", "k", "/", []byte(`{}`), false)
	f.Add("path:/carts/{key}", "", "", "", "", "/carts/42/items", []byte(nil), false)
	f.Add("path:/carts/{key}", "", "", "", "", "/carts/a%2Fb", []byte(nil), false)
	f.Add("path:/t/{key}/cart", "", "", "", "", "/t/%00/cart", []byte(nil), false)
	f.Add("path:/t/{key}/cart", "", "", "", "", "/t/x/carts", []byte(nil), false)
	f.Add("query:id", "", "", "", "", "/?id=a+b&id=c", []byte(nil), false)
	f.Add("query:id", "", "", "", "", "/?i%64=%zz&id=ok;x&id=%C3%BC", []byte(nil), false)
	f.Add("not a spec", "", "", "", "", "/carts/7?id=7", []byte("x"), false)

	f.Fuzz(func(t *testing.T, specText, contentType, specVersion, hdrName, hdrValue, target string, body []byte, chunked bool) {
		spec, err := keyspec.Parse(specText)
		if err != nil {
			spec = fuzzSpecs[len(specText)%len(fuzzSpecs)]
		}
		u, err := url.ParseRequestURI(target)
		if err != nil {
			u = &url.URL{Path: target}
		}
		header := http.Header{}
		if contentType != "" {
			header["Content-Type"] = []string{contentType}
		}
		if specVersion != "" {
			header["Ce-Specversion"] = []string{specVersion}
		}
		hdrName = textproto.CanonicalMIMEHeaderKey(hdrName)
		if hdrName != "" {
			header[hdrName] = []string{hdrValue}
		}
		r := &http.Request{
			Method:        http.MethodPost,
			URL:           u,
			Header:        header.Clone(),
			Body:          io.NopCloser(bytes.NewReader(body)),
			ContentLength: int64(len(body)),
		}
		if chunked {
			r.ContentLength = -1
		}

		key, err := spec.FromRequest(r, fuzzMaxBody)

		restored, rerr := io.ReadAll(r.Body)
		if rerr != nil || !bytes.Equal(restored, body) {
			t.Fatalf("body after FromRequest = %q, %v; want the original %q", restored, rerr, body)
		}
		if err != nil {
			if key != "" {
				t.Fatalf("FromRequest returned key %q with error %v", key, err)
			}
			if s := keyspec.HTTPStatus(err); s != http.StatusBadRequest && s != http.StatusRequestEntityTooLarge && s != http.StatusUnsupportedMediaType {
				t.Fatalf("FromRequest error %v maps to %d; a valid spec on a readable request must only fail with client errors", err, s)
			}
		} else if verr := keyspec.ValidateKey(key); verr != nil {
			t.Fatalf("FromRequest returned key %q that breaks the invariants: %v", key, verr)
		}

		// Independent oracles.
		switch text := spec.String(); {
		case strings.HasPrefix(text, "header:"):
			checkOracle(t, key, err, header.Get(strings.TrimPrefix(text, "header:")))
		case strings.HasPrefix(text, "query:"):
			// url.ParseQuery gives up past a parameter count limit; the
			// scanner does not need to and is not compared there.
			if strings.Count(u.RawQuery, "&") < 1000 {
				checkOracle(t, key, err, u.Query().Get(strings.TrimPrefix(text, "query:")))
			}
		case strings.HasPrefix(text, "path:"):
			want, matched := referencePathKey(strings.TrimPrefix(text, "path:"), u)
			if !matched {
				if !errors.Is(err, keyspec.ErrNoKey) {
					t.Fatalf("path %q does not match %s, but FromRequest = %q, %v", u.EscapedPath(), text, key, err)
				}
				break
			}
			checkOracle(t, key, err, want)
		case spec.IsCloudEvent():
			checkAgainstSDK(t, spec, header, body, key, err)
		}
	})
}

// checkOracle compares FromRequest's result with the raw value an
// independent implementation found.
func checkOracle(t *testing.T, key string, err error, raw string) {
	t.Helper()
	switch {
	case raw == "":
		if !errors.Is(err, keyspec.ErrNoKey) {
			t.Fatalf("value is missing, but FromRequest = %q, %v; want ErrNoKey", key, err)
		}
	case keyspec.ValidateKey(raw) != nil:
		if !errors.Is(err, keyspec.ErrInvalidKey) {
			t.Fatalf("value %q is invalid, but FromRequest = %q, %v; want ErrInvalidKey", raw, key, err)
		}
	case key != raw || err != nil:
		t.Fatalf("FromRequest = %q, %v; want %q", key, err, raw)
	}
}

// referencePathKey is a deliberately naive template match: split both on
// "/", unescape every request segment.
func referencePathKey(tmpl string, u *url.URL) (string, bool) {
	tsegs := strings.Split(tmpl, "/")
	psegs := strings.Split(u.EscapedPath(), "/")
	if len(psegs) < len(tsegs) {
		return "", false
	}
	key := ""
	for i, ts := range tsegs {
		ps, err := url.PathUnescape(psegs[i])
		if err != nil {
			return "", false
		}
		if ts == "{key}" {
			key = ps
		} else if ts != ps {
			return "", false
		}
	}
	return key, true
}

// checkAgainstSDK is the agreement invariant: whenever sdk-go (the agent)
// can decode the request, FromEvent on its event gives what FromRequest
// (the activator) gave.
func checkAgainstSDK(t *testing.T, spec keyspec.Spec, header http.Header, body []byte, key string, err error) {
	t.Helper()
	// sdk-go v2.15.2 indexes past the end of a header named exactly "Ce-"
	// in binary mode; that is its bug, not a case to compare.
	if _, ok := header["Ce-"]; ok {
		return
	}
	msg := cehttp.NewMessage(header.Clone(), io.NopCloser(bytes.NewReader(body)))
	sdkCE := msg.ReadEncoding() != binding.EncodingUnknown
	r := &http.Request{Header: header, URL: &url.URL{}}
	if keyspec.IsCloudEventRequest(r) != sdkCE {
		t.Fatalf("IsCloudEventRequest = %v, sdk-go says %v", !sdkCE, sdkCE)
	}
	if len(body) > fuzzMaxBody {
		return // FromRequest rightly refuses what sdk-go would read.
	}
	ev, perr := binding.ToEvent(msg.Context(), msg)
	if perr != nil {
		if msg.ReadEncoding() == binding.EncodingStructured && !errors.Is(err, keyspec.ErrMalformedEvent) {
			t.Fatalf("sdk-go cannot decode the structured body (%v), but FromRequest = %q, %v", perr, key, err)
		}
		return
	}
	evKey, evErr := spec.FromEvent(ev)
	if evKey != key || keyspec.HTTPStatus(evErr) != keyspec.HTTPStatus(err) {
		t.Fatalf("activator and agent disagree: FromRequest = %q, %v; sdk-go + FromEvent = %q, %v", key, err, evKey, evErr)
	}
}
