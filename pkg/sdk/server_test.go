package sdk

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	functionv1 "github.com/kstate-dev/kstate/proto/function/v1"
)

// testTimeout bounds waits that must end; it is a failure guard, not a
// synchronisation.
const testTimeout = 10 * time.Second

type testServer struct {
	client functionv1.FunctionClient
	health healthpb.HealthClient
	conn   *grpc.ClientConn
	logs   *observer.ObservedLogs
	cancel context.CancelFunc
	done   chan error
}

// startServer serves h with ServeListener on a loopback port and connects a
// client over real TCP. The server is stopped at the end of the test.
func startServer(t *testing.T, h Handler, opts ...Option) *testServer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	core, logs := observer.New(zapcore.InfoLevel)
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{logs: logs, cancel: cancel, done: make(chan error, 1)}
	opts = append([]Option{WithLogger(zap.New(core).Sugar()), WithDrainTimeout(0)}, opts...)
	go func() { ts.done <- ServeListener(ctx, lis, h, opts...) }()

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	ts.conn = conn
	ts.client = functionv1.NewFunctionClient(conn)
	ts.health = healthpb.NewHealthClient(conn)
	t.Cleanup(func() {
		conn.Close()
		cancel()
		select {
		case err := <-ts.done:
			if err != nil {
				t.Errorf("ServeListener: %v", err)
			}
		case <-time.After(testTimeout):
			t.Errorf("ServeListener did not return after its context ended")
		}
	})
	return ts
}

func (ts *testServer) handle(t *testing.T, req *functionv1.HandleRequest) *functionv1.HandleResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	resp, err := ts.client.Handle(ctx, req, grpc.WaitForReady(true))
	if err != nil {
		t.Fatalf("Handle: %v", err)
	}
	return resp
}

func testRequest(key, typ string, data []byte) *functionv1.HandleRequest {
	return &functionv1.HandleRequest{
		Key: key,
		Event: &functionv1.CloudEvent{
			Id:          "ev-1",
			Source:      "/test",
			SpecVersion: "1.0",
			Type:        typ,
			Data:        data,
		},
	}
}

func wantHTTP(status int32, contentType, body string) *functionv1.HandleResponse {
	return &functionv1.HandleResponse{
		Reply: &functionv1.HandleResponse_ReplyHttp{ReplyHttp: &functionv1.HttpReply{
			Status: status, ContentType: contentType, Body: []byte(body),
		}},
	}
}

func outEvent(id, typ string) event.Event {
	e := event.New()
	e.SetID(id)
	e.SetSource("/counter")
	e.SetType(typ)
	return e
}

func TestHandleResults(t *testing.T) {
	emitted := outEvent("out-1", "test.emitted")
	tests := []struct {
		name string
		res  Result
		err  error
		want *functionv1.HandleResponse
	}{{
		name: "zero result keeps state and has no reply",
		want: &functionv1.HandleResponse{Action: functionv1.HandleResponse_KEEP},
	}, {
		name: "set state",
		res:  SetState([]byte("raw")),
		want: &functionv1.HandleResponse{Action: functionv1.HandleResponse_SET, State: []byte("raw")},
	}, {
		name: "set then keep",
		res:  SetState([]byte("raw")).Keep(),
		want: &functionv1.HandleResponse{Action: functionv1.HandleResponse_KEEP},
	}, {
		name: "delete",
		res:  Delete(),
		want: &functionv1.HandleResponse{Action: functionv1.HandleResponse_DELETE},
	}, {
		name: "reply JSON",
		res:  ReplyJSON(map[string]int{"n": 1}),
		want: wantHTTP(200, "application/json", `{"n":1}`),
	}, {
		name: "reply JSON with status, headers and a state change",
		res:  ReplyJSON("made").WithStatus(http.StatusCreated).WithHeader("Location", "/x").WithHeader("Location", "/y").SetState([]byte("s")),
		want: &functionv1.HandleResponse{
			Action: functionv1.HandleResponse_SET,
			State:  []byte("s"),
			Reply: &functionv1.HandleResponse_ReplyHttp{ReplyHttp: &functionv1.HttpReply{
				Status: 201, ContentType: "application/json", Body: []byte(`"made"`),
				Headers: map[string]string{"Location": "/x, /y"},
			}},
		},
	}, {
		name: "status without a reply makes an empty reply",
		res:  Delete().WithStatus(http.StatusAccepted),
		want: &functionv1.HandleResponse{
			Action: functionv1.HandleResponse_DELETE,
			Reply:  &functionv1.HandleResponse_ReplyHttp{ReplyHttp: &functionv1.HttpReply{Status: 202}},
		},
	}, {
		name: "raw reply",
		res:  Reply(http.StatusTeapot, "text/plain", []byte("short and stout")),
		want: wantHTTP(418, "text/plain", "short and stout"),
	}, {
		name: "reply event and emits",
		res:  ReplyEvent(outEvent("r-1", "test.reply")).Emit(emitted).Emit(outEvent("out-2", "test.emitted")),
		want: &functionv1.HandleResponse{
			Reply: &functionv1.HandleResponse_ReplyEvent{ReplyEvent: &functionv1.CloudEvent{
				Id: "r-1", Source: "/counter", SpecVersion: "1.0", Type: "test.reply",
			}},
			Emit: []*functionv1.CloudEvent{
				{Id: "out-1", Source: "/counter", SpecVersion: "1.0", Type: "test.emitted"},
				{Id: "out-2", Source: "/counter", SpecVersion: "1.0", Type: "test.emitted"},
			},
		},
	}, {
		name: "status error replies its status and keeps the state",
		res:  Save().Emit(emitted),
		err:  Errorf(http.StatusBadRequest, "cart %q is empty", "c1"),
		want: wantHTTP(400, "application/json", `{"error":"cart \"c1\" is empty"}`),
	}, {
		name: "wrapped status error",
		err:  fmt.Errorf("adding: %w", Errorf(http.StatusConflict, "item exists")),
		want: wantHTTP(409, "application/json", `{"error":"item exists"}`),
	}, {
		name: "status error with a non-error status becomes 500",
		err:  Errorf(http.StatusOK, "fine"),
		want: wantHTTP(500, "application/json", `{"error":"fine"}`),
	}, {
		name: "plain error is a 500 and keeps the state",
		res:  Delete().Emit(emitted),
		err:  errors.New("boom"),
		want: wantHTTP(500, "application/json", `{"error":"boom"}`),
	}, {
		name: "Save from a raw handler is a 500",
		res:  ReplyJSON(1).Save(),
		want: wantHTTP(500, "application/json", `{"error":"the handler returned Save, which needs a typed handler (sdk.JSON); a raw Handler stores bytes with SetState"}`),
	}, {
		name: "a reply that does not encode is a 500",
		res:  ReplyJSON(make(chan int)).SetState([]byte("x")),
		want: wantHTTP(500, "application/json", `{"error":"encoding the JSON reply: json: unsupported type: chan int"}`),
	}, {
		name: "WithStatus on an event reply is a 500",
		res:  ReplyEvent(outEvent("r-1", "t")).WithStatus(201),
		want: wantHTTP(500, "application/json", `{"error":"WithStatus(201) on a CloudEvent reply: an event reply has no status"}`),
	}, {
		name: "an invalid reply status is a 500",
		res:  Reply(42, "", nil),
		want: wantHTTP(500, "application/json", `{"error":"the reply status 42 is not an HTTP status"}`),
	}, {
		name: "an invalid emitted event is a 500",
		res:  SetState([]byte("x")).Emit(emitted, event.New()),
		want: wantHTTP(500, "application/json", `{"error":"emitted event 1: invalid CloudEvent: source: REQUIRED; type: MUST be a non-empty string"}`),
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, HandlerFunc(func(context.Context, Request) (Result, error) {
				return tc.res, tc.err
			}))
			got := ts.handle(t, testRequest("k", "test.any", nil))
			if diff := cmp.Diff(tc.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("response (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHandleLogsFailures(t *testing.T) {
	tests := []struct {
		name    string
		handler HandlerFunc
		wantMsg string
		wantLog string
	}{{
		name:    "plain error",
		handler: func(context.Context, Request) (Result, error) { return Result{}, errors.New("store unreachable") },
		wantMsg: "store unreachable",
		wantLog: "kstate function: handler failed; replying 500 and keeping the state",
	}, {
		name: "panic",
		handler: func(context.Context, Request) (Result, error) {
			var m map[string]int
			m["x"] = 1 // a nil map write panics
			return Save(), nil
		},
		wantMsg: "handler panicked: assignment to entry in nil map",
		wantLog: "kstate function: handler panicked; replying 500 and keeping the state",
	}, {
		name: "status error is not logged",
		handler: func(context.Context, Request) (Result, error) {
			return Result{}, Errorf(http.StatusNotFound, "no such item")
		},
		wantMsg: "no such item",
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, tc.handler)
			resp := ts.handle(t, testRequest("key-1", "test.any", nil))
			if resp.GetAction() != functionv1.HandleResponse_KEEP {
				t.Errorf("action = %v, want KEEP", resp.GetAction())
			}
			if got, want := string(resp.GetReplyHttp().GetBody()), fmt.Sprintf(`{"error":%q}`, tc.wantMsg); got != want {
				t.Errorf("body = %s, want %s", got, want)
			}
			var got []string
			for _, e := range ts.logs.FilterLevelExact(zapcore.ErrorLevel).All() {
				got = append(got, e.Message)
				if e.ContextMap()["key"] != "key-1" {
					t.Errorf("log %q has key %v, want key-1", e.Message, e.ContextMap()["key"])
				}
				if tc.name == "panic" && !strings.Contains(fmt.Sprint(e.ContextMap()["stack"]), "server_test.go") {
					t.Errorf("panic log has no stack through the handler: %v", e.ContextMap()["stack"])
				}
			}
			var want []string
			if tc.wantLog != "" {
				want = []string{tc.wantLog}
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("error logs (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHandleRequest(t *testing.T) {
	type seen struct {
		Req    Request
		Entity Entity
		OK     bool
	}
	got := make(chan seen, 1)
	ts := startServer(t, HandlerFunc(func(ctx context.Context, req Request) (Result, error) {
		e, ok := EntityFromContext(ctx)
		got <- seen{Req: req, Entity: e, OK: ok}
		return Result{}, nil
	}))

	in := testRequest("cart-7", "kstate.http.post", []byte(`{"item":"x"}`))
	in.Event.DataContentType = "application/json"
	in.State = []byte("old")
	in.Exists = true
	in.Version = 41
	in.Http = &functionv1.HttpRequest{
		Method:   "POST",
		Path:     "/carts/cart-7",
		RawQuery: "a=1&b=2",
		Headers:  map[string]string{"x-trace": "abc", "Accept": "a/b, c/d"},
	}
	ts.handle(t, in)
	s := <-got

	want := seen{
		Req: Request{
			Key: "cart-7", State: []byte("old"), Exists: true, Version: 41,
			Event: Event{HTTP: &HTTPRequest{
				Method: "POST", Path: "/carts/cart-7", RawQuery: "a=1&b=2",
				Header: http.Header{"X-Trace": {"abc"}, "Accept": {"a/b, c/d"}},
			}},
		},
		Entity: Entity{Key: "cart-7", Exists: true, Version: 41},
		OK:     true,
	}
	// The event itself is checked through its attributes.
	if diff := cmp.Diff(want, s, cmp.FilterPath(func(p cmp.Path) bool {
		return p.String() == "Req.Event.Event"
	}, cmp.Ignore())); diff != "" {
		t.Errorf("request (-want +got):\n%s", diff)
	}
	wantAttrs := map[string]string{
		"id": "ev-1", "source": "/test", "specversion": "1.0", "type": "kstate.http.post",
		"datacontenttype": "application/json", "data": `{"item":"x"}`,
	}
	if diff := cmp.Diff(wantAttrs, attrs(t, s.Req.Event.Event)); diff != "" {
		t.Errorf("event (-want +got):\n%s", diff)
	}
}

func TestHandleStateOfMissingEntityIsNil(t *testing.T) {
	got := make(chan Request, 1)
	ts := startServer(t, HandlerFunc(func(_ context.Context, req Request) (Result, error) {
		got <- req
		return Result{}, nil
	}))
	in := testRequest("k", "t", nil)
	in.State = []byte("left over") // must not leak through when exists is false
	ts.handle(t, in)
	if req := <-got; req.State != nil || req.Exists || req.Event.HTTP != nil {
		t.Errorf("request = {State: %q, Exists: %v, HTTP: %v}, want {nil, false, nil}", req.State, req.Exists, req.Event.HTTP)
	}
}

func TestHandleInvalidRequest(t *testing.T) {
	tests := []struct {
		name    string
		req     *functionv1.HandleRequest
		wantMsg string
	}{{
		name:    "no event",
		req:     &functionv1.HandleRequest{Key: "k"},
		wantMsg: "the request has no event",
	}, {
		name:    "event without type",
		req:     testRequest("k", "", nil),
		wantMsg: "the request's event: invalid CloudEvent: type: MUST be a non-empty string",
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			called := false
			ts := startServer(t, HandlerFunc(func(context.Context, Request) (Result, error) {
				called = true
				return Result{}, nil
			}))
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			_, err := ts.client.Handle(ctx, tc.req, grpc.WaitForReady(true))
			if got := status.Code(err); got != codes.InvalidArgument {
				t.Fatalf("code = %v (%v), want InvalidArgument", got, err)
			}
			if got := status.Convert(err).Message(); got != tc.wantMsg {
				t.Errorf("message = %q, want %q", got, tc.wantMsg)
			}
			if called {
				t.Error("the handler was called")
			}
		})
	}
}

// The agent's cancellation cannot be seen from a client (its own context
// fails first), so the server method is called directly.
func TestHandleCancelledCall(t *testing.T) {
	s := &functionServer{log: zap.NewNop().Sugar(), h: HandlerFunc(func(ctx context.Context, _ Request) (Result, error) {
		<-ctx.Done()
		return Result{}, fmt.Errorf("waiting for the lock: %w", ctx.Err())
	})}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.Handle(ctx, testRequest("k", "t", nil))
	if got := status.Code(err); got != codes.Canceled {
		t.Errorf("code = %v (%v), want Canceled", got, err)
	}
}

func TestDerivedIDs(t *testing.T) {
	noID := func(typ string) event.Event { return outEvent("", typ) }
	h := HandlerFunc(func(_ context.Context, req Request) (Result, error) {
		return ReplyEvent(noID("reply")).Emit(noID("a"), noID("b")), nil
	})
	ts := startServer(t, h)
	ids := func(source, id string) []string {
		req := testRequest("k", "t", nil)
		req.Event.Source, req.Event.Id = source, id
		resp := ts.handle(t, req)
		out := []string{resp.GetReplyEvent().GetId()}
		for _, e := range resp.GetEmit() {
			out = append(out, e.GetId())
		}
		return out
	}

	first := ids("/s", "1")
	if diff := cmp.Diff(first, ids("/s", "1")); diff != "" {
		t.Errorf("the same input gave other IDs (-first +second):\n%s", diff)
	}
	seen := map[string]bool{}
	for _, set := range [][]string{first, ids("/s", "2"), ids("/other", "1")} {
		for _, id := range set {
			if id == "" || seen[id] {
				t.Errorf("ID %q is empty or repeated across roles or inputs: %v", id, set)
			}
			seen[id] = true
		}
	}
}

func TestDerivedIDDoesNotChangeTheHandlersEvent(t *testing.T) {
	e := outEvent("", "t")
	in := event.New()
	in.SetID("1")
	in.SetSource("/s")
	if _, err := outputEvent(in, e, "emit-0"); err != nil {
		t.Fatalf("outputEvent: %v", err)
	}
	if e.ID() != "" {
		t.Errorf("the handler's event got ID %q", e.ID())
	}
}

func TestJSON(t *testing.T) {
	type cart struct {
		Items []string `json:"items"`
	}
	add := JSON(func(_ context.Context, key string, c *cart, ev Event) (Result, error) {
		switch ev.Type() {
		case "cart.add":
			c.Items = append(c.Items, string(ev.Data()))
			return ReplyJSON(c).Save(), nil
		case "cart.peek":
			// Changed but not saved: must not be stored.
			c.Items = nil
			return Result{}, nil
		case "cart.clear":
			return Delete(), nil
		case "cart.key":
			return ReplyJSON(key), nil
		}
		return Result{}, Errorf(http.StatusBadRequest, "unknown type %q", ev.Type())
	})
	tests := []struct {
		name   string
		exists bool
		state  string
		typ    string
		data   string
		want   *functionv1.HandleResponse
	}{{
		name: "missing entity starts from the zero value",
		typ:  "cart.add", data: "apple",
		want: &functionv1.HandleResponse{
			Action: functionv1.HandleResponse_SET, State: []byte(`{"items":["apple"]}`),
			Reply: wantHTTP(200, "application/json", `{"items":["apple"]}`).Reply,
		},
	}, {
		name:   "existing entity is decoded",
		exists: true, state: `{"items":["apple"]}`,
		typ: "cart.add", data: "pear",
		want: &functionv1.HandleResponse{
			Action: functionv1.HandleResponse_SET, State: []byte(`{"items":["apple","pear"]}`),
			Reply: wantHTTP(200, "application/json", `{"items":["apple","pear"]}`).Reply,
		},
	}, {
		name:   "a change without Save is not stored",
		exists: true, state: `{"items":["apple"]}`,
		typ:  "cart.peek",
		want: &functionv1.HandleResponse{Action: functionv1.HandleResponse_KEEP},
	}, {
		name:   "delete",
		exists: true, state: `{"items":["apple"]}`,
		typ:  "cart.clear",
		want: &functionv1.HandleResponse{Action: functionv1.HandleResponse_DELETE},
	}, {
		name: "the key is passed",
		typ:  "cart.key",
		want: wantHTTP(200, "application/json", `"c1"`),
	}, {
		name:   "a stored state that does not decode is a 500",
		exists: true, state: `{"items":"apple"}`,
		typ:  "cart.add",
		want: wantHTTP(500, "application/json", `{"error":"decoding the stored state of key \"c1\" as sdk.cart: json: cannot unmarshal string into Go struct field cart.items of type []string"}`),
	}, {
		name: "status error",
		typ:  "cart.fly",
		want: wantHTTP(400, "application/json", `{"error":"unknown type \"cart.fly\""}`),
	}}
	ts := startServer(t, add)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := testRequest("c1", tc.typ, []byte(tc.data))
			req.Exists = tc.exists
			if tc.exists {
				req.State = []byte(tc.state)
			}
			got := ts.handle(t, req)
			if diff := cmp.Diff(tc.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("response (-want +got):\n%s", diff)
			}
		})
	}
}

func TestResultMethodsDoNotShareState(t *testing.T) {
	base := Emit(outEvent("1", "t")).WithHeader("A", "1")
	a := base.Emit(outEvent("2", "t")).WithHeader("B", "2")
	b := base.Emit(outEvent("3", "t")).WithHeader("C", "3")
	ids := func(r Result) []string {
		var out []string
		for _, e := range r.emit {
			out = append(out, e.ID())
		}
		return out
	}
	if diff := cmp.Diff([]string{"1"}, ids(base)); diff != "" {
		t.Errorf("base emits (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"1", "2"}, ids(a)); diff != "" {
		t.Errorf("a emits (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"1", "3"}, ids(b)); diff != "" {
		t.Errorf("b emits (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(http.Header{"A": {"1"}}, base.header); diff != "" {
		t.Errorf("base headers (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(http.Header{"A": {"1"}, "C": {"3"}}, b.header); diff != "" {
		t.Errorf("b headers (-want +got):\n%s", diff)
	}
}

func TestStatusError(t *testing.T) {
	cause := errors.New("disk full")
	err := fmt.Errorf("saving: %w", Errorf(http.StatusServiceUnavailable, "try later: %w", cause))
	var se *StatusError
	if !errors.As(err, &se) {
		t.Fatalf("errors.As(%v, *StatusError) = false", err)
	}
	if !errors.Is(err, cause) {
		t.Errorf("errors.Is(%v, cause) = false, want the cause reachable", err)
	}
	if got, want := se.Message, "try later: disk full"; got != want {
		t.Errorf("Message = %q, want %q", got, want)
	}
	if got, want := err.Error(), "saving: 503 Service Unavailable: try later: disk full"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}
