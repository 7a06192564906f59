package integration

import (
	"fmt"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kstate-dev/kstate/internal/proctest"
	"github.com/kstate-dev/kstate/internal/redistest"
)

// With KSTATE_DURABILITY=sync, a 2xx reply is sent only after its update
// landed: each reply's count is already in Redis when the reply arrives
// (the flush interval is an hour, so only the sync path can have written
// it), and a SIGKILL of the agent right after the last reply loses nothing.
func TestSyncDurabilityEveryReplyIsAlreadyInRedis(t *testing.T) {
	const slots = 16
	storeURL := redistest.Shared(t)
	space := redistest.UniqueSpace(t)
	fn := proctest.StartCounter(t)
	ag := proctest.StartAgent(t, proctest.AgentConfig{
		Pod: "sync-a", Space: space, StoreURL: storeURL, Function: fn.Addr,
		Env: map[string]string{
			"KSTATE_DURABILITY":     "sync",
			"KSTATE_FLUSH_INTERVAL": "1h",
			"KSTATE_SLOTS":          fmt.Sprint(slots),
		},
	})
	store := proctest.OpenStore(t, storeURL)
	keys := []string{"sync-0", "sync-1", "sync-2", "sync-3", "sync-4"}
	var acked proctest.Tally

	// One at a time: Redis holds exactly the reply's count.
	for i := range 40 {
		key, by := keys[i%len(keys)], int64(i%4+1)
		ans, err := proctest.Add(ag.URL, key, by)
		if err != nil {
			t.Fatalf("POST %d, key %q: %v", i, key, err)
		}
		n, err := proctest.ReplyCount(ans, key)
		if err != nil {
			t.Fatalf("POST %d: %v", i, err)
		}
		acked.Add(key, by)
		if stored := proctest.StoredCounts(t, store, space, slots, []string{key})[key]; stored != n {
			t.Fatalf("POST %d, key %q: replied count %d, but Redis holds %d when the reply arrives", i, key, n, stored)
		}
	}

	// Concurrently: Redis holds at least the reply's count (later updates
	// of the same key may have landed too; every by is positive).
	var wg sync.WaitGroup
	errs := make(chan error, len(keys))
	for w := range len(keys) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				key := keys[(w+i)%len(keys)]
				ans, err := proctest.Add(ag.URL, key, 1)
				if err != nil {
					errs <- fmt.Errorf("key %q: %v", key, err)
					return
				}
				n, err := proctest.ReplyCount(ans, key)
				if err != nil {
					errs <- err
					return
				}
				acked.Add(key, 1)
				stored, err := proctest.LoadCounts(store, space, slots, []string{key})
				if err != nil {
					errs <- err
					return
				}
				if stored[key] < n {
					errs <- fmt.Errorf("key %q: replied count %d, but Redis holds %d when the reply arrives", key, n, stored[key])
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	ag.Kill()
	want := acked.Snapshot()
	got := proctest.StoredCounts(t, store, space, slots, keys)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("counts in Redis after SIGKILL (-acknowledged +stored):\n%s", diff)
	}
}
