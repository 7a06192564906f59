package integration

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kstate-dev/kstate/internal/proctest"
	"github.com/kstate-dev/kstate/internal/redistest"
	"github.com/kstate-dev/kstate/statestore"
)

var drainedLine = regexp.MustCompile(`kstate agent drained: (\d+) entities flushed, (\d+) slots released in `)

// SIGTERM with 10,000 dirty keys loses nothing: with an hour-long flush
// interval nothing is written before the signal; the agent must flush every
// key, release every lease, log its one-line summary and exit 0 within its
// drain timeout.
func TestSIGTERMWithTenThousandDirtyKeysLosesNothing(t *testing.T) {
	const (
		keys    = 10000
		workers = 8
		slots   = 256 // many slots flushed in parallel; 4096 would only add lease traffic here
		drain   = 20 * time.Second
	)
	storeURL := redistest.Shared(t)
	space := redistest.UniqueSpace(t)
	fn := proctest.StartCounter(t)
	a := proctest.StartAgent(t, proctest.AgentConfig{
		Pod: "drain-a", Space: space, StoreURL: storeURL, Function: fn.Addr,
		Env: map[string]string{
			"KSTATE_FLUSH_INTERVAL": "1h",
			"KSTATE_DRAIN_TIMEOUT":  drain.String(),
			"KSTATE_SLOTS":          strconv.Itoa(slots),
		},
	})

	byOf := func(i int) int64 { return int64(i%9 + 1) }
	keyOf := func(i int) string { return fmt.Sprintf("dirty-%05d", i) }
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= keys {
					return
				}
				ans, err := proctest.Add(a.URL, keyOf(i), byOf(i))
				if err == nil {
					var n int64
					if n, err = proctest.ReplyCount(ans, keyOf(i)); err == nil && n != byOf(i) {
						err = fmt.Errorf("reply count %d, want %d", n, byOf(i))
					}
				}
				if err != nil {
					errs <- fmt.Errorf("key %q: %v", keyOf(i), err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st := a.Stats(t)
	if st.DirtyEntities != keys || st.FlushedEntities != 0 {
		t.Fatalf("before SIGTERM: %d dirty, %d flushed entities; want %d, 0", st.DirtyEntities, st.FlushedEntities, keys)
	}
	heldSlots := len(st.Slots)

	code, took := a.Terminate(drain + 5*time.Second)
	if code != 0 {
		t.Errorf("agent exited with status %d after SIGTERM, want 0", code)
	}
	if took > drain {
		t.Errorf("agent took %v to exit after SIGTERM, more than its drain timeout %v", took, drain)
	}
	t.Logf("SIGTERM to exit: %v", took.Round(time.Millisecond))

	lines := proctest.GrepLines(a.Stderr.String(), "drained")
	if len(lines) != 1 {
		t.Errorf("stderr has %d lines mentioning \"drained\", want the one summary line: %q", len(lines), lines)
	} else if m := drainedLine.FindStringSubmatch(lines[0]); m == nil {
		t.Errorf("drain summary %q does not match %s", lines[0], drainedLine)
	} else if m[1] != strconv.Itoa(keys) || m[2] != strconv.Itoa(heldSlots) {
		t.Errorf("drain summary says %s entities flushed, %s slots released; want %d, %d", m[1], m[2], keys, heldSlots)
	}

	want := make(map[string]int64, keys)
	all := make([]string, 0, keys)
	for i := range keys {
		want[keyOf(i)] = byOf(i)
		all = append(all, keyOf(i))
	}
	store := proctest.OpenStore(t, storeURL)
	got := proctest.StoredCounts(t, store, space, slots, all)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("counts in Redis after SIGTERM (-acknowledged +stored):\n%s", diff)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, s := range st.Slots {
		l, err := store.Current(ctx, statestore.SlotRef{Space: space, Slot: s.GetSlot()})
		if err != nil {
			t.Fatalf("lease of slot %d: %v", s.GetSlot(), err)
		}
		if l.Holder != "" {
			t.Errorf("slot %d after the drain: held by %q at epoch %d, want released", s.GetSlot(), l.Holder, l.Epoch)
		}
	}
}
