package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kstate-dev/kstate/internal/proctest"
	"github.com/kstate-dev/kstate/internal/redistest"
	functionv1 "github.com/kstate-dev/kstate/proto/function/v1"
	"github.com/kstate-dev/kstate/statestore"
)

func memStore(t *testing.T) *statestore.Memory {
	s := statestore.NewMemory(clock.RealClock{})
	t.Cleanup(func() { s.Close() })
	return s
}

func TestInvokeCountsAndFlushes(t *testing.T) {
	store := memStore(t)
	a := startAgent(t, testConfig("a", "ns/counter"), store, &counterFn{})
	ctx := context.Background()
	for i := 1; i <= 5; i++ {
		res, err := a.Invoke(ctx, event("k1", "", "add", 2))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := replyCount(t, res), int64(2*i); got != want {
			t.Fatalf("reply %d: count %d, want %d", i, got, want)
		}
	}
	if got := storedCount(t, store, "ns/counter", 64, "k1"); got != 0 {
		t.Fatalf("stored before the flush: %d, want nothing (write-behind)", got)
	}
	n, err := a.Flush(ctx)
	if err != nil || n != 1 {
		t.Fatalf("Flush = %d, %v; want 1 entity (five updates coalesced)", n, err)
	}
	if got := storedCount(t, store, "ns/counter", 64, "k1"); got != 10 {
		t.Fatalf("stored count %d, want 10", got)
	}
	if st := a.Stats(); st.DirtyEntities != 0 || st.DirtyBytes != 0 || st.CacheHits != 4 || st.CacheMisses != 1 {
		t.Errorf("stats after flush: dirty=%d dirtyBytes=%d hits=%d misses=%d; want 0, 0, 4, 1", st.DirtyEntities, st.DirtyBytes, st.CacheHits, st.CacheMisses)
	}
}

func TestDedupRedelivery(t *testing.T) {
	store := memStore(t)
	fn := &counterFn{}
	a := startAgent(t, testConfig("a", "ns/dedup"), store, fn)
	ctx := context.Background()
	first, err := a.Invoke(ctx, event("k", "ev-1", "add", 3))
	if err != nil {
		t.Fatal(err)
	}
	again, err := a.Invoke(ctx, event("k", "ev-1", "add", 3))
	if err != nil {
		t.Fatal(err)
	}
	if !again.Duplicate || first.Duplicate {
		t.Errorf("Duplicate: first %v, redelivery %v; want false, true", first.Duplicate, again.Duplicate)
	}
	if replyCount(t, again) != 3 || fn.calls.Load() != 1 {
		t.Errorf("redelivery: count %d after %d function calls; want 3 after 1", replyCount(t, again), fn.calls.Load())
	}
	// The window survives a flush, an eviction and a reload from the store.
	if _, err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	a.evict(0)
	if st := a.Stats(); st.Entities != 0 {
		t.Fatalf("%d entities cached after evicting everything", st.Entities)
	}
	again, err = a.Invoke(ctx, event("k", "ev-1", "add", 3))
	if err != nil || !again.Duplicate || replyCount(t, again) != 3 {
		t.Fatalf("redelivery after reload: %+v, %v; want the duplicate answer with count 3", again, err)
	}
	// Same id from another source is another event.
	other := event("k", "ev-1", "add", 1)
	other.Event.Source = "elsewhere"
	res, err := a.Invoke(ctx, other)
	if err != nil || res.Duplicate || replyCount(t, res) != 4 {
		t.Fatalf("same id, other source: %+v, %v; want a new event with count 4", res, err)
	}
}

func TestDedupWindowBounded(t *testing.T) {
	cfg := testConfig("a", "ns/window")
	cfg.DedupWindow = 3
	a := startAgent(t, cfg, memStore(t), &counterFn{})
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		if _, err := a.Invoke(ctx, event("k", fmt.Sprint(i), "add", 1)); err != nil {
			t.Fatal(err)
		}
	}
	e := a.slots[slotOf("k", cfg.Slots)].entities["k"]
	var ids []string
	for _, d := range e.rec.Dedup {
		ids = append(ids, d.ID)
	}
	if fmt.Sprint(ids) != "[2 3 4]" {
		t.Errorf("dedup window %v, want the newest three [2 3 4]", ids)
	}
}

func TestSyncDurabilityRepliesAfterWrite(t *testing.T) {
	store := memStore(t)
	cfg := testConfig("a", "ns/sync")
	cfg.Durability = DurabilitySync
	a := startAgent(t, cfg, store, &counterFn{})
	for i := 1; i <= 3; i++ {
		if _, err := a.Invoke(context.Background(), event("k", "", "add", 1)); err != nil {
			t.Fatal(err)
		}
		// FlushInterval is an hour: only the sync path can have written it.
		if got := storedCount(t, store, cfg.Space, cfg.Slots, "k"); got != int64(i) {
			t.Fatalf("after reply %d the store has %d", i, got)
		}
	}
}

// A sync reply whose write cannot land gives up after the lease TTL, not at
// the request's own deadline (minutes on Knative), and its update is
// written once the store is back.
func TestSyncDurabilityGivesUpAfterLeaseTTL(t *testing.T) {
	mem := memStore(t)
	store := &flakyStore{Store: mem}
	cfg := testConfig("a", "ns/sync-outage")
	cfg.Durability = DurabilitySync
	cfg.LeaseTTL = 300 * time.Millisecond
	a := startAgent(t, cfg, store, &counterFn{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := a.Invoke(ctx, event("k", "e1", "add", 1)); err != nil {
		t.Fatal(err)
	}
	store.down.Store(true)
	_, err := a.Invoke(ctx, event("k", "e2", "add", 1))
	if !errors.As(err, new(*UnavailableError)) || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("sync write during an outage: %v; want an UnavailableError before the request's deadline", err)
	}
	// A retry of e2 while its update is still not durable must not be
	// acknowledged from the dedup window: if this pod died now, the update
	// would be lost (found by the e2e partition test).
	res, err := a.Invoke(ctx, event("k", "e2", "add", 1))
	if !errors.As(err, new(*UnavailableError)) {
		t.Fatalf("retry of e2 during the outage: %+v, %v; want an UnavailableError, not an acknowledgement", res, err)
	}
	// Nor may a read show e2's update before it is durable.
	if res, err := a.Invoke(ctx, event("k", "", "get", 0)); !errors.As(err, new(*UnavailableError)) {
		t.Fatalf("read during the outage: %+v, %v; want an UnavailableError, not the count with e2 in it", res, err)
	}
	store.down.Store(false)
	if _, err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := storedCount(t, mem, cfg.Space, cfg.Slots, "k"); got != 2 {
		t.Errorf("stored %d after the store came back, want 2", got)
	}
	// The retry with the same id is answered from the dedup window.
	res, err = a.Invoke(ctx, event("k", "e2", "add", 1))
	if err != nil || !res.Duplicate || replyCount(t, res) != 2 {
		t.Errorf("retry of e2: %+v, %v; want the duplicate answer with count 2", res, err)
	}
}

func TestOutageBuffersThenBackPressureThenFlushes(t *testing.T) {
	mem := memStore(t)
	store := &flakyStore{Store: mem}
	cfg := testConfig("a", "ns/outage")
	cfg.MaxDirtyBytes = 4 << 10
	a := startAgent(t, cfg, store, &counterFn{})
	ctx := context.Background()
	// Warm 200 keys before the outage; cold keys cannot be loaded during it.
	acked := map[string]int64{}
	for i := 0; i < 200; i++ {
		key := fmt.Sprintf("k%d", i)
		if _, err := a.Invoke(ctx, event(key, "", "add", 1)); err != nil {
			t.Fatal(err)
		}
		acked[key]++
		if _, err := a.Flush(ctx); err != nil { // stay under the bound while warming
			t.Fatal(err)
		}
	}
	store.down.Store(true)
	if _, err := a.Invoke(ctx, event("cold", "", "add", 1)); !errors.As(err, new(*UnavailableError)) {
		t.Fatalf("cold key during the outage: %v, want UnavailableError", err)
	}
	var overloaded error
	for i := 0; overloaded == nil && i < 10000; i++ {
		key := fmt.Sprintf("k%d", i%200)
		if _, err := a.Invoke(ctx, event(key, "", "add", 1)); err != nil {
			overloaded = err
		} else {
			acked[key]++
		}
	}
	var oe *OverloadError
	if !errors.As(overloaded, &oe) {
		t.Fatalf("expected back-pressure past KSTATE_MAX_DIRTY_BYTES, got %v", overloaded)
	}
	// Reads are still served.
	if res, err := a.Invoke(ctx, event("k7", "", "get", 0)); err != nil || replyCount(t, res) != acked["k7"] {
		t.Fatalf("read during outage: %v, %v; want count %d", res, err, acked["k7"])
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := a.Flush(short); err == nil {
		t.Fatal("Flush succeeded during the outage")
	}
	store.down.Store(false)
	if _, err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for k, n := range acked {
		if got := storedCount(t, mem, cfg.Space, cfg.Slots, k); got != n {
			t.Errorf("%s: stored %d, acknowledged %d", k, got, n)
		}
	}
}

func TestEvictionNeverDropsDirty(t *testing.T) {
	mem := memStore(t)
	store := &flakyStore{Store: mem}
	cfg := testConfig("a", "ns/evict")
	cfg.CacheBytes = 1
	a := startAgent(t, cfg, store, &counterFn{})
	ctx := context.Background()
	for i := 0; i < 50; i++ {
		if _, err := a.Invoke(ctx, event(fmt.Sprint(i), "", "add", 1)); err != nil {
			t.Fatal(err)
		}
	}
	store.down.Store(true)
	a.evict(0)
	if st := a.Stats(); st.Entities != 50 || st.DirtyEntities != 50 {
		t.Fatalf("over budget with the store down: %d entities, %d dirty; want all 50 kept", st.Entities, st.DirtyEntities)
	}
	store.down.Store(false)
	if _, err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	a.evict(0)
	if st := a.Stats(); st.Entities != 0 || st.CacheBytes != 0 {
		t.Fatalf("after the flush: %d entities, %d bytes cached; want 0, 0", st.Entities, st.CacheBytes)
	}
	for i := 0; i < 50; i++ {
		if got := storedCount(t, mem, cfg.Space, cfg.Slots, fmt.Sprint(i)); got != 1 {
			t.Fatalf("key %d: stored %d, want 1", i, got)
		}
	}
}

func TestMailboxBoundAnswersOverload(t *testing.T) {
	cfg := testConfig("a", "ns/bounds")
	cfg.MaxQueuePerKey = 2
	block := make(chan struct{})
	fn := &blockingFn{release: block, entered: make(chan struct{}, 10)}
	a := startAgent(t, cfg, memStore(t), fn)
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ { // one running, two queued
		wg.Add(1)
		go func() { defer wg.Done(); a.Invoke(ctx, event("hot", "", "add", 1)) }()
	}
	<-fn.entered
	e := a.slots[slotOf("hot", cfg.Slots)].entities["hot"]
	waitFor(t, func() bool { e.mb.mu.Lock(); defer e.mb.mu.Unlock(); return len(e.mb.waiters) == 2 })
	_, err := a.Invoke(ctx, event("hot", "", "add", 1))
	var oe *OverloadError
	if !errors.As(err, &oe) {
		t.Fatalf("fourth event on a full mailbox: %v, want an OverloadError", err)
	}
	// Other keys are not blocked by the hot one.
	if _, err := a.Invoke(ctx, event("cold", "", "get", 0)); err != nil {
		t.Fatalf("other key: %v", err)
	}
	close(block)
	wg.Wait()
}

type blockingFn struct {
	counterFn
	release chan struct{}
	entered chan struct{}
}

func (b *blockingFn) Handle(ctx context.Context, req *functionv1.HandleRequest) (*functionv1.HandleResponse, error) {
	if req.GetKey() == "hot" {
		b.entered <- struct{}{}
		<-b.release
	}
	return b.counterFn.Handle(ctx, req)
}

func TestFencedSlotIsDroppedAndCounted(t *testing.T) {
	fake := clocktesting.NewFakePassiveClock(time.Now())
	store := statestore.NewMemory(fake)
	cfg := testConfig("a", "ns/fence")
	cfg.HandoffTimeout = 100 * time.Millisecond
	a := startAgent(t, cfg, store, &counterFn{})
	ctx := context.Background()
	if _, err := a.Invoke(ctx, event("k", "", "add", 1)); err != nil {
		t.Fatal(err)
	}
	// a stops renewing (say it was partitioned) and b takes the slot over.
	fake.SetTime(fake.Now().Add(time.Hour))
	ref := statestore.SlotRef{Space: cfg.Space, Slot: slotOf("k", cfg.Slots)}
	taken, err := store.Acquire(ctx, ref, "b", "b:8080", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := storedCount(t, store, cfg.Space, cfg.Slots, "k"); got != 0 {
		t.Fatalf("a stale holder's write landed: count %d", got)
	}
	st := a.Stats()
	if st.RejectedWrites != 1 || st.Entities != 0 || len(st.Slots) != 0 {
		t.Fatalf("after fencing: rejected=%d entities=%d slots=%d; want 1, 0, 0", st.RejectedWrites, st.Entities, len(st.Slots))
	}
	_, err = a.Invoke(ctx, event("k", "", "add", 1))
	var no *NotOwnerError
	if !errors.As(err, &no) || no.Holder != "b" || no.Addr != "b:8080" {
		t.Fatalf("event for a taken slot: %v; want 421 naming b (epoch %d)", err, taken.Epoch)
	}
}

func TestDrainFlushesEverythingAndReleases(t *testing.T) {
	store := memStore(t)
	cfg := testConfig("a", "ns/drain")
	a := startAgent(t, cfg, store, &counterFn{})
	ctx := context.Background()
	const keys = 2000
	for i := 0; i < keys; i++ {
		if _, err := a.Invoke(ctx, event(fmt.Sprint(i), "", "add", 1)); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := a.Drain(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Flushed != keys || sum.Released != cfg.Slots {
		t.Fatalf("drain: flushed %d, released %d; want %d, %d", sum.Flushed, sum.Released, keys, cfg.Slots)
	}
	for i := 0; i < keys; i++ {
		if got := storedCount(t, store, cfg.Space, cfg.Slots, fmt.Sprint(i)); got != 1 {
			t.Fatalf("key %d: stored %d, want 1", i, got)
		}
	}
	for n := 0; n < cfg.Slots; n++ {
		l, err := store.Current(ctx, statestore.SlotRef{Space: cfg.Space, Slot: uint32(n)})
		if err != nil || l.Holder != "" {
			t.Fatalf("slot %d after drain: %+v, %v; want released", n, l, err)
		}
	}
	if _, err := a.Invoke(ctx, event("x", "", "add", 1)); !errors.Is(err, errDraining) {
		t.Fatalf("event after drain: %v, want errDraining", err)
	}
}

// Handoff between two agents on real Redis: the holder flushes and
// releases, the asker continues from the flushed state, and acknowledged
// increments all count.
func TestHandoffBetweenAgents(t *testing.T) {
	url := redistest.Shared(t)
	space := redistest.UniqueSpace(t)
	newStore := func() statestore.Store {
		s, err := statestore.NewRedis(context.Background(), url, statestore.RedisOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	cfgA, cfgB := testConfig("a", space), testConfig("b", space)
	cfgA.HandoffTimeout = 200 * time.Millisecond
	cfgB.MinHold = time.Hour // b keeps what it gets, so a cannot take it back
	agents := map[string]*Agent{
		"a": startAgent(t, cfgA, newStore(), &counterFn{}),
		"b": startAgent(t, cfgB, newStore(), &counterFn{}),
	}
	ctx := context.Background()
	for i := 0; i < 10; i++ {
		if _, err := agents["a"].Invoke(ctx, event("k", "", "add", 1)); err != nil {
			t.Fatal(err)
		}
	}
	// b gets the key now (a router moved it): b asks a, a hands over.
	res, err := agents["b"].Invoke(ctx, event("k", "", "add", 1))
	if err != nil {
		t.Fatal(err)
	}
	if got := replyCount(t, res); got != 11 {
		t.Fatalf("first event on b: count %d, want 11 (a's unflushed updates must move with the slot)", got)
	}
	if a, b := agents["a"].Stats(), agents["b"].Stats(); a.HandoffsOut != 1 || b.HandoffsIn != 1 {
		t.Errorf("handoffs: a out %d, b in %d; want 1, 1", a.HandoffsOut, b.HandoffsIn)
	}
	// a now redirects to b.
	_, err = agents["a"].Invoke(ctx, event("k", "", "add", 1))
	var no *NotOwnerError
	if !errors.As(err, &no) || no.Holder != "b" {
		t.Fatalf("a after the handoff: %v, want 421 naming b", err)
	}
}

// Two agents both keep getting events for one slot. Each handoff needs the
// holder to have held the slot for MinHold, so over a run of length T there
// are at most T/MinHold+1 moves whatever the scheduling; and the counts are
// exact.
func TestNoBounceAndExactCounts(t *testing.T) {
	url := redistest.Shared(t)
	space := redistest.UniqueSpace(t)
	agents := map[string]*Agent{}
	for _, pod := range []string{"a", "b"} {
		cfg := testConfig(pod, space)
		cfg.MinHold = 300 * time.Millisecond
		s, err := statestore.NewRedis(context.Background(), url, statestore.RedisOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		agents[pod] = startAgent(t, cfg, s, &counterFn{})
	}
	ctx := context.Background()
	start := time.Now()
	var acked proctest.Tally
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for _, pod := range []string{"a", "b"} {
		wg.Add(1)
		go func(pod string) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, _, err := invokeFollowing(ctx, agents, pod, event("k", "", "add", 1)); err == nil {
					acked.Add("k", 1)
				}
			}
		}(pod)
	}
	// Run until one handoff happened and then a while longer.
	waitFor(t, func() bool { return agents["a"].Stats().HandoffsOut+agents["b"].Stats().HandoffsOut >= 1 })
	time.Sleep(700 * time.Millisecond) // more traffic; the bound below holds for any duration
	close(stop)
	wg.Wait()
	elapsed := time.Since(start)
	moves := agents["a"].Stats().HandoffsOut + agents["b"].Stats().HandoffsOut
	if limit := int64(elapsed/(300*time.Millisecond)) + 1; moves > limit {
		t.Errorf("%d handoffs in %s; MinHold allows at most %d", moves, elapsed, limit)
	}
	for _, a := range agents {
		if _, err := a.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	s := agents["a"].store
	ackedK := acked.Snapshot()["k"]
	if got := storedCount(t, s, space, 64, "k"); got != ackedK {
		t.Errorf("stored %d, acknowledged %d", got, ackedK)
	}
	t.Logf("%d acknowledged increments, %d handoffs in %s", ackedK, moves, elapsed.Round(time.Millisecond))
}

func TestPrepareLoadsHotEntities(t *testing.T) {
	store := memStore(t)
	cfg := testConfig("a", "ns/prepare")
	ctx := context.Background()
	first := startAgent(t, cfg, store, &counterFn{})
	for i := 0; i < 100; i++ {
		first.Invoke(ctx, event(fmt.Sprint(i), "", "add", i))
	}
	if _, err := first.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	// A new agent (scale from zero) prepares every slot, then serves from memory.
	second := startAgent(t, testConfig("b", "ns/prepare"), store, &counterFn{})
	resp, err := second.Prepare(ctx, nil, 0, 0)
	if err != nil || resp.EntitiesLoaded != 100 {
		t.Fatalf("Prepare = %+v, %v; want 100 entities", resp, err)
	}
	for i := 0; i < 100; i++ {
		res, err := second.Invoke(ctx, event(fmt.Sprint(i), "", "get", 0))
		if err != nil || replyCount(t, res) != int64(i) {
			t.Fatalf("key %d: %v, %v", i, res, err)
		}
	}
	if st := second.Stats(); st.CacheMisses != 0 || st.CacheHits != 100 {
		t.Errorf("after prepare: %d misses, %d hits; want 0, 100", st.CacheMisses, st.CacheHits)
	}
}

// A hint preloaded while another agent held the slot must be re-read when
// the slot comes over: the holder wrote after the preload.
func TestPreloadedHintRevalidatedOnHandoff(t *testing.T) {
	store := memStore(t)
	ctx := context.Background()
	a := startAgent(t, testConfig("a", "ns/hint"), store, &counterFn{})
	b := startAgent(t, testConfig("b", "ns/hint"), store, &counterFn{})
	a.Invoke(ctx, event("k", "", "add", 1))
	a.Flush(ctx)
	if _, err := b.Prepare(ctx, []uint32{slotOf("k", 64)}, 0, 0); err != nil {
		t.Fatal(err)
	}
	a.Invoke(ctx, event("k", "", "add", 1)) // count 2, unflushed, after b's preload
	res, err := b.Invoke(ctx, event("k", "", "get", 0))
	if err != nil || replyCount(t, res) != 2 {
		t.Fatalf("b after handoff: %v, %v; want count 2, not the stale preloaded 1", res, err)
	}
}

// midLoadStore runs a hook once, after LoadAll has read from the store and
// before the agent installs what it read.
type midLoadStore struct {
	statestore.Store
	hook func()
}

func (m *midLoadStore) LoadAll(ctx context.Context, s []statestore.SlotRef, keys [][]string) ([]map[string]*statestore.Record, error) {
	recs, err := m.Store.LoadAll(ctx, s, keys)
	if h := m.hook; h != nil {
		m.hook = nil
		h()
	}
	return recs, err
}

// A preload read while another agent held the slot stays a hint even if the
// slot comes over before the read is installed: the previous holder may
// have written the key after the read.
func TestPreloadReadBeforeTheSlotCameOverIsAHint(t *testing.T) {
	mem := memStore(t)
	ctx := context.Background()
	const slots = 64
	slot := slotOf("k", slots)
	k2 := ""
	for i := 0; k2 == ""; i++ {
		if c := fmt.Sprint("other-", i); slotOf(c, slots) == slot {
			k2 = c
		}
	}
	a := startAgent(t, testConfig("a", "ns/midload"), mem, &counterFn{})
	a.Invoke(ctx, event("k", "", "add", 1))
	a.Flush(ctx)
	store := &midLoadStore{Store: mem}
	b := startAgent(t, testConfig("b", "ns/midload"), store, &counterFn{})
	store.hook = func() {
		// After b read k at count 1: a writes count 2, then b takes the
		// slot (a hands it over, flushing count 2) for another key.
		a.Invoke(ctx, event("k", "", "add", 1))
		if _, err := b.Invoke(ctx, event(k2, "", "add", 1)); err != nil {
			t.Errorf("b taking the slot: %v", err)
		}
	}
	if _, err := b.Prepare(ctx, []uint32{slot}, 0, 0); err != nil {
		t.Fatal(err)
	}
	if store.hook != nil {
		t.Fatal("Prepare did not load the slot")
	}
	res, err := b.Invoke(ctx, event("k", "", "get", 0))
	if err != nil || replyCount(t, res) != 2 {
		t.Fatalf("b: %v, %v; want count 2, not the count 1 read before the slot came over", res, err)
	}
}

// Kill Redis (AOF) in the middle of a run and start it again: warm keys are
// served throughout, and afterwards nothing acknowledged is lost.
func TestRedisRestartLosesNothing(t *testing.T) {
	srv := redistest.Start(t)
	store, err := statestore.NewRedis(context.Background(), srv.URL(), statestore.RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	cfg := testConfig("a", "ns/restart")
	cfg.FlushInterval = 20 * time.Millisecond
	cfg.FlushTimeout = 300 * time.Millisecond
	a := startAgent(t, cfg, store, &counterFn{})
	ctx := context.Background()
	acked := map[string]int64{}
	run := func(n int) (served int) {
		for i := 0; i < n; i++ {
			key := fmt.Sprintf("k%d", i%10)
			if _, err := a.Invoke(ctx, event(key, "", "add", 1)); err == nil {
				acked[key]++
				served++
			}
		}
		return served
	}
	run(1000)
	srv.Kill()
	if served := run(1000); served != 1000 {
		t.Fatalf("with Redis down, %d of 1000 events on warm keys were served; want all", served)
	}
	srv.Restart()
	run(1000)
	if _, err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for k, n := range acked {
		if got := storedCount(t, store, cfg.Space, cfg.Slots, k); got != n {
			t.Errorf("%s: stored %d, acknowledged %d", k, got, n)
		}
	}
	if st := a.Stats(); st.RejectedWrites != 0 {
		t.Errorf("%d writes rejected", st.RejectedWrites)
	}
}

// A Redis that comes back empty is detected: the agent stops serving and
// writing and keeps its state, instead of starting afresh.
func TestStoreResetDetected(t *testing.T) {
	srv := redistest.Start(t)
	store, err := statestore.NewRedis(context.Background(), srv.URL(), statestore.RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	cfg := testConfig("a", "ns/reset")
	cfg.LeaseTTL = 300 * time.Millisecond // renew (and check the marker) every 100ms
	a := startAgent(t, cfg, store, &counterFn{})
	ctx := context.Background()
	for i := 0; i < 10; i++ {
		if _, err := a.Invoke(ctx, event("k", "", "add", 1)); err != nil {
			t.Fatal(err)
		}
	}
	srv.Wipe()
	waitFor(t, func() bool { return a.storeReset.Load() })
	if _, err := a.Invoke(ctx, event("k", "", "add", 1)); !errors.Is(err, errStoreReset) {
		t.Fatalf("event after a reset: %v, want errStoreReset", err)
	}
	if a.Ready() {
		t.Error("agent ready after a store reset")
	}
	if st := a.Stats(); st.DirtyEntities != 1 || st.RejectedWrites != 0 {
		t.Errorf("after reset: %d dirty, %d rejected; want the state kept (1, 0)", st.DirtyEntities, st.RejectedWrites)
	}
}

// With a preload gate, a pod that joins while another pod holds a slot
// with data is unready until Prepare finished, or until the gate's time
// passed.
func TestPreloadGate(t *testing.T) {
	ctx := context.Background()
	store := memStore(t)
	other := startAgent(t, testConfig("other", "ns/gate"), store, &counterFn{})
	if _, err := other.Invoke(ctx, event("k", "", "add", 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	cfg := testConfig("a", "ns/gate")
	cfg.PreloadGate = time.Hour
	a, err := New(cfg, store, &counterFn{})
	if err != nil {
		t.Fatal(err)
	}
	a.Start(ctx)
	defer a.Stop()
	waitFor(t, func() bool { return a.marker.Load().(string) != "" })
	if a.Ready() {
		t.Fatal("ready before the preload, while another pod holds a slot with data")
	}
	if _, err := a.Prepare(ctx, []uint32{1}, 0, 0); err != nil {
		t.Fatal(err)
	}
	if !a.Ready() {
		t.Fatal("not ready after the preload")
	}

	fake := clocktesting.NewFakeClock(time.Now())
	cfg.Pod, cfg.PreloadGate = "b", time.Minute
	b, err := New(cfg, store, &counterFn{}, WithClock(fake))
	if err != nil {
		t.Fatal(err)
	}
	b.Start(ctx)
	defer b.Stop()
	waitFor(t, func() bool { return b.marker.Load().(string) != "" })
	if b.Ready() {
		t.Fatal("ready before the gate's time")
	}
	fake.Step(time.Minute)
	if !b.Ready() {
		t.Fatal("not ready after the gate's time: it must fall back to lazy loading")
	}
}

// A pod that starts alone in its space (scale from zero) preloads on its
// own and opens its gate without the controller's Prepare, holding every
// slot with data; a space without data has nothing to wait for.
func TestPreloadFromZeroWithoutTheController(t *testing.T) {
	ctx := context.Background()
	store := memStore(t)
	keys := []string{"k1", "k2", "k3", "k4", "k5"}
	before := startAgent(t, testConfig("before", "ns/zero"), store, &counterFn{})
	for _, k := range keys {
		if _, err := before.Invoke(ctx, event(k, "", "add", 1)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := before.Drain(ctx); err != nil { // scaled to zero: flushed, leases released
		t.Fatal(err)
	}

	for _, tc := range []struct {
		space    string
		entities int64
	}{{"ns/zero", int64(len(keys))}, {"ns/empty", 0}} {
		cfg := testConfig("a-"+tc.space, tc.space)
		cfg.PreloadGate = time.Hour
		a, err := New(cfg, store, &counterFn{})
		if err != nil {
			t.Fatal(err)
		}
		a.Start(ctx)
		waitFor(t, a.Ready)
		st := a.Stats()
		if st.Entities != tc.entities || st.CacheMisses != 0 {
			t.Errorf("%s: ready with %d entities and %d misses, want %d preloaded and none missed", tc.space, st.Entities, st.CacheMisses, tc.entities)
		}
		if tc.entities > 0 {
			for _, k := range keys {
				if !a.holds(a.slots[slotOf(k, cfg.Slots)]) {
					t.Errorf("%s: slot of %s not held after the preload from zero", tc.space, k)
				}
			}
			res, err := a.Invoke(ctx, event("k1", "", "get", 0))
			if err != nil || replyCount(t, res) != 1 {
				t.Errorf("%s: k1 = %v, %v; want the count 1 written before", tc.space, res, err)
			}
			if st := a.Stats(); st.CacheMisses != 0 {
				t.Errorf("%s: first event after the preload missed the cache", tc.space)
			}
		}
		a.Stop()
	}
}

// A hint preloaded while another agent held the slot must also be re-read
// when a later Prepare takes the slot because it became free.
func TestPreloadedHintRevalidatedOnTakingAFreeSlot(t *testing.T) {
	store := memStore(t)
	ctx := context.Background()
	a := startAgent(t, testConfig("a", "ns/hint2"), store, &counterFn{})
	b := startAgent(t, testConfig("b", "ns/hint2"), store, &counterFn{})
	a.Invoke(ctx, event("k", "", "add", 1))
	a.Flush(ctx)
	slot := []uint32{slotOf("k", 64)}
	if _, err := b.Prepare(ctx, slot, 0, 0); err != nil { // a holds it: a hint
		t.Fatal(err)
	}
	a.Invoke(ctx, event("k", "", "add", 1))
	if _, err := a.Drain(ctx); err != nil { // count 2 written, slot released
		t.Fatal(err)
	}
	if _, err := b.Prepare(ctx, slot, 0, 0); err != nil { // takes the free slot
		t.Fatal(err)
	}
	res, err := b.Invoke(ctx, event("k", "", "get", 0))
	if err != nil || replyCount(t, res) != 2 {
		t.Fatalf("b: %v, %v; want count 2, not the stale hint's 1", res, err)
	}
}

// Idle eviction counts from when this agent last used an entity, not from
// the last access stored with it: entities preloaded after a long idle
// (scale from zero) must survive until they have been idle here.
func TestPreloadedEntitiesAreNotIdleOnArrival(t *testing.T) {
	store := memStore(t)
	ctx := context.Background()
	ref := statestore.SlotRef{Space: "ns/idle", Slot: slotOf("old", 64)}
	lease, err := store.Acquire(ctx, ref, "writer", "w:1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	old := &statestore.Record{Key: "old", State: []byte(`{"count":7}`), Version: 1, LastAccess: time.Now().Add(-24 * time.Hour)}
	if _, err := store.Flush(ctx, lease, []*statestore.Record{old}); err != nil {
		t.Fatal(err)
	}
	store.Release(ctx, lease)
	a := startAgent(t, testConfig("a", "ns/idle"), store, &counterFn{})
	if resp, err := a.Prepare(ctx, nil, 0, 0); err != nil || resp.EntitiesLoaded != 1 {
		t.Fatalf("Prepare = %+v, %v; want the one entity", resp, err)
	}
	a.evict(time.Hour)
	res, err := a.Invoke(ctx, event("old", "", "get", 0))
	if err != nil || replyCount(t, res) != 7 {
		t.Fatalf("read: %v, %v", res, err)
	}
	if st := a.Stats(); st.CacheMisses != 0 {
		t.Errorf("the preloaded entity was evicted as idle before its first use (%d misses)", st.CacheMisses)
	}
}
