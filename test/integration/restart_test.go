package integration

import (
	"fmt"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kstate-dev/kstate/internal/proctest"
	"github.com/kstate-dev/kstate/internal/redistest"
)

// Counts survive an agent restart: increments acknowledged by one agent
// process are what a new agent process on the same store reads back. The
// flush interval is an hour, so only the SIGTERM drain can have written
// them.
func TestCountsSurviveAgentRestart(t *testing.T) {
	storeURL := redistest.Shared(t)
	space := redistest.UniqueSpace(t)
	fn := proctest.StartCounter(t)
	cfg := proctest.AgentConfig{
		Pod: "restart-a", Space: space, StoreURL: storeURL, Function: fn.Addr,
		Env: map[string]string{"KSTATE_FLUSH_INTERVAL": "1h"},
	}
	first := proctest.StartAgent(t, cfg)

	const keys, perKey, workers = 40, 6, 4
	var acked proctest.Tally
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := w; k < keys; k += workers {
				key := fmt.Sprintf("restart-%d", k)
				for i := range perKey {
					by := int64(k%5 + i - 2) // negative, zero and positive
					ans, err := proctest.Add(first.URL, key, by)
					if err != nil {
						errs <- fmt.Errorf("POST key %q: %v", key, err)
						return
					}
					if _, err := proctest.ReplyCount(ans, key); err != nil {
						errs <- fmt.Errorf("POST key %q: %v", key, err)
						return
					}
					acked.Add(key, by)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	want := acked.Snapshot()
	if st := first.Stats(t); st.DirtyEntities != keys || st.FlushedEntities != 0 {
		t.Fatalf("before SIGTERM: %d dirty, %d flushed entities; want %d, 0 (nothing written behind yet)",
			st.DirtyEntities, st.FlushedEntities, keys)
	}

	if code, _ := first.Terminate(proctest.StopTimeout); code != 0 {
		t.Fatalf("agent exited with status %d after SIGTERM, want 0", code)
	}

	second := proctest.StartAgent(t, proctest.AgentConfig{Pod: "restart-b", Space: space, StoreURL: storeURL, Function: fn.Addr})
	got := map[string]int64{}
	for _, key := range proctest.KeysOf(want) {
		got[key] = proctest.ReadCount(t, second.URL, key)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("counts read through a new agent after a restart (-acknowledged +read):\n%s", diff)
	}
}
