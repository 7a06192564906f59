package integration

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kstate-dev/kstate/internal/proctest"
	"github.com/kstate-dev/kstate/internal/redistest"
	"github.com/kstate-dev/kstate/statestore"
)

// An agent cut off from Redis keeps serving its warm keys (it cannot tell a
// partition from a Redis outage), also after its lease expired and another
// agent took the slot over. When the partition heals, its writes are
// rejected by the fence and Redis keeps the new holder's values. The loss is
// then exactly what it acknowledged and never wrote: the documented loss
// case of a partition, nothing more.
func TestPartitionedHolderLosesExactlyWhatItAcknowledgedWhileCutOff(t *testing.T) {
	srv := redistest.Start(t) // private: the proxy needs its plain host:port
	redisURL := srv.URL()
	proxy := proctest.StartTCPProxy(t, srv.Addr())
	space := redistest.UniqueSpace(t)
	fn := proctest.StartCounter(t)
	env := func(leaseTTL, minHold string) map[string]string {
		return map[string]string{
			"KSTATE_SLOTS":           "1",
			"KSTATE_LEASE_TTL":       leaseTTL,
			"KSTATE_FLUSH_INTERVAL":  "1h",
			"KSTATE_FLUSH_TIMEOUT":   "300ms",
			"KSTATE_MIN_HOLD":        minHold,
			"KSTATE_HANDOFF_TIMEOUT": "300ms",
		}
	}
	// a reaches Redis through the proxy; its lease lapses 1s into the cut.
	a := proctest.StartAgent(t, proctest.AgentConfig{Pod: "cut-a", Space: space, StoreURL: "redis://" + proxy.Addr(), Function: fn.Addr, Env: env("1s", "0s")})
	// b keeps what it takes.
	b := proctest.StartAgent(t, proctest.AgentConfig{Pod: "cut-b", Space: space, StoreURL: redisURL, Function: fn.Addr, Env: env("5s", "1h")})
	store := proctest.OpenStore(t, redisURL)
	ref := statestore.SlotRef{Space: space, Slot: 0}
	keys := []string{"cut-0", "cut-1", "cut-2"}
	ctx := context.Background()

	mustAdd := func(ag *proctest.Agent, key string, by int64, tl *proctest.Tally) int64 {
		t.Helper()
		ans, err := proctest.Add(ag.URL, key, by)
		if err != nil {
			t.Fatalf("POST to %s, key %q: %v", ag.Cfg.Pod, key, err)
		}
		n, err := proctest.ReplyCount(ans, key)
		if err != nil {
			t.Fatalf("POST to %s, key %q: %v", ag.Cfg.Pod, key, err)
		}
		tl.Add(key, by)
		return n
	}

	var flushed, unflushed, whileCut, afterTakeover, byB proctest.Tally
	for _, k := range keys {
		mustAdd(a, k, 10, &flushed)
	}
	a.Flush(t)
	for _, k := range keys {
		mustAdd(a, k, 1, &unflushed)
	}
	lease, err := store.Current(ctx, ref)
	if err != nil || lease.Holder != "cut-a" {
		t.Fatalf("lease of slot 0: %+v, %v; want held by cut-a", lease, err)
	}

	proxy.Partition()
	// a cannot reach Redis but serves its warm keys from memory.
	for _, k := range keys {
		mustAdd(a, k, 2, &whileCut)
	}
	proctest.WaitFor(t, 10*time.Second, "a's lease to expire", func() bool {
		cur, err := store.Current(ctx, ref)
		if err != nil {
			t.Fatalf("lease of slot 0: %v", err)
		}
		return cur.Holder == "cut-a" && cur.Epoch == lease.Epoch && time.Now().After(cur.Expires)
	})
	for _, k := range keys {
		want := flushed.Snapshot()[k] + 100
		if got := mustAdd(b, k, 100, &byB); got != want {
			t.Errorf("b's first reply for %q: count %d, want %d (what was flushed plus 100)", k, got, want)
		}
	}
	if cur, err := store.Current(ctx, ref); err != nil || cur.Holder != "cut-b" || cur.Epoch != lease.Epoch+1 {
		t.Fatalf("lease after b's takeover: %+v, %v; want cut-b at epoch %d", cur, err, lease.Epoch+1)
	}
	b.Flush(t)
	// Still cut off, a does not know it lost the slot.
	for _, k := range keys {
		mustAdd(a, k, 1000, &afterTakeover)
	}

	proxy.Heal()
	a.Flush(t) // at once, before a's next renewal, so the write itself meets the fence
	st := a.Stats(t)
	if st.RejectedWrites < 1 || len(st.Slots) != 0 {
		t.Errorf("a after the partition healed: rejected_writes %d, slots %v; want at least 1 rejected and no slot held", st.RejectedWrites, st.Slots)
	}
	ans, err := proctest.Add(a.URL, keys[0], 1)
	if err != nil {
		t.Fatal(err)
	}
	if ans.Status != http.StatusMisdirectedRequest || ans.Header.Get("Kstate-Holder") != "cut-b" {
		t.Errorf("a after it was fenced: %s (holder %q); want 421 naming cut-b", ans, ans.Header.Get("Kstate-Holder"))
	}

	got := proctest.StoredCounts(t, store, space, 1, keys)
	f, u, w, at, bb := flushed.Snapshot(), unflushed.Snapshot(), whileCut.Snapshot(), afterTakeover.Snapshot(), byB.Snapshot()
	wantStored, wantLoss, gotLoss := map[string]int64{}, map[string]int64{}, map[string]int64{}
	for _, k := range keys {
		wantStored[k] = f[k] + bb[k]
		wantLoss[k] = u[k] + w[k] + at[k]
		gotLoss[k] = f[k] + u[k] + w[k] + at[k] + bb[k] - got[k]
	}
	if diff := cmp.Diff(wantStored, got); diff != "" {
		t.Errorf("counts in Redis (-b's values +stored):\n%s", diff)
	}
	if diff := cmp.Diff(wantLoss, gotLoss); diff != "" {
		t.Errorf("acknowledged increments lost (-acknowledged by a but never written +lost):\n%s", diff)
	}
	t.Logf("lost per key: %v = %v unflushed before the cut + %v acknowledged while cut off + %v acknowledged after b took over",
		gotLoss, u, w, at)
}
