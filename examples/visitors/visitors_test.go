package visitors_test

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kstate-dev/kstate/examples/internal/fntest"
	"github.com/kstate-dev/kstate/examples/visitors"
)

func view(visitor string) fntest.Input {
	return fntest.CE("view-"+visitor, visitors.TypeViewed, fmt.Sprintf(`{"visitor":%q}`, visitor))
}

func count(n int) string { return fmt.Sprintf(`{"page":"home","unique_visitors":%d}`, n) }

func TestVisitors(t *testing.T) {
	refused := func(msg string) fntest.Reply {
		b, _ := json.Marshal(map[string]string{"error": msg})
		return fntest.Reply{Action: "KEEP", Status: 400, Body: string(b)}
	}
	tests := []struct {
		name  string
		setup []fntest.Input
		in    fntest.Input
		want  fntest.Reply
	}{{
		name: "GET of a page nobody viewed",
		in:   fntest.HTTP("GET", "/pages/home"),
		want: fntest.Reply{Action: "KEEP", Status: 200, Body: count(0)},
	}, {
		name: "first view",
		in:   view("ann"),
		want: fntest.Reply{Action: "SET", Status: 200, Body: count(1)},
	}, {
		name:  "a new visitor",
		setup: []fntest.Input{view("ann")},
		in:    view("bob"),
		want:  fntest.Reply{Action: "SET", Status: 200, Body: count(2)},
	}, {
		name:  "a visitor seen before changes nothing and writes nothing",
		setup: []fntest.Input{view("ann"), view("bob")},
		in:    view("ann"),
		want:  fntest.Reply{Action: "KEEP", Status: 200, Body: count(2)},
	}, {
		name:  "Count reads",
		setup: []fntest.Input{view("ann"), view("bob")},
		in:    fntest.CE("c", visitors.TypeCount, ""),
		want:  fntest.Reply{Action: "KEEP", Status: 200, Body: count(2)},
	}, {
		name:  "HEAD reads",
		setup: []fntest.Input{view("ann")},
		in:    fntest.HTTP("HEAD", "/pages/home"),
		want:  fntest.Reply{Action: "KEEP", Status: 200, Body: count(1)},
	}, {
		name: "missing visitor",
		in:   fntest.CE("e", visitors.TypeViewed, `{"user":"ann"}`),
		want: refused(`data field "visitor" is required and must not be blank`),
	}, {
		name: "no data",
		in:   fntest.CE("e", visitors.TypeViewed, ""),
		want: refused(`data field "visitor" is required and must not be blank`),
	}, {
		name: "blank visitor",
		in:   view(" "),
		want: refused(`data field "visitor" is required and must not be blank`),
	}, {
		name: "visitor is a number",
		in:   fntest.CE("e", visitors.TypeViewed, `{"visitor":7}`),
		want: refused(`data field "visitor" must be a string, got number`),
	}, {
		name: "unknown type",
		in:   fntest.CE("e", "com.example.page.Visited", `{"visitor":"ann"}`),
		want: refused(`unsupported event type "com.example.page.Visited": expected com.example.page.Viewed, or a read (com.example.page.Count, HTTP GET)`),
	}}
	c := fntest.Serve(t, visitors.Handler())
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := fntest.NewAgent(c)
			for i, in := range tc.setup {
				if r := fntest.ReplyOf(a.Send(t, "home", in)); r.Status != 200 {
					t.Fatalf("setup step %d: %+v", i, r)
				}
			}
			if diff := cmp.Diff(tc.want, fntest.ReplyOf(a.Send(t, "home", tc.in))); diff != "" {
				t.Errorf("reply (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSmallCounts sends 100 distinct visitors (each twice) through the gRPC
// server: the count must be within 1 of the exact count after every one.
// The state stays small: 4 bytes per visitor.
func TestSmallCounts(t *testing.T) {
	a := fntest.NewAgent(fntest.Serve(t, visitors.Handler()))
	maxOff := 0
	for i := 1; i <= 100; i++ {
		for range 2 {
			var got visitors.Reply
			body := a.Send(t, "home", view(fmt.Sprint("user-", i))).GetReplyHttp().GetBody()
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("visitor %d: reply %s: %v", i, body, err)
			}
			off := int(got.UniqueVisitors) - i
			maxOff = max(maxOff, off, -off)
			if off < -1 || off > 1 {
				t.Errorf("after %d distinct visitors the count is %d", i, got.UniqueVisitors)
			}
		}
	}
	t.Logf("largest difference from the exact count: %d", maxOff)
	if state, _ := a.State("home"); len(state) != 2+4*100 {
		t.Errorf("the state of 100 visitors is %d bytes, want %d", len(state), 2+4*100)
	}
}

// TestPagesAreSeparate checks that pages count on their own.
func TestPagesAreSeparate(t *testing.T) {
	a := fntest.NewAgent(fntest.Serve(t, visitors.Handler()))
	for i := range 30 {
		a.Send(t, "home", view(fmt.Sprint("u", i)))
		if i%3 == 0 {
			a.Send(t, "about", view(fmt.Sprint("u", i)))
		}
	}
	got := map[string]string{}
	for _, page := range []string{"home", "about", "blog"} {
		got[page] = fntest.ReplyOf(a.Send(t, page, fntest.CE("c", visitors.TypeCount, ""))).Body
	}
	want := map[string]string{
		"home":  `{"page":"home","unique_visitors":30}`,
		"about": `{"page":"about","unique_visitors":10}`,
		"blog":  `{"page":"blog","unique_visitors":0}`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}
}

// TestCorruptState checks that a state this function did not write fails
// the call (500, state kept) instead of counting from garbage.
func TestCorruptState(t *testing.T) {
	a := fntest.NewAgent(fntest.Serve(t, visitors.Handler()))
	a.Put("home", []byte(`{"count":3}`))
	want := fntest.Reply{Action: "KEEP", Status: 500,
		Body: `{"error":"decoding the stored sketch of page \"home\": not a sketch of this example: precision 34, want 14"}`}
	if diff := cmp.Diff(want, fntest.ReplyOf(a.Send(t, "home", view("ann")))); diff != "" {
		t.Errorf("reply (-want +got):\n%s", diff)
	}
}
