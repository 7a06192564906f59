package keyspec_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/kstate-dev/kstate/pkg/keyspec"
)

// BenchmarkFromRequest measures the activator's per-request cost. The
// header and binary-mode cases are the hot path and must stay at 0
// allocs/op; structured mode reads and decodes the body and is shown for
// comparison.
func BenchmarkFromRequest(b *testing.B) {
	binary := httptest.NewRequest(http.MethodPost, "/", nil)
	writeEvent(b, binary, newEvent(b, func(ev *event.Event) { ev.SetExtension("partitionkey", "cart-42") }), binaryMode)
	// A server request carries canonical header keys, as here.
	header := httptest.NewRequest(http.MethodPost, "/carts/cart-42/items?id=cart-42", nil)
	header.Header.Set("Kstate-Key", "cart-42")
	header.Header.Set("Content-Type", "application/json")

	structured := httptest.NewRequest(http.MethodPost, "/", nil)
	writeEvent(b, structured, newEvent(b, func(ev *event.Event) { ev.SetExtension("partitionkey", "cart-42") }), structuredMode)
	body, err := io.ReadAll(structured.Body)
	if err != nil {
		b.Fatal(err)
	}

	for _, bc := range []struct {
		name string
		spec string
		r    *http.Request
		body []byte // reset before every call when set
	}{
		{name: "header", spec: "header:Kstate-Key", r: header},
		{name: "ce-binary-partitionkey", spec: "ce:partitionkey", r: binary},
		{name: "path", spec: "path:/carts/{key}", r: header},
		{name: "query", spec: "query:id", r: header},
		{name: "ce-structured-partitionkey", spec: "ce:partitionkey", r: structured, body: body},
	} {
		b.Run(bc.name, func(b *testing.B) {
			spec := keyspec.MustParse(bc.spec)
			b.ReportAllocs()
			for b.Loop() {
				if bc.body != nil {
					bc.r.Body = io.NopCloser(bytes.NewReader(bc.body))
				}
				if key, err := spec.FromRequest(bc.r, 0); key != "cart-42" || err != nil {
					b.Fatalf("FromRequest = %q, %v", key, err)
				}
			}
		})
	}
}

// TestHotPathDoesNotAllocate keeps the benchmark's promise in the normal
// test run.
func TestHotPathDoesNotAllocate(t *testing.T) {
	binary := httptest.NewRequest(http.MethodPost, "/carts/cart-42?id=cart-42", nil)
	writeEvent(t, binary, newEvent(t, func(ev *event.Event) { ev.SetExtension("partitionkey", "cart-42") }), binaryMode)
	binary.Header.Set("Kstate-Key", "cart-42")
	for _, s := range []string{"header:Kstate-Key", "ce:partitionkey", "path:/carts/{key}", "query:id"} {
		spec := keyspec.MustParse(s)
		allocs := testing.AllocsPerRun(100, func() {
			if key, err := spec.FromRequest(binary, 0); key != "cart-42" || err != nil {
				t.Fatalf("%s: FromRequest = %q, %v", s, key, err)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: FromRequest allocates %v times per call, want 0", s, allocs)
		}
	}
}
