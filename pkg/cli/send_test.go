package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/runtime"
	"knative.dev/pkg/apis"
)

// received is what the test server saw of one request.
type received struct {
	Encoding   string
	ID         string
	Source     string
	Type       string
	Subject    string
	Extensions map[string]string
	Data       string
	// Path is the escaped path; CartID the Cart-Id header.
	Path        string
	RawQuery    string
	CartID      string
	ContentType string
}

// ceServer is an httptest server that decodes the CloudEvent it receives
// with sdk-go and answers with reply.
type ceServer struct {
	*httptest.Server
	mu   sync.Mutex
	got  []received
	errs []error
}

func newCEServer(t *testing.T, reply http.HandlerFunc) *ceServer {
	s := &ceServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		msg := cehttp.NewMessageFromHttpRequest(r)
		enc := msg.ReadEncoding()
		ev, err := binding.ToEvent(r.Context(), msg)
		s.mu.Lock()
		if err != nil {
			s.errs = append(s.errs, err)
		} else {
			rc := received{
				Encoding: enc.String(), ID: ev.ID(), Source: ev.Source(), Type: ev.Type(), Subject: ev.Subject(),
				Data: string(ev.Data()), Path: r.URL.EscapedPath(), RawQuery: r.URL.RawQuery,
				CartID: r.Header.Get("Cart-Id"), ContentType: r.Header.Get("Content-Type"),
			}
			for k, v := range ev.Extensions() {
				if rc.Extensions == nil {
					rc.Extensions = map[string]string{}
				}
				rc.Extensions[k] = fmt.Sprint(v)
			}
			s.got = append(s.got, rc)
		}
		s.mu.Unlock()
		reply(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *ceServer) received(t *testing.T) []received {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, err := range s.errs {
		t.Errorf("the server could not decode a CloudEvent: %v", err)
	}
	return s.got
}

// replyJSON answers like the agent does for a plain reply.
func replyJSON(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Kstate-Pod", "cart-a")
	w.Header().Set("Kstate-Slot", "12")
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"count":5}`)
}

// replyEvent answers with a binary-mode CloudEvent, as a duplicate.
func replyEvent(w http.ResponseWriter, r *http.Request) {
	ev := event.New()
	ev.SetID("r-1")
	ev.SetSource("/cart")
	ev.SetType("cart.updated")
	ev.SetSubject("alice")
	ev.SetExtension("partitionkey", "alice")
	ev.SetData(event.ApplicationJSON, []byte(`{"total":3}`))
	w.Header().Set("Kstate-Pod", "cart-b")
	w.Header().Set("Kstate-Slot", "40")
	w.Header().Set("Kstate-Duplicate", "true")
	if err := cehttp.WriteResponseWriter(r.Context(), binding.ToMessage(&ev), http.StatusOK, w); err != nil {
		panic(err)
	}
}

func TestSendPlacesTheKey(t *testing.T) {
	const data = `{"sku":"x","n":2}`
	base := received{ID: "ev-1", Source: "/kn-kstate", Type: "cart.add", Data: data, Path: "/"}
	with := func(f func(*received)) received {
		r := base
		f(&r)
		return r
	}
	tests := []struct {
		name    string
		keySpec string
		mode    string
		key     string
		want    received
	}{{
		name: "ce:partitionkey, binary", keySpec: "ce:partitionkey", mode: "binary", key: "alice",
		want: with(func(r *received) {
			r.Encoding, r.ContentType, r.Extensions = "binary", "application/json", map[string]string{"partitionkey": "alice"}
		}),
	}, {
		name: "ce:partitionkey, structured", keySpec: "ce:partitionkey", mode: "structured", key: "alice",
		want: with(func(r *received) {
			r.Encoding, r.ContentType, r.Extensions = "structured", "application/cloudevents+json", map[string]string{"partitionkey": "alice"}
		}),
	}, {
		name: "another extension", keySpec: "ce:tenant", mode: "binary", key: "acme",
		want: with(func(r *received) {
			r.Encoding, r.ContentType, r.Extensions = "binary", "application/json", map[string]string{"tenant": "acme"}
		}),
	}, {
		name: "ce:subject, structured", keySpec: "ce:subject", mode: "structured", key: "alice",
		want: with(func(r *received) {
			r.Encoding, r.ContentType, r.Subject = "structured", "application/cloudevents+json", "alice"
		}),
	}, {
		name: "ce:source", keySpec: "ce:source", mode: "binary", key: "/tenants/acme",
		want: with(func(r *received) { r.Encoding, r.ContentType, r.Source = "binary", "application/json", "/tenants/acme" }),
	}, {
		name: "header", keySpec: "header:cart-id", mode: "binary", key: "c-42",
		want: with(func(r *received) { r.Encoding, r.ContentType, r.CartID = "binary", "application/json", "c-42" }),
	}, {
		name: "path, with a key that needs escaping", keySpec: "path:/carts/{key}/items", mode: "structured", key: "a/b c",
		want: with(func(r *received) {
			r.Encoding, r.ContentType, r.Path = "structured", "application/cloudevents+json", "/carts/a%2Fb%20c/items"
		}),
	}, {
		name: "query", keySpec: "query:cart", mode: "binary", key: "a&b",
		want: with(func(r *received) { r.Encoding, r.ContentType, r.RawQuery = "binary", "application/json", "cart=a%26b" }),
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newCEServer(t, replyJSON)
			// --url and --key-spec: no cluster needed.
			p := &Params{NewClients: func(string) (*Clients, error) {
				t.Error("send with --url and --key-spec built cluster clients")
				return nil, fmt.Errorf("no cluster in this test")
			}}
			_, _, err := runCommand(t, p, "send", "cart", "--url", srv.URL, "--key-spec", tt.keySpec, "--mode", tt.mode,
				"--key", tt.key, "--type", "cart.add", "--id", "ev-1", "--data", data)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]received{tt.want}, srv.received(t)); diff != "" {
				t.Errorf("received (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSendToServiceURL(t *testing.T) {
	srv := newCEServer(t, replyEvent)
	svc := cartService() // key spec header:Cart-Id
	svc.Status.URL, _ = apis.ParseURL(srv.URL)
	f := newFakeCluster(t, holdsOwnSlots(t), []runtime.Object{svc}, nil)
	out, _, err := f.run(t, "send", "cart", "--key", "alice", "--type", "cart.add", "--id", "ev-9", "--source", "/test")
	if err != nil {
		t.Fatal(err)
	}
	want := []received{{Encoding: "binary", ID: "ev-9", Source: "/test", Type: "cart.add", Path: "/", CartID: "alice"}}
	if diff := cmp.Diff(want, srv.received(t)); diff != "" {
		t.Errorf("received (-want +got):\n%s", diff)
	}
	wantOut := lines(
		kv(10, "Sent", fmt.Sprintf(`cart.add ev-9 from /test, key "alice" in header:Cart-Id (binary mode) to %s`, srv.URL)),
		kv(10, "Status", "200 OK"),
		kv(10, "Pod", "cart-b"),
		kv(10, "Slot", "40"),
		kv(10, "Duplicate", "yes"),
		kv(10, "Reply", "CloudEvent cart.updated r-1 from /cart, subject alice"),
		"Data:",
		"{",
		`  "total": 3`,
		"}",
	)
	if diff := cmp.Diff(wantOut, out); diff != "" {
		t.Errorf("stdout (-want +got):\n%s", diff)
	}
}

func TestSendJSONAndErrorStatus(t *testing.T) {
	srv := newCEServer(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Kstate-Pod", "cart-a")
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `{"error":"too many events queued for this key"}`)
	})
	p := &Params{}
	out, _, err := runCommand(t, p, "send", "cart", "--url", srv.URL+"/base", "--key-spec", "ce:partitionkey",
		"--key", "alice", "--type", "cart.add", "--id", "ev-2", "-o", "json")
	if diff := cmp.Diff(`service "cart" answered 503 Service Unavailable`, errText(err)); diff != "" {
		t.Errorf("error (-want +got):\n%s", diff)
	}
	var got SendResult
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("output is not a SendResult: %v\n%s", err, out)
	}
	want := SendResult{
		URL: srv.URL + "/base", Mode: "binary", KeySpec: "ce:partitionkey",
		Sent:   SentEvent{ID: "ev-2", Source: "/kn-kstate", Type: "cart.add", Key: "alice"},
		Status: 503, StatusText: "503 Service Unavailable", Pod: "cart-a",
		Body: &Payload{JSON: json.RawMessage(`{"error":"too many events queued for this key"}`)},
	}
	if diff := cmp.Diff(want, got, jsonEqual); diff != "" {
		t.Errorf("result (-want +got):\n%s", diff)
	}
}

func TestSendCETypeKey(t *testing.T) {
	srv := newCEServer(t, replyJSON)
	p := &Params{}
	// The key spec takes the key from the type: --type may be left out.
	if _, _, err := runCommand(t, p, "send", "cart", "--url", srv.URL, "--key-spec", "ce:type", "--key", "cart.add", "--id", "ev-3"); err != nil {
		t.Fatal(err)
	}
	want := []received{{Encoding: "binary", ID: "ev-3", Source: "/kn-kstate", Type: "cart.add", Path: "/"}}
	if diff := cmp.Diff(want, srv.received(t)); diff != "" {
		t.Errorf("received (-want +got):\n%s", diff)
	}
}

// TestSendThroughIngress: with --ingress the request goes to that address
// and the Service's host travels in the Host header, as an ingress needs.
func TestSendThroughIngress(t *testing.T) {
	hosts := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hosts <- r.Host
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(srv.Close)
	svc := cartService()
	svc.Status.URL, _ = apis.ParseURL("http://cart.shop.example.com")
	f := newFakeCluster(t, holdsOwnSlots(t), []runtime.Object{svc}, nil)
	ingress := strings.TrimPrefix(srv.URL, "http://")
	if _, _, err := f.run(t, "send", "cart", "--key", "alice", "--type", "cart.add", "--ingress", ingress); err != nil {
		t.Fatal(err)
	}
	if got, want := <-hosts, "cart.shop.example.com"; got != want {
		t.Errorf("Host header: got %q, want %q", got, want)
	}
}
