package fntest

import (
	"context"
	"net"
	"testing"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kstate-dev/kstate/pkg/sdk"
	functionv1 "github.com/kstate-dev/kstate/proto/function/v1"
)

// CallTimeout bounds every call a test makes.
const CallTimeout = 10 * time.Second

// Serve serves h with the SDK on a loopback TCP port, as the agent would
// reach it, and returns a client for it. The server stops when the test ends,
// and a failure to serve fails the test.
func Serve(t testing.TB, h sdk.Handler) functionv1.FunctionClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- sdk.ServeListener(ctx, lis, h, sdk.WithLogger(zap.NewNop().Sugar()), sdk.WithDrainTimeout(0))
	}()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeListener: %v", err)
		}
	})
	return functionv1.NewFunctionClient(conn)
}

// Event returns a CloudEvent of this type with JSON data (none when data is
// empty), as a broker would deliver it.
func Event(id, typ, data string) *functionv1.CloudEvent {
	ev := &functionv1.CloudEvent{Id: id, Source: "/test", SpecVersion: "1.0", Type: typ}
	if data != "" {
		ev.DataContentType, ev.Data = "application/json", []byte(data)
	}
	return ev
}

// Input is what one call carries besides the key and state: the event and,
// for a plain HTTP request, the request it was made from.
type Input struct {
	Event *functionv1.CloudEvent
	HTTP  *functionv1.HttpRequest
}

// CE is an Input that arrived as a CloudEvent.
func CE(id, typ, data string) Input { return Input{Event: Event(id, typ, data)} }

// HTTP is an Input made by the agent from a plain HTTP request with this
// method and path and no body.
func HTTP(method, path string) Input {
	return Input{
		Event: Event("http-1", sdk.HTTPType(method), ""),
		HTTP:  &functionv1.HttpRequest{Method: method, Path: path},
	}
}

// Agent plays the kstate agent for one function: it keeps every key's state
// and version, passes them to each call, and applies what the call returns.
type Agent struct {
	c        functionv1.FunctionClient
	entities map[string]entity
}

type entity struct {
	state   []byte
	version uint64
}

// NewAgent returns an Agent with no entities that calls c.
func NewAgent(c functionv1.FunctionClient) *Agent {
	return &Agent{c: c, entities: map[string]entity{}}
}

// Send calls the function with in for key and the key's current state, and
// applies the response's state action. A failed gRPC call fails the test.
func (a *Agent) Send(t testing.TB, key string, in Input) *functionv1.HandleResponse {
	t.Helper()
	req := &functionv1.HandleRequest{Key: key, Event: in.Event, Http: in.HTTP}
	if e, ok := a.entities[key]; ok {
		req.State, req.Exists, req.Version = e.state, true, e.version
	}
	ctx, cancel := context.WithTimeout(context.Background(), CallTimeout)
	defer cancel()
	resp, err := a.c.Handle(ctx, req, grpc.WaitForReady(true))
	if err != nil {
		t.Fatalf("Handle(key %q, event %s of type %s): %v", key, in.Event.GetId(), in.Event.GetType(), err)
	}
	switch resp.GetAction() {
	case functionv1.HandleResponse_SET:
		a.entities[key] = entity{state: resp.GetState(), version: req.Version + 1}
	case functionv1.HandleResponse_DELETE:
		delete(a.entities, key)
	}
	return resp
}

// Put stores state for key, as if an earlier call had returned it.
func (a *Agent) Put(key string, state []byte) {
	a.entities[key] = entity{state: state, version: a.entities[key].version + 1}
}

// State returns key's stored state, and false when the entity does not
// exist.
func (a *Agent) State(key string) ([]byte, bool) {
	e, ok := a.entities[key]
	return e.state, ok
}

// Reply is the part of a response a test usually checks, in a form cmp.Diff
// prints readably.
type Reply struct {
	Action string
	Status int32
	Body   string
}

// ReplyOf summarizes resp; Body is the HTTP reply body as a string.
func ReplyOf(resp *functionv1.HandleResponse) Reply {
	return Reply{
		Action: resp.GetAction().String(),
		Status: resp.GetReplyHttp().GetStatus(),
		Body:   string(resp.GetReplyHttp().GetBody()),
	}
}
