package agent

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kstate-dev/kstate/statestore"
)

// waitClock is a fake clock that reports each After it is asked for, so a
// test knows an agent is waiting before it steps the clock.
type waitClock struct {
	*clocktesting.FakeClock
	waits chan time.Duration
}

var _ clock.WithTicker = waitClock{}

func newWaitClock(t time.Time) waitClock {
	return waitClock{FakeClock: clocktesting.NewFakeClock(t), waits: make(chan time.Duration, 64)}
}

func (c waitClock) After(d time.Duration) <-chan time.Time {
	ch := c.FakeClock.After(d)
	c.waits <- d
	return ch
}

// waitFor returns once the clock was asked for an After of d.
func (c waitClock) waitFor(t *testing.T, d time.Duration) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case got := <-c.waits:
			if got == d {
				return
			}
		case <-deadline:
			t.Fatalf("nobody waited %v on the clock within 10s", d)
		}
	}
}

// lostNotices is a store whose ReleaseFor releases but never tells the
// asker, as when pub/sub drops the notice or the holder runs an older
// version; released reports each release.
type lostNotices struct {
	statestore.Store
	released chan statestore.Lease
}

func (s lostNotices) ReleaseFor(ctx context.Context, l statestore.Lease, _ statestore.HandoffRequest) error {
	err := s.Store.Release(ctx, l)
	s.released <- l
	return err
}

// handoffPair starts agents a and b on store, b with clock clk and a with
// its own fake clock; neither clock moves unless the test steps it, and the
// store's leases never expire. a holds key k with count 3, unflushed.
func handoffPair(t *testing.T, space string, store statestore.Store, clk clock.WithTicker) (a, b *Agent) {
	t.Helper()
	start := time.Now()
	a = startAgent(t, testConfig("a", space), store, &counterFn{}, WithClock(clocktesting.NewFakeClock(start)))
	b = startAgent(t, testConfig("b", space), store, &counterFn{}, WithClock(clk))
	// Nothing repeats a request or a notice here (the clocks stand still),
	// so both must be listening before the first is sent.
	waitFor(t, a.watching.Load)
	waitFor(t, b.watching.Load)
	for range 3 {
		if _, err := a.Invoke(context.Background(), event("k", "", "add", 1)); err != nil {
			t.Fatal(err)
		}
	}
	return a, b
}

// The holder's notice wakes the asker: b's only timer, the fallback poll,
// never fires (its clock never moves), yet b gets the slot, with a's
// unflushed updates.
func TestHandoffNoticeWakesTheAsker(t *testing.T) {
	store := statestore.NewMemory(clocktesting.NewFakePassiveClock(time.Now()))
	a, b := handoffPair(t, "ns/notice", store, clocktesting.NewFakeClock(time.Now()))
	// The deadline only keeps a broken wake-up from hanging the test.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := b.Invoke(ctx, event("k", "", "add", 1))
	if err != nil {
		t.Fatalf("b: %v", err)
	}
	if got := replyCount(t, res); got != 4 {
		t.Errorf("first event on b: count %d, want 4", got)
	}
	if out, in := a.Stats().HandoffsOut, b.Stats().HandoffsIn; out != 1 || in != 1 {
		t.Errorf("handoffs: a out %d, b in %d; want 1, 1", out, in)
	}
}

// Without the notice the asker still gets the slot, at its next poll: b
// keeps waiting after a released, and takes the slot once its clock
// reaches the poll.
func TestHandoffPollsWhenTheNoticeIsLost(t *testing.T) {
	store := lostNotices{
		Store:    statestore.NewMemory(clocktesting.NewFakePassiveClock(time.Now())),
		released: make(chan statestore.Lease, 1),
	}
	clk := newWaitClock(time.Now())
	_, b := handoffPair(t, "ns/lost", store, clk)

	type result struct {
		res *Result
		err error
	}
	done := make(chan result, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second) // against hanging only
	defer cancel()
	go func() {
		res, err := b.Invoke(ctx, event("k", "", "add", 1))
		done <- result{res, err}
	}()
	<-store.released
	clk.waitFor(t, handoffPollInterval)
	select {
	case r := <-done:
		t.Fatalf("b answered before its poll, without a notice: %+v, %v", r.res, r.err)
	default:
	}
	clk.Step(handoffPollInterval)
	r := <-done
	if r.err != nil {
		t.Fatalf("b after its poll: %v", r.err)
	}
	if got := replyCount(t, r.res); got != 4 {
		t.Errorf("first event on b: count %d, want 4", got)
	}
}

// Prepare's cost follows the data: it takes the free leases of the slots
// whose hot sets have keys, and no others, and loads their entities within
// the budgets. A slot without data is taken when an event first needs it.
func TestPrepareTakesTheSlotsWithData(t *testing.T) {
	ctx := context.Background()
	store := memStore(t)
	const space = "ns/data"
	writer := startAgent(t, testConfig("w", space), store, &counterFn{})
	keys := []string{"x", "y", "z"}
	var want []uint32 // the slots with data
	for _, k := range keys {
		if _, err := writer.Invoke(ctx, event(k, "", "add", 1)); err != nil {
			t.Fatal(err)
		}
		want = append(want, slotOf(k, 64))
	}
	if _, err := writer.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	sort.Slice(want, func(i, j int) bool { return want[i] < want[j] })
	size := int64((&statestore.Record{Key: "x", State: []byte(`{"count":1}`)}).Size())

	tests := []struct {
		name                  string
		maxEntities, maxBytes int64
		wantLoaded            int64
	}{
		{name: "default budget", wantLoaded: 3},
		{name: "one entity", maxEntities: 1, wantLoaded: 1},
		{name: "bytes for two", maxBytes: 2 * size, wantLoaded: 2},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := startAgent(t, testConfig(fmt.Sprint("p", i), space), store, &counterFn{})
			resp, err := a.Prepare(ctx, nil, tc.maxEntities, tc.maxBytes)
			if err != nil {
				t.Fatal(err)
			}
			if resp.EntitiesLoaded != tc.wantLoaded {
				t.Errorf("Prepare loaded %d entities, want %d", resp.EntitiesLoaded, tc.wantLoaded)
			}
			var held []uint32
			for _, s := range a.Stats().Slots {
				held = append(held, s.Slot)
			}
			sort.Slice(held, func(i, j int) bool { return held[i] < held[j] })
			if diff := cmp.Diff(want, held); diff != "" {
				t.Errorf("slots held after Prepare (-want +got):\n%s", diff)
			}
			// A key of a slot without data: its slot is taken now (a read, so
			// the next case finds the same data).
			if _, err := a.Invoke(ctx, event(keyOutside(want), "", "get", 0)); err != nil {
				t.Errorf("event for a slot Prepare left free: %v", err)
			}
			if _, err := a.Drain(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// keyOutside returns a key whose slot (of 64) is not in slots.
func keyOutside(slots []uint32) string {
	for i := 0; ; i++ {
		k := fmt.Sprint("new-", i)
		n := slotOf(k, 64)
		if !slices.Contains(slots, n) {
			return k
		}
	}
}
