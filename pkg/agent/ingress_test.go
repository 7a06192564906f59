package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/go-cmp/cmp"
)

func ingressServer(t testing.TB, mutate func(*Config)) (*httptest.Server, *Agent) {
	cfg := testConfig("pod-a", "ns/ingress")
	if mutate != nil {
		mutate(&cfg)
	}
	var a *Agent
	switch tt := t.(type) {
	case *testing.T:
		a = startAgent(tt, cfg, memStore(tt), &counterFn{})
	case *testing.F:
		a = startAgentF(tt, cfg)
	}
	h, err := a.Handler(func() bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, a
}

type answer struct {
	Status int
	Error  string // a substring of the JSON error message, or the body
}

func do(t testing.TB, req *http.Request) (answer, http.Header) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var e struct{ Error string }
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return answer{resp.StatusCode, e.Error}, resp.Header
	}
	return answer{resp.StatusCode, string(body)}, resp.Header
}

func newRequest(t testing.TB, method, url, body string, headers map[string]string) *http.Request {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	return req
}

// Bad input gets a 4xx whose body names the problem.
func TestIngressBadInput(t *testing.T) {
	srv, _ := ingressServer(t, func(c *Config) { c.MaxBodyBytes = 64 })
	ce := map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "1", "Ce-Source": "s", "Ce-Type": "t", "Ce-Partitionkey": "k"}
	without := func(h map[string]string, k string) map[string]string {
		out := map[string]string{}
		for kk, v := range h {
			if kk != k {
				out[kk] = v
			}
		}
		return out
	}
	tests := []struct {
		name    string
		method  string
		body    string
		headers map[string]string
		want    answer
	}{{
		name: "no key", method: "POST", body: `{"by":1}`,
		headers: map[string]string{"Content-Type": "application/json"},
		want:    answer{400, `"Kstate-Key"`},
	}, {
		name: "CloudEvent without partitionkey", method: "POST", body: `{}`,
		headers: without(ce, "Ce-Partitionkey"),
		want:    answer{400, "partitionkey"},
	}, {
		name: "binary CloudEvent without id", method: "POST", body: `{}`,
		headers: without(ce, "Ce-Id"),
		want:    answer{400, "id"},
	}, {
		name: "structured CloudEvent not JSON", method: "POST", body: `{not json`,
		headers: map[string]string{"Content-Type": "application/cloudevents+json"},
		want:    answer{400, "CloudEvent"},
	}, {
		name: "body over the limit", method: "POST", body: strings.Repeat("x", 65),
		headers: map[string]string{"Kstate-Key": "k", "Content-Type": "text/plain"},
		want:    answer{413, "64 bytes (KSTATE_MAX_BODY_BYTES)"},
	}, {
		name: "multipart", method: "POST", body: "x",
		headers: map[string]string{"Kstate-Key": "k", "Content-Type": "multipart/form-data; boundary=b"},
		want:    answer{415, `unsupported Content-Type "multipart/form-data"`},
	}, {
		name: "batched CloudEvents", method: "POST", body: `[]`,
		headers: map[string]string{"Content-Type": "application/cloudevents-batch+json"},
		want:    answer{415, "batched CloudEvents are not supported"},
	}, {
		name: "other CloudEvents format", method: "POST", body: `x`,
		headers: map[string]string{"Content-Type": "application/cloudevents+avro"},
		want:    answer{415, "application/cloudevents+json"},
	}, {
		name: "malformed content type", method: "POST", body: `x`,
		headers: map[string]string{"Kstate-Key": "k", "Content-Type": "a/b; ="},
		want:    answer{415, "malformed Content-Type"},
	}, {
		name: "key too long", method: "POST", body: ``,
		headers: map[string]string{"Kstate-Key": strings.Repeat("k", 1025)},
		want:    answer{400, "1024"},
	}, {
		name: "bad data reaches the function", method: "POST", body: `{"by":"x"}`,
		headers: map[string]string{"Kstate-Key": "k", "Content-Type": "application/json"},
		want:    answer{502, "function call failed"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _ := do(t, newRequest(t, tt.method, srv.URL, tt.body, tt.headers))
			if got.Status != tt.want.Status || !strings.Contains(got.Error, tt.want.Error) {
				t.Errorf("got %d %q, want %d containing %q", got.Status, got.Error, tt.want.Status, tt.want.Error)
			}
		})
	}
}

// CloudEvents in both modes, built by sdk-go, reach the same entity; a
// redelivery is answered with the first outcome.
func TestIngressCloudEvents(t *testing.T) {
	srv, _ := ingressServer(t, nil)
	ev := cloudevents.NewEvent()
	ev.SetID("e-1")
	ev.SetSource("/test")
	ev.SetType("counter.add")
	ev.SetExtension("partitionkey", "cart-7")
	ev.SetData(cloudevents.ApplicationJSON, map[string]int{"by": 4})

	send := func(structured bool, e cloudevents.Event) (answer, http.Header) {
		req, _ := http.NewRequest("POST", srv.URL, nil)
		msg := binding.ToMessage(&e)
		ctx := context.Background()
		if structured {
			ctx = binding.WithForceStructured(ctx)
		}
		if err := cehttp.WriteRequest(ctx, msg, req); err != nil {
			t.Fatal(err)
		}
		return do(t, req)
	}
	got, h := send(false, ev)
	if diff := cmp.Diff(answer{200, `{"count":4}`}, got); diff != "" {
		t.Fatalf("binary mode (-want +got):\n%s", diff)
	}
	if h.Get(HeaderPod) != "pod-a" || h.Get(HeaderSlot) == "" {
		t.Errorf("debug headers: pod %q slot %q", h.Get(HeaderPod), h.Get(HeaderSlot))
	}
	got, h = send(true, ev) // the same event again, structured: a redelivery
	if diff := cmp.Diff(answer{200, `{"count":4}`}, got); diff != "" || h.Get(HeaderDuplicate) != "true" {
		t.Fatalf("redelivery (-want +got):\n%s\nKstate-Duplicate: %q", diff, h.Get(HeaderDuplicate))
	}
	ev.SetID("e-2")
	got, _ = send(true, ev)
	if diff := cmp.Diff(answer{200, `{"count":8}`}, got); diff != "" {
		t.Fatalf("structured mode, new event (-want +got):\n%s", diff)
	}
}

// A plain HTTP request and a CloudEvent for the same key share the entity.
func TestIngressPlainHTTP(t *testing.T) {
	srv, _ := ingressServer(t, nil)
	got, _ := do(t, newRequest(t, "POST", srv.URL+"/any/path", `{"by":2}`, map[string]string{"Kstate-Key": "k", "Content-Type": "application/json"}))
	if diff := cmp.Diff(answer{200, `{"count":2}`}, got); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
	got, _ = do(t, newRequest(t, "POST", srv.URL, ``, map[string]string{"Kstate-Key": "k", HeaderType: "get"}))
	if diff := cmp.Diff(answer{200, `{"count":2}`}, got); diff != "" {
		t.Fatalf("Kstate-Type get (-want +got):\n%s", diff)
	}
}

func TestIngressHealthAndReadiness(t *testing.T) {
	srv, a := ingressServer(t, nil)
	for _, p := range []string{HealthPath, ReadyPath, StatsPath} {
		if got, _ := do(t, newRequest(t, "GET", srv.URL+p, "", nil)); got.Status != 200 {
			t.Errorf("%s: %d %s", p, got.Status, got.Error)
		}
	}
	a.Drain(context.Background())
	if got, _ := do(t, newRequest(t, "GET", srv.URL+ReadyPath, "", nil)); got.Status != 503 || !strings.Contains(got.Error, "draining") {
		t.Errorf("readiness while draining: %d %q", got.Status, got.Error)
	}
	got, h := do(t, newRequest(t, "POST", srv.URL, "", map[string]string{"Kstate-Key": "k"}))
	if got.Status != 503 || h.Get("Retry-After") == "" || h.Get(HeaderDraining) != "true" || !strings.Contains(got.Error, "shutting down") {
		t.Errorf("event while draining: %d %q Retry-After %q %s %q", got.Status, got.Error, h.Get("Retry-After"), HeaderDraining, h.Get(HeaderDraining))
	}
}

func TestIngressStats(t *testing.T) {
	srv, _ := ingressServer(t, nil)
	do(t, newRequest(t, "POST", srv.URL, "", map[string]string{"Kstate-Key": "k"}))
	resp, err := http.Get(srv.URL + StatsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		Pod      string `json:"pod"`
		Requests string `json:"requests"` // protojson writes int64 as a string
		Entities string `json:"entities"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(struct{ Pod, Requests, Entities string }{"pod-a", "1", "1"}, struct{ Pod, Requests, Entities string }{st.Pod, st.Requests, st.Entities}); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
}

func TestIngressMisdirected(t *testing.T) {
	srv, a := ingressServer(t, func(c *Config) { c.HandoffTimeout = 50 * 1e6 })
	// Another holder takes every slot first.
	for n := range a.slots {
		if _, err := a.store.Acquire(context.Background(), a.slots[n].ref, "pod-b", "10.0.0.2:8080", 1e12); err != nil {
			t.Fatal(err)
		}
	}
	got, h := do(t, newRequest(t, "POST", srv.URL, "", map[string]string{"Kstate-Key": "k"}))
	if got.Status != http.StatusMisdirectedRequest || h.Get(HeaderHolder) != "pod-b" || h.Get(HeaderHolderAddr) != "10.0.0.2:8080" {
		t.Errorf("got %d %q holder %q at %q; want 421 naming pod-b at 10.0.0.2:8080", got.Status, got.Error, h.Get(HeaderHolder), h.Get(HeaderHolderAddr))
	}
}

// FuzzIngress: any request gets an answer from a known set, never a panic
// or a 500.
func FuzzIngress(f *testing.F) {
	f.Add("POST", "application/json", "", "k", "", `{"by":1}`)
	f.Add("POST", "application/cloudevents+json", "", "", "", `{"specversion":"1.0","id":"1","source":"s","type":"t","partitionkey":"p","data":{"by":2}}`)
	f.Add("POST", "application/json", "1.0", "", "p", `{"by":1}`)
	f.Add("GET", "", "", "k", "", ``)
	f.Add("PUT", "application/cloudevents-batch+json", "", "", "", `[]`)
	f.Add("POST", "text/plain", "0.3", "k", "", "\x00\xff")
	f.Add("POST", "application/cloudevents+json", "", "", "", `{"specversion":"1.0","id":"1","source":"s","type":"t","partitionkey":7}`)
	srv, _ := ingressServer(f, nil)
	allowed := map[int]bool{200: true, 204: true, 400: true, 405: true, 413: true, 415: true, 502: true}
	f.Fuzz(func(t *testing.T, method, contentType, specVersion, key, partitionKey, body string) {
		req, err := http.NewRequest(method, srv.URL, bytes.NewReader([]byte(body)))
		if err != nil {
			return // not a request a client could send
		}
		set := func(k, v string) {
			if v != "" {
				req.Header[k] = []string{v}
			}
		}
		set("Content-Type", contentType)
		set("Ce-Specversion", specVersion)
		set("Ce-Id", "id")
		set("Ce-Source", "src")
		set("Ce-Type", "t")
		set("Ce-Partitionkey", partitionKey)
		set("Kstate-Key", key)
		set("Ce-", "x")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return // the client refused to send it (bad header bytes)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if !allowed[resp.StatusCode] {
			t.Fatalf("%s %q ce=%q key=%q pk=%q body=%q: status %d", method, contentType, specVersion, key, partitionKey, body, resp.StatusCode)
		}
	})
}
