package integration

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kstate-dev/kstate/internal/proctest"
	"github.com/kstate-dev/kstate/internal/redistest"
)

// Phases of TestRedisKilledAndRestartedThenWiped's load.
const (
	phaseUp int32 = iota
	phaseDown
	phaseRestarting
	phaseBack
)

// outcome counts the answers of one phase.
type outcome struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	firstFail  string
}

func (o *outcome) fail(what string) {
	if o.failed.Add(1) == 1 {
		o.mu.Lock()
		o.firstFail = what
		o.mu.Unlock()
	}
}

// Redis is SIGKILLed (append-only file, appendfsync always) in the middle of
// a run and started again. Warm keys keep being served while it is down;
// once it is back and the agent flushed, every acknowledged increment is in
// Redis. Then Redis comes back empty (Wipe): the agent must notice, say so
// loudly, turn unready and refuse requests with 503 instead of starting
// afresh.
func TestRedisKilledAndRestartedThenWiped(t *testing.T) {
	srv := redistest.Start(t)
	space := redistest.UniqueSpace(t)
	fn := proctest.StartCounter(t)
	ag := proctest.StartAgent(t, proctest.AgentConfig{
		Pod: "outage-a", Space: space, StoreURL: srv.URL(), Function: fn.Addr,
		Env: map[string]string{
			"KSTATE_FLUSH_INTERVAL": "50ms",
			"KSTATE_FLUSH_TIMEOUT":  "300ms",
			"KSTATE_LEASE_TTL":      "1s", // renewals (and store-reset checks) every 333ms
			"KSTATE_SLOTS":          "16",
		},
	})

	keys := make([]string, 8)
	var acked proctest.Tally
	for i := range keys {
		keys[i] = fmt.Sprintf("warm-%d", i)
		// Warm: the entity is in the agent's memory and its slot is held.
		ans, err := proctest.Add(ag.URL, keys[i], 1)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := proctest.ReplyCount(ans, keys[i]); err != nil {
			t.Fatalf("warming %q: %v", keys[i], err)
		}
		acked.Add(keys[i], 1)
	}

	var phase atomic.Int32
	var outcomes [phaseBack + 1]outcome
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := keys[i%len(keys)]
				before := phase.Load()
				ans, err := proctest.Add(ag.URL, key, 1)
				after := phase.Load()
				// An proctest.Answer counts for a phase only if the whole request
				// happened in it.
				o := &outcomes[after]
				if before != after {
					o = &outcome{}
				}
				switch {
				case err != nil:
					o.fail(err.Error())
				case ans.Status/100 == 2:
					acked.Add(key, 1)
					o.ok.Add(1)
				default:
					o.fail(ans.String())
				}
			}
		}()
	}
	stopLoad := func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}
	defer stopLoad()

	proctest.WaitFor(t, 10*time.Second, "answers before the outage", func() bool { return outcomes[phaseUp].ok.Load() >= 50 })
	srv.Kill()
	phase.Store(phaseDown)
	const servedWhileDown = 300
	proctest.WaitFor(t, 20*time.Second, fmt.Sprintf("%d answers while Redis is down", servedWhileDown), func() bool {
		return outcomes[phaseDown].ok.Load()+outcomes[phaseDown].failed.Load() >= servedWhileDown
	})
	phase.Store(phaseRestarting)
	srv.Restart()
	phase.Store(phaseBack)
	proctest.WaitFor(t, 20*time.Second, "answers after Redis is back", func() bool { return outcomes[phaseBack].ok.Load() >= 100 })
	stopLoad()

	down := &outcomes[phaseDown]
	t.Logf("answers: %d before the outage; %d served and %d failed while Redis was down; %d served after",
		outcomes[phaseUp].ok.Load(), down.ok.Load(), down.failed.Load(), outcomes[phaseBack].ok.Load())
	if down.failed.Load() != 0 {
		t.Errorf("while Redis was down, %d requests on warm keys failed (first: %s); want all served from memory",
			down.failed.Load(), down.firstFail)
	}
	if n := outcomes[phaseUp].failed.Load() + outcomes[phaseBack].failed.Load(); n != 0 {
		t.Errorf("%d requests failed while Redis was up (first before: %q, after: %q)",
			n, outcomes[phaseUp].firstFail, outcomes[phaseBack].firstFail)
	}

	ag.Flush(t)
	want := acked.Snapshot()
	got := proctest.StoredCounts(t, proctest.OpenStore(t, srv.URL()), space, 16, keys)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("counts in Redis after the outage and a flush (-acknowledged +stored):\n%s", diff)
	}
	if st := ag.Stats(t); st.RejectedWrites != 0 || st.DirtyEntities != 0 {
		t.Errorf("after the flush: %d rejected writes, %d dirty entities; want 0, 0", st.RejectedWrites, st.DirtyEntities)
	}

	// Redis comes back empty.
	srv.Wipe()
	var ready string
	proctest.WaitFor(t, 10*time.Second, "readiness to turn false after the store was wiped", func() bool {
		status, body, err := ag.Readyz()
		ready = fmt.Sprintf("%d %q %v", status, body, err)
		return err == nil && status == http.StatusServiceUnavailable
	})
	if !strings.Contains(ready, "reset") {
		t.Errorf("readyz after the wipe: %s; want it to say the store was reset", ready)
	}
	ans, err := proctest.Add(ag.URL, keys[0], 1)
	if err != nil {
		t.Fatal(err)
	}
	if msg := proctest.ErrorMessage(ans.Body); ans.Status != http.StatusServiceUnavailable || !strings.Contains(msg, "reset") {
		t.Errorf("request after the wipe: %s; want 503 whose error says the store was reset", ans)
	}
	if lines := proctest.GrepLines(ag.Stderr.String(), "STATE STORE RESET DETECTED"); len(lines) == 0 {
		t.Errorf("stderr has no \"STATE STORE RESET DETECTED\" line")
	}
	if st := ag.Stats(t); st.Ready {
		t.Errorf("admin Stats says ready after the store was wiped")
	}
}
