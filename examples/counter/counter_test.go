package counter_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/kstate-dev/kstate/examples/counter"
	"github.com/kstate-dev/kstate/examples/internal/fntest"
	functionv1 "github.com/kstate-dev/kstate/proto/function/v1"
)

const testTimeout = 10 * time.Second

// client serves the counter with the SDK on a loopback TCP port, as the
// agent would reach it, and returns a client for it.
func client(t *testing.T) functionv1.FunctionClient {
	t.Helper()
	return fntest.Serve(t, counter.Handler())
}

type input struct {
	typ         string
	contentType string
	data        string
	method      string // set for a plain HTTP request
}

func (in input) request(key string, state string) *functionv1.HandleRequest {
	req := &functionv1.HandleRequest{
		Key: key,
		Event: &functionv1.CloudEvent{
			Id: "ev-1", Source: "/test", SpecVersion: "1.0",
			Type: in.typ, DataContentType: in.contentType, Data: []byte(in.data),
		},
	}
	if state != "" {
		req.State, req.Exists, req.Version = []byte(state), true, 3
	}
	if in.method != "" {
		req.Http = &functionv1.HttpRequest{Method: in.method, Path: "/counters/" + key}
	}
	return req
}

func reply(status int32, body string) *functionv1.HandleResponse_ReplyHttp {
	return &functionv1.HandleResponse_ReplyHttp{ReplyHttp: &functionv1.HttpReply{
		Status: status, ContentType: "application/json", Body: []byte(body),
	}}
}

func set(state string, r *functionv1.HandleResponse_ReplyHttp) *functionv1.HandleResponse {
	return &functionv1.HandleResponse{Action: functionv1.HandleResponse_SET, State: []byte(state), Reply: r}
}

func keep(r *functionv1.HandleResponse_ReplyHttp) *functionv1.HandleResponse {
	return &functionv1.HandleResponse{Action: functionv1.HandleResponse_KEEP, Reply: r}
}

func TestCounter(t *testing.T) {
	post := func(body string) input {
		return input{typ: "kstate.http.post", method: "POST", contentType: "application/json", data: body}
	}
	tests := []struct {
		name  string
		state string // empty: the entity does not exist
		in    input
		want  *functionv1.HandleResponse
	}{{
		name: "POST without a body counts 1 from zero",
		in:   input{typ: "kstate.http.post", method: "POST"},
		want: set(`{"count":1}`, reply(200, `{"key":"k","count":1}`)),
	}, {
		name:  "POST by n",
		state: `{"count":2}`,
		in:    post(`{"by": 5}`),
		want:  set(`{"count":7}`, reply(200, `{"key":"k","count":7}`)),
	}, {
		name:  "any CloudEvent counts, negative by too",
		state: `{"count":2}`,
		in:    input{typ: "com.example.visit", contentType: "application/json", data: `{"by":-3}`},
		want:  set(`{"count":-1}`, reply(200, `{"key":"k","count":-1}`)),
	}, {
		name:  "by null counts 1",
		state: `{"count":2}`,
		in:    post(`{"by": null}`),
		want:  set(`{"count":3}`, reply(200, `{"key":"k","count":3}`)),
	}, {
		name:  "counter.get reads",
		state: `{"count":7}`,
		in:    input{typ: counter.TypeGet, contentType: "application/json", data: `{"by": 100}`},
		want:  keep(reply(200, `{"key":"k","count":7}`)),
	}, {
		name: "HTTP GET of a missing key reads 0",
		in:   input{typ: "kstate.http.get", method: "GET"},
		want: keep(reply(200, `{"key":"k","count":0}`)),
	}, {
		name:  "HTTP HEAD reads",
		state: `{"count":7}`,
		in:    input{typ: "kstate.http.head", method: "HEAD"},
		want:  keep(reply(200, `{"key":"k","count":7}`)),
	}, {
		name:  "by is a fraction",
		state: `{"count":7}`,
		in:    post(`{"by": 1.5}`),
		want:  keep(reply(400, `{"error":"data field \"by\" must be an integer, got number 1.5"}`)),
	}, {
		name:  "by is a string",
		state: `{"count":7}`,
		in:    post(`{"by": "2"}`),
		want:  keep(reply(400, `{"error":"data field \"by\" must be an integer, got string"}`)),
	}, {
		name:  "data is not JSON",
		state: `{"count":7}`,
		in:    input{typ: "kstate.http.post", method: "POST", contentType: "text/plain", data: "two"},
		want:  keep(reply(400, `{"error":"data is not valid JSON: invalid character 'w' in literal true (expecting 'r')"}`)),
	}, {
		name:  "data is not an object",
		state: `{"count":7}`,
		in:    post(`[1]`),
		want:  keep(reply(400, `{"error":"data must be a JSON object, got array"}`)),
	}, {
		name:  "overflow",
		state: `{"count":9223372036854775800}`,
		in:    post(`{"by": 8}`),
		want:  keep(reply(400, `{"error":"data field \"by\": adding 8 to 9223372036854775800 overflows the count"}`)),
	}, {
		name:  "underflow",
		state: `{"count":-9223372036854775800}`,
		in:    post(`{"by": -9}`),
		want:  keep(reply(400, `{"error":"data field \"by\": adding -9 to -9223372036854775800 overflows the count"}`)),
	}, {
		name:  "up to the limit",
		state: `{"count":9223372036854775800}`,
		in:    post(`{"by": 7}`),
		want:  set(`{"count":9223372036854775807}`, reply(200, `{"key":"k","count":9223372036854775807}`)),
	}}
	c := client(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			got, err := c.Handle(ctx, tc.in.request("k", tc.state), grpc.WaitForReady(true))
			if err != nil {
				t.Fatalf("Handle: %v", err)
			}
			if diff := cmp.Diff(tc.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("response (-want +got):\n%s", diff)
			}
		})
	}
}

// TestCounterSequence plays the agent: it keeps the state the function
// returns and passes it to the next call, per key.
func TestCounterSequence(t *testing.T) {
	c := client(t)
	states := map[string]string{}
	steps := []struct {
		key  string
		in   input
		want string // reply body
	}{
		{"a", input{typ: "kstate.http.post", method: "POST"}, `{"key":"a","count":1}`},
		{"a", input{typ: "counter.add", contentType: "application/json", data: `{"by":10}`}, `{"key":"a","count":11}`},
		{"b", input{typ: "kstate.http.post", method: "POST", data: `{"by":2}`}, `{"key":"b","count":2}`},
		{"a", input{typ: "kstate.http.post", method: "POST", data: `{"by":"x"}`}, `{"error":"data field \"by\" must be an integer, got string"}`},
		{"a", input{typ: counter.TypeGet}, `{"key":"a","count":11}`},
		{"b", input{typ: "kstate.http.get", method: "GET"}, `{"key":"b","count":2}`},
	}
	for i, s := range steps {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		resp, err := c.Handle(ctx, s.in.request(s.key, states[s.key]), grpc.WaitForReady(true))
		cancel()
		if err != nil {
			t.Fatalf("step %d: Handle: %v", i, err)
		}
		if got := string(resp.GetReplyHttp().GetBody()); got != s.want {
			t.Errorf("step %d: reply = %s, want %s", i, got, s.want)
		}
		switch resp.GetAction() {
		case functionv1.HandleResponse_SET:
			states[s.key] = string(resp.GetState())
		case functionv1.HandleResponse_DELETE:
			delete(states, s.key)
		}
	}
	if diff := cmp.Diff(map[string]string{"a": `{"count":11}`, "b": `{"count":2}`}, states); diff != "" {
		t.Errorf("final states (-want +got):\n%s", diff)
	}
}
