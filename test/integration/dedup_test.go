package integration

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/go-cmp/cmp"

	"github.com/kstate-dev/kstate/internal/proctest"
	"github.com/kstate-dev/kstate/internal/redistest"
)

// capture is an http.RoundTripper that keeps the last response it carried
// (status, headers, body), so a test can see what the agent answered to an
// event the CloudEvents SDK sent.
type capture struct {
	mu   sync.Mutex
	last proctest.Answer
}

func (c *capture) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := proctest.HTTPClient.Transport.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	c.mu.Lock()
	c.last = proctest.Answer{Status: resp.StatusCode, Header: resp.Header.Clone(), Body: body}
	c.mu.Unlock()
	return resp, nil
}

// sendEvent sends ev to url with the CloudEvents SDK's HTTP client, in
// structured or binary mode, and returns the agent's answer.
func sendEvent(t *testing.T, url string, ev cloudevents.Event, structured bool) proctest.Answer {
	t.Helper()
	rt := &capture{}
	c, err := cloudevents.NewClientHTTP(cehttp.WithTarget(url), cehttp.WithRoundTripper(rt))
	if err != nil {
		t.Fatalf("CloudEvents client: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if structured {
		ctx = cloudevents.WithEncodingStructured(ctx)
	} else {
		ctx = cloudevents.WithEncodingBinary(ctx)
	}
	_, res := c.Request(ctx, ev)
	if cloudevents.IsUndelivered(res) {
		t.Fatalf("sending event %s/%s: %v", ev.Source(), ev.ID(), res)
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.last
}

// reply is the part of an proctest.Answer a redelivery must repeat.
type reply struct {
	Status      int
	ContentType string
	Body        string
}

func replyOf(a proctest.Answer) reply {
	return reply{Status: a.Status, ContentType: a.Header.Get("Content-Type"), Body: string(a.Body)}
}

// A CloudEvent redelivered with the same source and id, in binary or
// structured mode, is applied once: the redelivery gets the first reply
// again with Kstate-Duplicate: true. The dedup window is stored with the
// state, so this holds across an agent restart too.
func TestDuplicateCloudEventAppliedOnce(t *testing.T) {
	storeURL := redistest.Shared(t)
	space := redistest.UniqueSpace(t)
	fn := proctest.StartCounter(t)
	cfg := proctest.AgentConfig{Pod: "dedup-a", Space: space, StoreURL: storeURL, Function: fn.Addr}
	ag := proctest.StartAgent(t, cfg)

	const key = "dedup-entity"
	event := func(source, id string, by int) cloudevents.Event {
		ev := cloudevents.NewEvent()
		ev.SetSource(source)
		ev.SetID(id)
		ev.SetType("counter.add")
		ev.SetExtension("partitionkey", key)
		if err := ev.SetData(cloudevents.ApplicationJSON, map[string]int{"by": by}); err != nil {
			t.Fatal(err)
		}
		return ev
	}
	e1 := event("/integration/dedup", "ev-1", 5)
	e2 := event("/integration/dedup", "ev-2", 7)
	e1OtherSource := event("/integration/elsewhere", "ev-1", 2)

	firsts := map[string]reply{} // first reply per source/id
	steps := []struct {
		name       string
		ev         cloudevents.Event
		structured bool
		restart    bool // SIGTERM the agent and start a new one first
		wantDup    bool
		wantCount  int64 // the count read back after the step
	}{
		{name: "e1 binary", ev: e1, wantCount: 5},
		{name: "e1 binary again", ev: e1, wantDup: true, wantCount: 5},
		{name: "e1 structured", ev: e1, structured: true, wantDup: true, wantCount: 5},
		{name: "e2 structured", ev: e2, structured: true, wantCount: 12},
		{name: "e2 structured again", ev: e2, structured: true, wantDup: true, wantCount: 12},
		{name: "e2 binary", ev: e2, wantDup: true, wantCount: 12},
		{name: "same id, other source is another event", ev: e1OtherSource, wantCount: 14},
		{name: "e1 binary after a restart", ev: e1, restart: true, wantDup: true, wantCount: 14},
		{name: "e2 structured after the restart", ev: e2, structured: true, wantDup: true, wantCount: 14},
		{name: "e1 from the other source after the restart", ev: e1OtherSource, wantDup: true, wantCount: 14},
	}
	for _, s := range steps {
		if s.restart {
			if code, _ := ag.Terminate(proctest.StopTimeout); code != 0 {
				t.Fatalf("%s: agent exited with status %d after SIGTERM, want 0", s.name, code)
			}
			cfg.Pod = "dedup-b"
			ag = proctest.StartAgent(t, cfg)
		}
		got := sendEvent(t, ag.URL, s.ev, s.structured)
		id := s.ev.Source() + "/" + s.ev.ID()
		if got.Status/100 != 2 {
			t.Fatalf("%s: proctest.Answer %s, want 2xx", s.name, got)
		}
		if dup := got.Header.Get("Kstate-Duplicate"); (dup == "true") != s.wantDup {
			t.Errorf("%s: Kstate-Duplicate = %q, want duplicate=%v", s.name, dup, s.wantDup)
		}
		if first, seen := firsts[id]; seen {
			if diff := cmp.Diff(first, replyOf(got)); diff != "" {
				t.Errorf("%s: the redelivery's reply differs from the first one (-first +redelivery):\n%s", s.name, diff)
			}
		} else {
			firsts[id] = replyOf(got)
		}
		if n := proctest.ReadCount(t, ag.URL, key); n != s.wantCount {
			t.Errorf("%s: count %d after the step, want %d", s.name, n, s.wantCount)
		}
	}
}
