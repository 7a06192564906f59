package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kstate-dev/kstate/internal/proctest"
	"github.com/kstate-dev/kstate/pkg/agent"
	"github.com/kstate-dev/kstate/pkg/placement"
	functionv1 "github.com/kstate-dev/kstate/proto/function/v1"
	"github.com/kstate-dev/kstate/statestore"
	benchdelay "github.com/kstate-dev/kstate/test/bench/delay"
)

// drainWindow is what a pod gets between SIGTERM and SIGKILL by default
// (terminationGracePeriodSeconds).
const drainWindow = 30 * time.Second

// firstCount is the state the counter example stores after one increment.
var firstCount = []byte(`{"count":1}`)

// firstIncrement is a function that answers every event by storing
// firstCount: the agent's work per entity is what it is for the counter,
// without a gRPC call per event to set up 100,000 entities.
type firstIncrement struct{}

func (firstIncrement) Handle(context.Context, *functionv1.HandleRequest) (*functionv1.HandleResponse, error) {
	return &functionv1.HandleResponse{Action: functionv1.HandleResponse_SET, State: firstCount}, nil
}

// TestP7DrainDirtyEntities: one agent (pkg/agent, async durability, a
// one-hour flush interval, so nothing is written before the drain) holds
// 100,000 dirty entities over all 4096 slots; Drain (the SIGTERM path:
// refuse new work, flush everything, release every lease) is timed against
// the 30-second window. Redis is loaded without delay and drained with it.
// Afterwards every entity is read back from Redis.
func TestP7DrainDirtyEntities(t *testing.T) {
	m := benchMode(t)
	if m == smoke {
		t.Parallel()
	}
	var (
		n       = pick(m, 2000, 100_000, 100_000)
		workers = 32
		delay   = redisDelay(t)
		rep     = &report{id: "P7"}
		ctx     = context.Background()
	)
	redis := startDelayedRedis(t, 0)
	store, err := statestore.NewRedis(ctx, redis.URL, statestore.RedisOptions{ClientName: "p7"})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	cfg := agent.DefaultConfig()
	cfg.Pod, cfg.Space, cfg.StoreURL = "p7", "bench/p7", redis.URL
	cfg.Durability, cfg.FlushInterval = agent.DurabilityAsync, time.Hour
	a, err := agent.New(cfg, store, firstIncrement{})
	if err != nil {
		t.Fatal(err)
	}
	a.Start(ctx)
	stopped := false
	defer func() {
		if !stopped {
			a.Stop()
		}
	}()
	proctest.WaitFor(t, 30*time.Second, "agent ready", a.Ready)

	ks := keys("e", n)
	var (
		next   atomic.Int64
		wg     sync.WaitGroup
		errsMu sync.Mutex
		errs   []error
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1) - 1; i < int64(n); i = next.Add(1) - 1 {
				if _, err := a.Invoke(ctx, &agent.Invocation{Key: ks[i]}); err != nil {
					errsMu.Lock()
					errs = append(errs, fmt.Errorf("%s: %w", ks[i], err))
					errsMu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d invocations failed, the first: %v", len(errs), n, errs[0])
	}
	st := a.Stats()
	if st.GetDirtyEntities() != int64(n) {
		t.Fatalf("%d dirty entities before the drain, want %d", st.GetDirtyEntities(), n)
	}

	redis.setDelay(t, delay)
	benchdelay.LineFor(delay).Delivered()
	dctx, cancel := context.WithTimeout(ctx, drainWindow)
	defer cancel()
	sum, err := a.Drain(dctx)
	a.Stop()
	stopped = true
	if err != nil {
		t.Fatalf("drain: %v (flushed %d in %s)", err, sum.Flushed, sum.Took)
	}
	// Every slot an entity landed in: all 4096 at benchmark scale, fewer in
	// the smoke run.
	if held := len(st.GetSlots()); sum.Flushed != n || sum.Released != held {
		t.Errorf("drain flushed %d entities and released %d slots, want %d and %d", sum.Flushed, sum.Released, n, held)
	}
	checkStored(t, redis.Server.URL(), cfg, ks)

	rep.add(row{Measure: fmt.Sprintf("graceful drain of %d dirty entities (1 agent, %d slots, async, nothing flushed before)", n, cfg.Slots),
		Kstate: fmt.Sprintf("%.2f s", sum.Took.Seconds()), Baseline: fmt.Sprintf("%.0f s (the drain window)", drainWindow.Seconds()),
		Ratio: fmt.Sprintf("%.3f", sum.Took.Seconds()/drainWindow.Seconds()), Goal: "≤ 3 s (≤ 0.10)", Met: met(sum.Took <= 3*time.Second)})
	rep.note("the drain flushed %d entities (%.0f entities/s) and released %d slot leases; every entity was read back from Redis",
		sum.Flushed, float64(sum.Flushed)/sum.Took.Seconds(), sum.Released)
	rep.note("%s", redis.delayNote(t))
	rep.write(t, m)
}

// checkStored reads every key back from Redis, directly, and checks it
// holds the first increment.
func checkStored(t *testing.T, url string, cfg agent.Config, ks []string) {
	t.Helper()
	ctx := context.Background()
	store, err := statestore.NewRedis(ctx, url, statestore.RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	bySlot := map[uint32][]string{}
	for _, k := range ks {
		s := placement.SlotOf(k, cfg.Slots)
		bySlot[s] = append(bySlot[s], k)
	}
	missing := 0
	for slot, keys := range bySlot {
		recs, err := store.Load(ctx, statestore.SlotRef{Space: cfg.Space, Slot: slot}, keys)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if rec := recs[k]; rec == nil || string(rec.State) != string(firstCount) {
				if missing < 5 {
					t.Errorf("entity %s after the drain: %+v, want state %s", k, rec, firstCount)
				}
				missing++
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d entities are not in Redis after the drain", missing, len(ks))
	}
}
