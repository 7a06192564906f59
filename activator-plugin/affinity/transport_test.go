package affinity

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kstate-dev/kstate/pkg/keyspec"
)

// fakeAgent is an HTTP backend standing in for a pod's agent: it answers
// 421 naming holder (when set), or 200 with its name and the body it got.
type fakeAgent struct {
	name string
	srv  *httptest.Server

	mu         sync.Mutex
	holder     string // answer 421 naming this holder
	holderAddr string
	draining   func() // when set: called, then the answer is a draining 503
	bodies     []string
}

func newFakeAgent(t testing.TB, name string) *fakeAgent {
	a := &fakeAgent{name: name}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("%s: reading the body: %v", name, err)
		}
		a.mu.Lock()
		a.bodies = append(a.bodies, string(body))
		holder, holderAddr, draining := a.holder, a.holderAddr, a.draining
		a.mu.Unlock()
		w.Header().Set("Kstate-Pod", name)
		if draining != nil {
			draining()
			w.Header().Set(HeaderDraining, "true")
			WriteError(w, http.StatusServiceUnavailable, "agent is shutting down")
			return
		}
		if holder != "" {
			w.Header().Set(HeaderHolder, holder)
			w.Header().Set(HeaderHolderAddr, holderAddr)
			WriteError(w, http.StatusMisdirectedRequest, "slot held by "+holder)
			return
		}
		fmt.Fprintf(w, "%s:%s", name, body)
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *fakeAgent) addr() string { return strings.TrimPrefix(a.srv.URL, "http://") }

func (a *fakeAgent) redirectTo(holder, holderAddr string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.holder, a.holderAddr = holder, holderAddr
}

func (a *fakeAgent) got() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.bodies...)
}

// proxyTo is a Proxy over the given agents, all ready.
func proxyTo(t testing.TB, agents ...*fakeAgent) (*Proxy, *Router) {
	t.Helper()
	var ps []Pod
	for _, a := range agents {
		ps = append(ps, Pod{Name: a.name, Addr: a.addr()})
	}
	r := mustRouter(t, Options{Slots: 64}, ps)
	return &Proxy{Router: r}, r
}

func serve(h http.Handler, method, target, body string, header map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func errorMessage(t testing.TB, rec *httptest.ResponseRecorder) string {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var e struct{ Error string }
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
		t.Fatalf("body %q is not a JSON error: %v", rec.Body.String(), err)
	}
	return e.Error
}

func TestRedirects(t *testing.T) {
	a, b, c := newFakeAgent(t, "a"), newFakeAgent(t, "b"), newFakeAgent(t, "c")
	proxy, router := proxyTo(t, a, b)
	key := keyOwnedBy(t, router, "a")
	hdr := map[string]string{"Kstate-Key": key}

	tests := []struct {
		name     string
		setup    func()
		wantCode int
		wantBody string // exact body on 200, substring of the error otherwise
		wantGot  map[string][]string
	}{{
		name:     "no redirect",
		setup:    func() {},
		wantCode: http.StatusOK,
		wantBody: "a:payload",
		wantGot:  map[string][]string{"a": {"payload"}},
	}, {
		name: "holder is a ready pod: its tracked address wins over the given one",
		setup: func() {
			a.redirectTo("b", "192.0.2.1:1") // unroutable: must not be used
		},
		wantCode: http.StatusOK,
		wantBody: "b:payload",
		wantGot:  map[string][]string{"a": {"payload"}, "b": {"payload"}},
	}, {
		name: "holder outside the ready set: the given address",
		setup: func() {
			a.redirectTo("c", c.addr())
		},
		wantCode: http.StatusOK,
		wantBody: "c:payload",
		wantGot:  map[string][]string{"a": {"payload"}, "c": {"payload"}},
	}, {
		name: "ping-pong gives up after the bound",
		setup: func() {
			a.redirectTo("b", "")
			b.redirectTo("a", "")
		},
		wantCode: http.StatusServiceUnavailable,
		wantBody: "gave up after following 3 redirect(s)",
		// One attempt plus three redirects, each with the whole body.
		wantGot: map[string][]string{"a": {"payload", "payload"}, "b": {"payload", "payload"}},
	}, {
		name: "unknown holder without an address",
		setup: func() {
			a.redirectTo("z", "")
		},
		wantCode: http.StatusServiceUnavailable,
		wantBody: `the slot holder "z" is not a ready pod of the revision and no Kstate-Holder-Addr was given`,
		wantGot:  map[string][]string{"a": {"payload"}},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, ag := range []*fakeAgent{a, b, c} {
				ag.redirectTo("", "")
				ag.mu.Lock()
				ag.bodies = nil
				ag.mu.Unlock()
			}
			tc.setup()
			rec := serve(proxy, http.MethodPost, "/", "payload", hdr)
			if rec.Code != tc.wantCode {
				t.Fatalf("status = %d, want %d; body %q", rec.Code, tc.wantCode, rec.Body.String())
			}
			if tc.wantCode == http.StatusOK {
				if got := rec.Body.String(); got != tc.wantBody {
					t.Errorf("body = %q, want %q", got, tc.wantBody)
				}
			} else {
				if msg := errorMessage(t, rec); !strings.Contains(msg, tc.wantBody) {
					t.Errorf("error = %q, want it to contain %q", msg, tc.wantBody)
				}
				if ra := rec.Header().Get("Retry-After"); ra != "1" {
					t.Errorf("Retry-After = %q, want 1", ra)
				}
			}
			got := map[string][]string{}
			for _, ag := range []*fakeAgent{a, b, c} {
				if g := ag.got(); len(g) > 0 {
					got[ag.name] = g
				}
			}
			if diff := cmp.Diff(tc.wantGot, got); diff != "" {
				t.Errorf("bodies the agents got (-want,+got):\n%s", diff)
			}
			for _, name := range []string{"a", "b"} {
				if n := router.InFlight(name); n != 0 {
					t.Errorf("InFlight(%s) = %d after the request, want 0", name, n)
				}
			}
		})
	}
}

// TestRedirectKeepsLimits: a redirected request gives its place at the
// first pod back before it takes one at the holder.
func TestRedirectKeepsLimits(t *testing.T) {
	a, b := newFakeAgent(t, "a"), newFakeAgent(t, "b")
	r := mustRouter(t, Options{Slots: 64, Concurrency: 1}, []Pod{{Name: "a", Addr: a.addr()}, {Name: "b", Addr: b.addr()}})
	proxy := &Proxy{Router: r}
	a.redirectTo("b", "")
	rec := serve(proxy, http.MethodGet, "/", "", map[string]string{"Kstate-Key": keyOwnedBy(t, r, "a")})
	if rec.Code != http.StatusOK || rec.Body.String() != "b:" {
		t.Fatalf("got %d %q, want 200 \"b:\"", rec.Code, rec.Body.String())
	}
	for _, name := range []string{"a", "b"} {
		if n := r.InFlight(name); n != 0 {
			t.Errorf("InFlight(%s) = %d, want 0", name, n)
		}
	}
}

func TestRedirectWithoutReplayableBody(t *testing.T) {
	a, b := newFakeAgent(t, "a"), newFakeAgent(t, "b")
	proxy, router := proxyTo(t, a, b)
	proxy.MaxBody = 4
	a.redirectTo("b", "")
	rec := serve(proxy, http.MethodPost, "/", "a body longer than four bytes", map[string]string{"Kstate-Key": keyOwnedBy(t, router, "a")})
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("status = %d, want 503; body %q", rec.Code, rec.Body.String())
	}
	if msg := errorMessage(t, rec); !strings.Contains(msg, "too large to keep for a re-send") {
		t.Errorf("error = %q", msg)
	}
	// The streamed body reached the first pod whole.
	if diff := cmp.Diff([]string{"a body longer than four bytes"}, a.got()); diff != "" {
		t.Errorf("bodies at a (-want,+got):\n%s", diff)
	}
}

// TestDrainingPodReroutes: a pod that refuses a request because it is
// shutting down (it left the ready set after the request was routed to it)
// sends the request to the slot's next owner once the router drops the pod,
// and only then.
func TestDrainingPodReroutes(t *testing.T) {
	tests := []struct {
		name     string
		drop     bool // whether the router drops the draining pod
		wantCode int
		wantBody string
	}{{
		name:     "router drops the pod: the next owner serves",
		drop:     true,
		wantCode: http.StatusOK,
		wantBody: "b:payload",
	}, {
		name:     "router keeps the pod: 503 after the wait",
		wantCode: http.StatusServiceUnavailable,
		wantBody: "a is draining but still the slot's owner for this router after 50ms",
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := newFakeAgent(t, "a"), newFakeAgent(t, "b")
			router := mustRouter(t, Options{Slots: 64, Concurrency: 1}, []Pod{{Name: "a", Addr: a.addr()}, {Name: "b", Addr: b.addr()}})
			proxy := &Proxy{Router: router, DrainWait: 50 * time.Millisecond}
			key := keyOwnedBy(t, router, "a")
			a.draining = func() {
				if tc.drop {
					if _, err := router.Update([]Pod{{Name: "b", Addr: b.addr()}}); err != nil {
						t.Error(err)
					}
				}
			}
			rec := serve(proxy, http.MethodPost, "/", "payload", map[string]string{"Kstate-Key": key})
			if rec.Code != tc.wantCode {
				t.Fatalf("status = %d, want %d; body %q", rec.Code, tc.wantCode, rec.Body.String())
			}
			if tc.wantCode == http.StatusOK {
				if got := rec.Body.String(); got != tc.wantBody {
					t.Errorf("body = %q, want %q", got, tc.wantBody)
				}
			} else if msg := errorMessage(t, rec); !strings.Contains(msg, tc.wantBody) {
				t.Errorf("error = %q, want it to contain %q", msg, tc.wantBody)
			}
			for _, name := range []string{"a", "b"} {
				if n := router.InFlight(name); n != 0 {
					t.Errorf("InFlight(%s) = %d after the request, want 0", name, n)
				}
			}
		})
	}
}

// TestForeign421PassesThrough: a 421 without Kstate-Holder is not an agent's
// and goes to the client unchanged.
func TestForeign421PassesThrough(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "misdirected", http.StatusMisdirectedRequest)
	}))
	defer srv.Close()
	r := mustRouter(t, Options{}, []Pod{{Name: "x", Addr: strings.TrimPrefix(srv.URL, "http://")}})
	rec := serve(&Proxy{Router: r}, http.MethodGet, "/", "", map[string]string{"Kstate-Key": "k"})
	if rec.Code != http.StatusMisdirectedRequest || rec.Body.String() != "misdirected\n" {
		t.Errorf("got %d %q, want the backend's 421", rec.Code, rec.Body.String())
	}
}

func TestProxyKeyErrors(t *testing.T) {
	a := newFakeAgent(t, "a")
	proxy, _ := proxyTo(t, a)
	path := keyspec.MustParse("path:/carts/{key}")
	structured := `{"specversion":"1.0","id":"1","source":"s","type":"t","partitionkey":"cart-1","data":"x"}`
	tests := []struct {
		name     string
		spec     *keyspec.Spec
		maxBody  int64
		target   string
		header   map[string]string
		body     string
		wantCode int
		wantMsg  string
	}{{
		name:     "missing default header",
		target:   "/",
		wantCode: http.StatusBadRequest,
		wantMsg:  `no entity key: header "Kstate-Key" is missing or empty`,
	}, {
		name:     "path does not match",
		spec:     &path,
		target:   "/users/1",
		wantCode: http.StatusBadRequest,
		wantMsg:  "no entity key",
	}, {
		name:     "invalid key",
		target:   "/",
		header:   map[string]string{"Kstate-Key": strings.Repeat("k", keyspec.MaxKeyLen+1)},
		wantCode: http.StatusBadRequest,
		wantMsg:  "invalid entity key",
	}, {
		name:     "structured event over the limit",
		maxBody:  16,
		target:   "/",
		header:   map[string]string{"Content-Type": "application/cloudevents+json"},
		body:     structured,
		wantCode: http.StatusRequestEntityTooLarge,
		wantMsg:  "CloudEvent body too large",
	}, {
		name:     "structured event: key from the body, body forwarded whole",
		target:   "/",
		header:   map[string]string{"Content-Type": "application/cloudevents+json"},
		body:     structured,
		wantCode: http.StatusOK,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			proxy.Spec, proxy.MaxBody = tc.spec, tc.maxBody
			rec := serve(proxy, http.MethodPost, tc.target, tc.body, tc.header)
			if rec.Code != tc.wantCode {
				t.Fatalf("status = %d, want %d; body %q", rec.Code, tc.wantCode, rec.Body.String())
			}
			if tc.wantCode == http.StatusOK {
				if want := "a:" + tc.body; rec.Body.String() != want {
					t.Errorf("body = %q, want %q", rec.Body.String(), want)
				}
				return
			}
			if msg := errorMessage(t, rec); !strings.HasPrefix(msg, tc.wantMsg) {
				t.Errorf("error = %q, want it to start with %q", msg, tc.wantMsg)
			}
		})
	}
}

func TestBufferBody(t *testing.T) {
	tests := []struct {
		name           string
		body           string
		contentLength  int64 // -1: unknown (chunked)
		limit          int64
		wantReplayable bool
		wantLength     int64
	}{
		{name: "empty", body: "", contentLength: 0, limit: 8, wantReplayable: true},
		{name: "fits", body: "12345678", contentLength: 8, limit: 8, wantReplayable: true, wantLength: 8},
		{name: "chunked fits", body: "1234", contentLength: -1, limit: 8, wantReplayable: true, wantLength: 4},
		{name: "declared too large", body: "123456789", contentLength: 9, limit: 8, wantLength: 9},
		{name: "chunked too large", body: "123456789", contentLength: -1, limit: 8, wantLength: -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(tc.body))
			req.ContentLength = tc.contentLength
			if tc.body == "" {
				req.Body = http.NoBody
			}
			rt := &Route{}
			if err := rt.BufferBody(req, tc.limit); err != nil {
				t.Fatal(err)
			}
			if rt.Replayable() != tc.wantReplayable {
				t.Errorf("Replayable() = %v, want %v", rt.Replayable(), tc.wantReplayable)
			}
			if req.ContentLength != tc.wantLength {
				t.Errorf("ContentLength = %d, want %d", req.ContentLength, tc.wantLength)
			}
			got, err := io.ReadAll(req.Body)
			if err != nil || string(got) != tc.body {
				t.Errorf("body after BufferBody = %q, %v; want %q", got, err, tc.body)
			}
			if tc.wantReplayable {
				for i := 0; i < 2; i++ {
					if again, _ := io.ReadAll(rt.NewBody()); string(again) != tc.body {
						t.Errorf("NewBody() #%d = %q, want %q", i, again, tc.body)
					}
				}
			}
		})
	}
}

// TestTargetHost: a redirect to a ready pod goes to TargetHost(its address),
// the way the activator rewrites pod addresses to the TLS port.
func TestTargetHost(t *testing.T) {
	a, b := newFakeAgent(t, "a"), newFakeAgent(t, "b")
	// b is known by an address nobody listens on; TargetHost maps it to b.
	r := mustRouter(t, Options{Slots: 64}, []Pod{{Name: "a", Addr: a.addr()}, {Name: "b", Addr: "b.invalid:8012"}})
	a.redirectTo("b", "")
	rt := &Route{Key: keyOwnedBy(t, r, "a"), replayable: true}
	ctx := NewContext(context.Background(), rt)
	if err := rt.Acquire(ctx, r); err != nil {
		t.Fatal(err)
	}
	defer rt.Release()
	var mapped []string
	tr := &Transport{Base: http.DefaultTransport, TargetHost: func(addr string) string {
		mapped = append(mapped, addr)
		return b.addr()
	}}
	req := httptest.NewRequest(http.MethodGet, "http://"+a.addr()+"/", nil).WithContext(ctx)
	req.RequestURI = ""
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(body) != "b:" {
		t.Errorf("got %d %q, want 200 \"b:\"", resp.StatusCode, body)
	}
	if diff := cmp.Diff([]string{"b.invalid:8012"}, mapped); diff != "" {
		t.Errorf("TargetHost calls (-want,+got):\n%s", diff)
	}
}
