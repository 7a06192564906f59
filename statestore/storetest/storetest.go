package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/kstate-dev/kstate/internal/redistest"
	"github.com/kstate-dev/kstate/statestore"
)

// HotSetSize is the hot-set cap a Harness must give its stores, so the suite
// can check trimming without writing 10,000 keys.
const HotSetSize = 64

// BatchKeys is the batch size a Harness should give stores that split the
// *All methods into batches (statestore.RedisOptions.BatchKeys), so the
// suite's few dozen slots take several batches, on several Cluster nodes.
const BatchKeys = 4

const (
	// longTTL outlives any test: a lease that must stay live uses it.
	longTTL = time.Hour
	// shortTTL is for leases a test lets expire with Advance(expire).
	shortTTL = 200 * time.Millisecond
	expire   = 2 * shortTTL
	// midTTL is for a lease that must be seen live and then expired; it is
	// long enough that a slow machine still sees it live (Redis judges by
	// real time).
	midTTL = 2 * time.Second
	// waitFor bounds waiting for asynchronous deliveries (handoffs).
	waitFor = 10 * time.Second
)

// Harness makes stores for the suite.
type Harness interface {
	// New returns a store for t, configured with HotSetSize and closed when
	// t ends. It may share a backend with other tests: the suite keeps each
	// test in its own entity space and holder names.
	New(t *testing.T) statestore.Store
	// Advance moves the store's clock of t's store forward by at least d:
	// a fake clock step in memory, a real wait against Redis (whose TIME
	// judges expiry).
	Advance(t *testing.T, d time.Duration)
}

// Run runs the contract suite. Subtests run in parallel.
func Run(t *testing.T, h Harness) {
	tests := []struct {
		name string
		fn   func(*testing.T, *env)
	}{
		{"AcquireFreeSlot", testAcquireFreeSlot},
		{"AcquireHeldByAnother", testAcquireHeld},
		{"ReacquireOwnLeaseRaisesEpoch", testReacquireOwn},
		{"ReleaseKeepsEpoch", testReleaseKeepsEpoch},
		{"ReleaseOfStaleLeaseIsNoop", testReleaseStale},
		{"LeaseLiveUntilExpiry", testLiveUntilExpiry},
		{"TakeoverAfterExpiry", testTakeoverAfterExpiry},
		{"RenewExtends", testRenewExtends},
		{"RenewAfterExpiryWithoutTakeover", testRenewAfterExpiry},
		{"RenewAllMatchesRenew", testRenewAll},
		{"RenewAllMixesHeldAndFenced", testRenewAllMixed},
		{"BatchAcquireReleaseHotKeys", testBatchOps},
		{"BatchOpsOverManySlots", testBatchOpsManySlots},
		{"AcquireWithLoadsAndAsks", testAcquireWith},
		{"EpochNeverDecreases", testEpochMonotonic},
		{"ConcurrentAcquireHasOneWinner", testConcurrentAcquire},
		{"FencedFlushWritesNothing", testFencedFlush},
		{"FlushAfterReleaseIsFenced", testFlushAfterRelease},
		{"FlushOfUnleasedSlotIsFenced", testFlushUnleasedSlot},
		{"EmptyFlushChecksFence", testEmptyFlush},
		{"VersionRejection", testVersionRejection},
		{"Tombstones", testTombstones},
		{"HotKeysOrder", testHotKeysOrder},
		{"HotSetTrim", testHotSetTrim},
		{"LastAccessDefaultsToStoreTime", testLastAccessDefault},
		{"LoadMissingKeys", testLoadMissing},
		{"SlotsAreIsolated", testSlotsIsolated},
		{"RoundTrip5000", testRoundTrip5000},
		{"DedupAndBinaryRoundTrip", testDedupAndBinary},
		{"Markers", testMarkers},
		{"Handoff", testHandoff},
		{"ReleaseForNotifiesAsker", testReleaseFor},
		{"InvalidArguments", testInvalidArguments},
		{"Closed", testClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := &env{h: h, s: h.New(t), ctx: context.Background(), space: redistest.UniqueSpace(t)}
			e.slot = statestore.SlotRef{Space: e.space, Slot: 7}
			tc.fn(t, e)
		})
	}
}

type env struct {
	h     Harness
	s     statestore.Store
	ctx   context.Context
	space string
	slot  statestore.SlotRef
}

func (e *env) acquire(t *testing.T, holder string, ttl time.Duration) statestore.Lease {
	t.Helper()
	l, err := e.s.Acquire(e.ctx, e.slot, holder, holder+":8080", ttl)
	if err != nil {
		t.Fatalf("Acquire(%s, %s): %v", e.slot, holder, err)
	}
	return l
}

func (e *env) flush(t *testing.T, l statestore.Lease, recs ...*statestore.Record) statestore.FlushResult {
	t.Helper()
	res, err := e.s.Flush(e.ctx, l, recs)
	if err != nil {
		t.Fatalf("Flush(%d records at epoch %d): %v", len(recs), l.Epoch, err)
	}
	return res
}

func (e *env) load(t *testing.T, keys ...string) map[string]*statestore.Record {
	t.Helper()
	got, err := e.s.Load(e.ctx, e.slot, keys)
	if err != nil {
		t.Fatalf("Load(%v): %v", keys, err)
	}
	return got
}

func (e *env) current(t *testing.T) statestore.Lease {
	t.Helper()
	l, err := e.s.Current(e.ctx, e.slot)
	if err != nil {
		t.Fatalf("Current(%s): %v", e.slot, err)
	}
	return l
}

func (e *env) hot(t *testing.T, n int) []string {
	t.Helper()
	keys, err := e.s.HotKeys(e.ctx, e.slot, n)
	if err != nil {
		t.Fatalf("HotKeys(%d): %v", n, err)
	}
	return keys
}

// base is a fixed past time for LastAccess values, at millisecond
// precision as stored.
var base = time.UnixMilli(1_700_000_000_000)

func rec(key string, version uint64, state string) *statestore.Record {
	return &statestore.Record{Key: key, Version: version, State: []byte(state), LastAccess: base}
}

// recordOpts compares loaded records; LastAccess compares by instant.
var recordOpts = cmp.Options{cmpopts.EquateEmpty()}

func wantFenced(t *testing.T, err error, ours, current statestore.Lease) {
	t.Helper()
	if !errors.Is(err, statestore.ErrFenced) {
		t.Fatalf("err = %v, want ErrFenced", err)
	}
	var fe *statestore.FencedError
	if !errors.As(err, &fe) {
		t.Fatalf("err = %T %v, want a *FencedError", err, err)
	}
	if diff := cmp.Diff(ours, fe.Lease); diff != "" {
		t.Errorf("FencedError.Lease (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(current, fe.Current); diff != "" {
		t.Errorf("FencedError.Current (-want +got):\n%s", diff)
	}
	for _, s := range []string{ours.Slot.String(), fmt.Sprintf("epoch %d", ours.Epoch), fmt.Sprintf("epoch %d", current.Epoch), current.Holder} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
}

func testAcquireFreeSlot(t *testing.T, e *env) {
	l := e.acquire(t, "a", longTTL)
	want := statestore.Lease{Slot: e.slot, Holder: "a", Addr: "a:8080", Epoch: 1}
	if diff := cmp.Diff(want, l, cmpopts.IgnoreFields(statestore.Lease{}, "Acquired", "Expires")); diff != "" {
		t.Errorf("Acquire (-want +got):\n%s", diff)
	}
	if l.Acquired.IsZero() || l.Expires.Sub(l.Acquired) != longTTL {
		t.Errorf("Acquired %v, Expires %v: want Expires = Acquired + %v", l.Acquired, l.Expires, longTTL)
	}
	if diff := cmp.Diff(l, e.current(t)); diff != "" {
		t.Errorf("Current after Acquire (-want +got):\n%s", diff)
	}
}

func testAcquireHeld(t *testing.T, e *env) {
	a := e.acquire(t, "a", longTTL)
	_, err := e.s.Acquire(e.ctx, e.slot, "b", "b:8080", longTTL)
	if !errors.Is(err, statestore.ErrLeaseHeld) {
		t.Fatalf("Acquire by b of a's live lease: err = %v, want ErrLeaseHeld", err)
	}
	var he *statestore.HeldError
	if !errors.As(err, &he) {
		t.Fatalf("err = %T, want *HeldError", err)
	}
	if diff := cmp.Diff(a, he.Lease); diff != "" {
		t.Errorf("HeldError.Lease (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(a, e.current(t)); diff != "" {
		t.Errorf("Current after refused Acquire (-want +got):\n%s", diff)
	}
}

func testReacquireOwn(t *testing.T, e *env) {
	first := e.acquire(t, "a", longTTL)
	second := e.acquire(t, "a", longTTL)
	if second.Epoch != first.Epoch+1 {
		t.Fatalf("re-Acquire epoch = %d, want %d", second.Epoch, first.Epoch+1)
	}
	// The earlier incarnation is fenced: a restarted agent cannot race its
	// own previous process.
	_, err := e.s.Flush(e.ctx, first, []*statestore.Record{rec("k", 1, "x")})
	wantFenced(t, err, first, second)
	_, err = e.s.Renew(e.ctx, first, longTTL)
	wantFenced(t, err, first, second)
	if got := e.load(t, "k"); len(got) != 0 {
		t.Errorf("fenced Flush wrote %v", got)
	}
}

func testReleaseKeepsEpoch(t *testing.T, e *env) {
	a := e.acquire(t, "a", longTTL)
	if err := e.s.Release(e.ctx, a); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if diff := cmp.Diff(statestore.Lease{Slot: e.slot, Epoch: a.Epoch}, e.current(t)); diff != "" {
		t.Errorf("Current after Release (-want +got):\n%s", diff)
	}
	if b := e.acquire(t, "b", longTTL); b.Epoch != a.Epoch+1 {
		t.Errorf("Acquire after Release: epoch = %d, want %d", b.Epoch, a.Epoch+1)
	}
	if err := e.s.Release(e.ctx, a); err != nil {
		t.Errorf("second Release of a stale lease: %v, want nil", err)
	}
}

func testReleaseStale(t *testing.T, e *env) {
	a := e.acquire(t, "a", shortTTL)
	e.h.Advance(t, expire)
	b := e.acquire(t, "b", longTTL)
	if err := e.s.Release(e.ctx, a); err != nil {
		t.Fatalf("Release of a superseded lease: %v, want nil", err)
	}
	if diff := cmp.Diff(b, e.current(t)); diff != "" {
		t.Errorf("a's stale Release changed b's lease (-want +got):\n%s", diff)
	}
}

func testLiveUntilExpiry(t *testing.T, e *env) {
	a := e.acquire(t, "a", midTTL)
	if _, err := e.s.Acquire(e.ctx, e.slot, "b", "", longTTL); !errors.Is(err, statestore.ErrLeaseHeld) {
		t.Fatalf("Acquire by b within a's ttl: err = %v, want ErrLeaseHeld", err)
	}
	e.h.Advance(t, midTTL+100*time.Millisecond)
	b, err := e.s.Acquire(e.ctx, e.slot, "b", "", longTTL)
	if err != nil {
		t.Fatalf("Acquire by b after a's ttl: %v", err)
	}
	if b.Epoch != a.Epoch+1 {
		t.Errorf("takeover epoch = %d, want %d", b.Epoch, a.Epoch+1)
	}
}

func testTakeoverAfterExpiry(t *testing.T, e *env) {
	a := e.acquire(t, "a", shortTTL)
	e.h.Advance(t, expire)
	b := e.acquire(t, "b", longTTL)
	if b.Epoch != a.Epoch+1 {
		t.Fatalf("takeover epoch = %d, want %d", b.Epoch, a.Epoch+1)
	}
	_, err := e.s.Renew(e.ctx, a, longTTL)
	wantFenced(t, err, a, b)
}

func testRenewExtends(t *testing.T, e *env) {
	a := e.acquire(t, "a", longTTL)
	r, err := e.s.Renew(e.ctx, a, 2*longTTL)
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if diff := cmp.Diff(a, r, cmpopts.IgnoreFields(statestore.Lease{}, "Expires")); diff != "" {
		t.Errorf("Renew changed more than Expires (-want +got):\n%s", diff)
	}
	if !r.Expires.After(a.Expires) {
		t.Errorf("Renew: Expires %v, want after %v", r.Expires, a.Expires)
	}
	if diff := cmp.Diff(r, e.current(t)); diff != "" {
		t.Errorf("Current after Renew (-want +got):\n%s", diff)
	}
}

func testRenewAfterExpiry(t *testing.T, e *env) {
	a := e.acquire(t, "a", shortTTL)
	e.h.Advance(t, expire)
	r, err := e.s.Renew(e.ctx, a, longTTL)
	if err != nil {
		t.Fatalf("Renew of an expired lease nobody took: %v", err)
	}
	if r.Epoch != a.Epoch {
		t.Errorf("Renew epoch = %d, want %d", r.Epoch, a.Epoch)
	}
	if _, err := e.s.Acquire(e.ctx, e.slot, "b", "", longTTL); !errors.Is(err, statestore.ErrLeaseHeld) {
		t.Errorf("Acquire by b after a renewed: err = %v, want ErrLeaseHeld", err)
	}
	e.flush(t, r, rec("k", 1, "x")) // the renewed lease still writes
}

// RenewAll gives each lease what Renew would: renewed when still held,
// fenced when released or taken over.
func testRenewAll(t *testing.T, e *env) {
	var leases []statestore.Lease
	for n := uint32(0); n < 3; n++ {
		l, err := e.s.Acquire(e.ctx, statestore.SlotRef{Space: e.space, Slot: n}, "a", "a:1", longTTL)
		if err != nil {
			t.Fatal(err)
		}
		leases = append(leases, l)
	}
	if err := e.s.Release(e.ctx, leases[1]); err != nil {
		t.Fatal(err)
	}
	renewed, errs := e.s.RenewAll(e.ctx, leases, 2*longTTL)
	if len(renewed) != 3 || len(errs) != 3 {
		t.Fatalf("RenewAll returned %d leases and %d errors for 3 leases", len(renewed), len(errs))
	}
	for _, i := range []int{0, 2} {
		if errs[i] != nil || renewed[i].Epoch != leases[i].Epoch || !renewed[i].Expires.After(leases[i].Expires) {
			t.Errorf("lease %d: %+v, %v; want it renewed at epoch %d", i, renewed[i], errs[i], leases[i].Epoch)
		}
	}
	if !errors.Is(errs[1], statestore.ErrFenced) {
		t.Errorf("released lease: err = %v, want ErrFenced", errs[1])
	}
	if renewed, errs := e.s.RenewAll(e.ctx, nil, longTTL); len(renewed) != 0 || len(errs) != 0 {
		t.Errorf("RenewAll of nothing: %v, %v", renewed, errs)
	}
}

// leaseCase is one way a lease can stand when it is renewed in a batch.
type leaseCase int

const (
	caseHeld       leaseCase = iota // held: renewed
	caseReleased                    // released by its holder: fenced, slot free
	caseTakenOver                   // expired, then taken by b: fenced, names b
	caseReacquired                  // its holder took it again: fenced at the old epoch
	caseExpired                     // expired, nobody took it: still renewed
	caseNeverHeld                   // a lease the store never granted: fenced
)

const nLeaseCases = int(caseNeverHeld) + 1

// RenewAll over many slots in every state a lease can be in gives each
// what Renew would: the live ones (also those that expired without a
// takeover) renewed by the ttl, in milliseconds, and the others fenced,
// each with its own FencedError naming the slot's current lease.
func testRenewAllMixed(t *testing.T, e *env) {
	const slots = 6 * nLeaseCases // several batches of BatchKeys
	refs := make([]statestore.SlotRef, slots)
	for i := range refs {
		refs[i] = statestore.SlotRef{Space: e.space, Slot: uint32(i)}
	}
	ttlOf := func(c leaseCase) time.Duration {
		if c == caseTakenOver || c == caseExpired {
			return shortTTL
		}
		return longTTL
	}
	leases := make([]statestore.Lease, slots)
	for i, ref := range refs {
		c := leaseCase(i % nLeaseCases)
		if c == caseNeverHeld {
			leases[i] = statestore.Lease{Slot: ref, Holder: "a", Addr: "a:1", Epoch: 1}
			continue
		}
		l, err := e.s.Acquire(e.ctx, ref, "a", "a:1", ttlOf(c))
		if err != nil {
			t.Fatalf("Acquire(%s): %v", ref, err)
		}
		leases[i] = l
	}
	e.h.Advance(t, expire)
	want := make([]statestore.Lease, slots) // the slot's lease after RenewAll
	for i, ref := range refs {
		var err error
		switch leaseCase(i % nLeaseCases) {
		case caseReleased:
			err = e.s.Release(e.ctx, leases[i])
			want[i] = statestore.Lease{Slot: ref, Epoch: leases[i].Epoch}
		case caseTakenOver:
			want[i], err = e.s.Acquire(e.ctx, ref, "b", "b:1", longTTL)
		case caseReacquired:
			want[i], err = e.s.Acquire(e.ctx, ref, "a", "a:1", longTTL)
		case caseNeverHeld:
			want[i] = statestore.Lease{Slot: ref}
		}
		if err != nil {
			t.Fatalf("setting up %s: %v", ref, err)
		}
	}

	renewed, errs := e.s.RenewAll(e.ctx, leases, 2*longTTL)
	if len(renewed) != slots || len(errs) != slots {
		t.Fatalf("RenewAll returned %d leases and %d errors for %d leases", len(renewed), len(errs), slots)
	}
	for i, ref := range refs {
		switch c := leaseCase(i % nLeaseCases); c {
		case caseHeld, caseExpired:
			if errs[i] != nil {
				t.Errorf("%s (case %d): %v, want it renewed", ref, c, errs[i])
				continue
			}
			if diff := cmp.Diff(leases[i], renewed[i], cmpopts.IgnoreFields(statestore.Lease{}, "Expires")); diff != "" {
				t.Errorf("%s: RenewAll changed more than Expires (-want +got):\n%s", ref, diff)
			}
			// The store's clock read at the renewal is after the
			// acquisition, so Expires is at least Acquired + ttl.
			if got := renewed[i].Expires.Sub(leases[i].Acquired); got < 2*longTTL {
				t.Errorf("%s: renewed until Acquired + %v, want at least + %v", ref, got, 2*longTTL)
			}
			if diff := cmp.Diff(renewed[i], e.currentOf(t, ref)); diff != "" {
				t.Errorf("%s: Current after RenewAll (-renewed +current):\n%s", ref, diff)
			}
		default:
			if renewed[i] != (statestore.Lease{}) {
				t.Errorf("%s (case %d): fenced, yet RenewAll returned lease %+v", ref, c, renewed[i])
			}
			wantFenced(t, errs[i], leases[i], want[i])
			if diff := cmp.Diff(want[i], e.currentOf(t, ref)); diff != "" {
				t.Errorf("%s (case %d): a fenced renewal changed the lease (-want +got):\n%s", ref, c, diff)
			}
		}
	}
}

func (e *env) currentOf(t *testing.T, ref statestore.SlotRef) statestore.Lease {
	t.Helper()
	l, err := e.s.Current(e.ctx, ref)
	if err != nil {
		t.Fatalf("Current(%s): %v", ref, err)
	}
	return l
}

// AcquireAll, ReleaseAll and HotKeysAll over many slots (several batches)
// give per slot what their single forms give: free, released, expired and
// own leases are granted at epoch + 1, live ones of another holder refused;
// only current leases are released; hot sets come back for the slots that
// have them and empty for the rest.
func testBatchOpsManySlots(t *testing.T, e *env) {
	const slots = 40
	refs := make([]statestore.SlotRef, slots)
	for i := range refs {
		refs[i] = statestore.SlotRef{Space: e.space, Slot: uint32(i)}
	}
	// Slot i%5: 0 free, 1 held by b, 2 held by a, 3 released by b, 4 expired lease of b.
	before := make([]statestore.Lease, slots)
	for i, ref := range refs {
		var err error
		switch i % 5 {
		case 1:
			before[i], err = e.s.Acquire(e.ctx, ref, "b", "b:1", longTTL)
		case 2:
			before[i], err = e.s.Acquire(e.ctx, ref, "a", "a:1", longTTL)
		case 3:
			if before[i], err = e.s.Acquire(e.ctx, ref, "b", "b:1", longTTL); err == nil {
				err = e.s.Release(e.ctx, before[i])
			}
		case 4:
			before[i], err = e.s.Acquire(e.ctx, ref, "b", "b:1", shortTTL)
		}
		if err != nil {
			t.Fatalf("setting up %s: %v", ref, err)
		}
	}
	e.h.Advance(t, expire)
	leases, errs := e.s.AcquireAll(e.ctx, refs, "a", "a:1", longTTL)
	for i, ref := range refs {
		if i%5 == 1 {
			var he *statestore.HeldError
			if !errors.As(errs[i], &he) {
				t.Errorf("%s held by b: err = %v, want a HeldError", ref, errs[i])
			} else if diff := cmp.Diff(before[i], he.Lease); diff != "" {
				t.Errorf("%s: HeldError.Lease (-want +got):\n%s", ref, diff)
			}
			continue
		}
		if errs[i] != nil {
			t.Errorf("%s: AcquireAll: %v", ref, errs[i])
			continue
		}
		want := statestore.Lease{Slot: ref, Holder: "a", Addr: "a:1", Epoch: before[i].Epoch + 1}
		if diff := cmp.Diff(want, leases[i], cmpopts.IgnoreFields(statestore.Lease{}, "Acquired", "Expires")); diff != "" {
			t.Errorf("%s: AcquireAll (-want +got):\n%s", ref, diff)
		}
		if got := leases[i].Expires.Sub(leases[i].Acquired); got != longTTL {
			t.Errorf("%s: Expires = Acquired + %v, want + %v", ref, got, longTTL)
		}
		if diff := cmp.Diff(leases[i], e.currentOf(t, ref)); diff != "" {
			t.Errorf("%s: Current after AcquireAll (-want +got):\n%s", ref, diff)
		}
	}

	// Hot sets in every third slot, written by whoever holds it.
	for i, ref := range refs {
		if i%3 != 0 {
			continue
		}
		l := leases[i]
		if i%5 == 1 {
			l = before[i]
		}
		if _, err := e.s.Flush(e.ctx, l, []*statestore.Record{rec(fmt.Sprintf("k%d", i), 1, "x"), rec(fmt.Sprintf("j%d", i), 1, "y")}); err != nil {
			t.Fatalf("Flush to %s: %v", ref, err)
		}
	}
	hot, err := e.s.HotKeysAll(e.ctx, refs, 1)
	if err != nil {
		t.Fatalf("HotKeysAll: %v", err)
	}
	// LoadAll gives each slot what Load gives it: both keys where they were
	// written, nothing for a key of another slot or none.
	keys := make([][]string, slots)
	for i := range refs {
		keys[i] = []string{fmt.Sprintf("k%d", i), fmt.Sprintf("j%d", (i+1)%slots), "none"}
	}
	loaded, err := e.s.LoadAll(e.ctx, refs, keys)
	if err != nil {
		t.Fatalf("LoadAll: %v", err)
	}
	if len(loaded) != slots {
		t.Fatalf("LoadAll returned %d maps for %d slots", len(loaded), slots)
	}
	for i, ref := range refs {
		one, err := e.s.Load(e.ctx, ref, keys[i])
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(one, loaded[i], recordOpts); diff != "" {
			t.Errorf("%s: LoadAll (-Load +LoadAll):\n%s", ref, diff)
		}
		if want := map[bool]int{true: 1, false: 0}[i%3 == 0]; len(loaded[i]) != want {
			t.Errorf("%s: LoadAll found %d records, want %d", ref, len(loaded[i]), want)
		}
	}
	if len(hot) != slots {
		t.Fatalf("HotKeysAll returned %d sets for %d slots", len(hot), slots)
	}
	for i, ref := range refs {
		one, err := e.s.HotKeys(e.ctx, ref, 1)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(one, hot[i], cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s: HotKeysAll (-HotKeys +HotKeysAll):\n%s", ref, diff)
		}
		if wantN := map[bool]int{true: 1, false: 0}[i%3 == 0]; len(hot[i]) != wantN {
			t.Errorf("%s: %d hot keys, want %d", ref, len(hot[i]), wantN)
		}
	}

	// Release a's leases, b's live ones with a stale epoch (no effect), and
	// a's leases again (no longer current: no error, no effect).
	var rel []statestore.Lease
	for i := range refs {
		if i%5 == 1 {
			stale := before[i]
			stale.Epoch--
			rel = append(rel, stale)
		} else {
			rel = append(rel, leases[i])
		}
	}
	for _, round := range []string{"first", "second"} {
		for i, err := range e.s.ReleaseAll(e.ctx, rel) {
			if err != nil {
				t.Errorf("%s ReleaseAll of %s: %v", round, rel[i].Slot, err)
			}
		}
	}
	for i, ref := range refs {
		want := statestore.Lease{Slot: ref, Epoch: leases[i].Epoch}
		if i%5 == 1 {
			want = before[i]
		}
		if diff := cmp.Diff(want, e.currentOf(t, ref)); diff != "" {
			t.Errorf("%s after ReleaseAll (-want +got):\n%s", ref, diff)
		}
	}
}

// AcquireAll, ReleaseAll and HotKeysAll give per slot what their single
// forms give.
func testBatchOps(t *testing.T, e *env) {
	slots := []statestore.SlotRef{{Space: e.space, Slot: 0}, {Space: e.space, Slot: 1}, {Space: e.space, Slot: 2}}
	held, err := e.s.Acquire(e.ctx, slots[1], "b", "b:1", longTTL)
	if err != nil {
		t.Fatal(err)
	}
	leases, errs := e.s.AcquireAll(e.ctx, slots, "a", "a:1", longTTL)
	var he *statestore.HeldError
	if !errors.As(errs[1], &he) || he.Lease.Holder != "b" || he.Lease.Epoch != held.Epoch {
		t.Errorf("slot held by b: err = %v, want a HeldError naming b at epoch %d", errs[1], held.Epoch)
	}
	for _, i := range []int{0, 2} {
		if errs[i] != nil || leases[i].Holder != "a" || leases[i].Epoch != 1 {
			t.Errorf("free slot %d: %+v, %v; want a's lease at epoch 1", i, leases[i], errs[i])
		}
	}
	e.flush(t, leases[0], rec("x", 1, "1"), rec("y", 1, "2"))
	hot, err := e.s.HotKeysAll(e.ctx, slots, 10)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range slots {
		one, err := e.s.HotKeys(e.ctx, s, 10)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(one, hot[i], cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("HotKeysAll slot %d (-HotKeys +HotKeysAll):\n%s", i, diff)
		}
	}
	if len(hot[0]) != 2 {
		t.Errorf("hot keys of slot 0: %v, want x and y", hot[0])
	}
	stale := leases[2]
	stale.Epoch++ // never held: releasing it is no error and changes nothing
	for i, err := range e.s.ReleaseAll(e.ctx, []statestore.Lease{leases[0], stale, leases[2]}) {
		if err != nil {
			t.Errorf("ReleaseAll[%d]: %v", i, err)
		}
	}
	for _, i := range []int{0, 2} {
		cur, err := e.s.Current(e.ctx, slots[i])
		if err != nil || cur.Holder != "" || cur.Epoch != 1 {
			t.Errorf("slot %d after ReleaseAll: %+v, %v; want free, epoch kept at 1", i, cur, err)
		}
	}
}

func testEpochMonotonic(t *testing.T, e *env) {
	var last uint64
	for i := range 12 {
		holder := []string{"a", "b", "c"}[i%3]
		l := e.acquire(t, holder, longTTL)
		if l.Epoch != last+1 {
			t.Fatalf("round %d: %s got epoch %d, want %d", i, holder, l.Epoch, last+1)
		}
		last = l.Epoch
		e.flush(t, l, rec("k", uint64(i), "x"))
		if i%2 == 0 {
			if err := e.s.Release(e.ctx, l); err != nil {
				t.Fatalf("round %d: Release: %v", i, err)
			}
			if got := e.current(t).Epoch; got != last {
				t.Fatalf("round %d: epoch after Release = %d, want %d", i, got, last)
			}
		} else {
			// Another holder may only take it once it expired: make it so.
			if _, err := e.s.Renew(e.ctx, l, shortTTL); err != nil {
				t.Fatalf("round %d: Renew: %v", i, err)
			}
			e.h.Advance(t, expire)
		}
	}
}

func testConcurrentAcquire(t *testing.T, e *env) {
	const n = 16
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		leases  = make([]statestore.Lease, n)
		errs    = make([]error, n)
		holders = make([]string, n)
	)
	for i := range n {
		holders[i] = fmt.Sprintf("pod-%02d", i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			leases[i], errs[i] = e.s.Acquire(e.ctx, e.slot, holders[i], "", longTTL)
		}()
	}
	close(start)
	wg.Wait()

	var winner *statestore.Lease
	for i, err := range errs {
		if err == nil {
			if winner != nil {
				t.Fatalf("two winners: %s and %s", winner.Holder, holders[i])
			}
			winner = &leases[i]
		}
	}
	if winner == nil {
		t.Fatalf("no winner; errors: %v", errs)
	}
	if winner.Epoch != 1 {
		t.Errorf("winner epoch = %d, want 1", winner.Epoch)
	}
	for i, err := range errs {
		var he *statestore.HeldError
		if err != nil && (!errors.As(err, &he) || he.Lease.Holder != winner.Holder || he.Lease.Epoch != 1) {
			t.Errorf("%s: err = %v, want a HeldError naming %s at epoch 1", holders[i], err, winner.Holder)
		}
	}
}

func testFencedFlush(t *testing.T, e *env) {
	a := e.acquire(t, "a", shortTTL)
	e.flush(t, a, rec("k1", 1, "one"))
	e.h.Advance(t, expire)
	b := e.acquire(t, "b", longTTL)

	_, err := e.s.Flush(e.ctx, a, []*statestore.Record{
		rec("k1", 2, "late"),
		rec("k2", 1, "late"),
		{Key: "k1", Version: 3, Deleted: true},
	})
	wantFenced(t, err, a, b)
	if diff := cmp.Diff(map[string]*statestore.Record{"k1": rec("k1", 1, "one")}, e.load(t, "k1", "k2"), recordOpts); diff != "" {
		t.Errorf("fenced Flush changed records (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"k1"}, e.hot(t, 10)); diff != "" {
		t.Errorf("fenced Flush changed the hot set (-want +got):\n%s", diff)
	}
}

func testFlushAfterRelease(t *testing.T, e *env) {
	a := e.acquire(t, "a", longTTL)
	if err := e.s.Release(e.ctx, a); err != nil {
		t.Fatalf("Release: %v", err)
	}
	_, err := e.s.Flush(e.ctx, a, []*statestore.Record{rec("k", 1, "x")})
	wantFenced(t, err, a, statestore.Lease{Slot: e.slot, Epoch: a.Epoch})
	if got := e.load(t, "k"); len(got) != 0 {
		t.Errorf("Flush after Release wrote %v", got)
	}
}

func testFlushUnleasedSlot(t *testing.T, e *env) {
	a := e.acquire(t, "a", longTTL)
	other := a
	other.Slot.Slot = e.slot.Slot + 1
	_, err := e.s.Flush(e.ctx, other, []*statestore.Record{rec("k", 1, "x")})
	wantFenced(t, err, other, statestore.Lease{Slot: other.Slot})
}

func testEmptyFlush(t *testing.T, e *env) {
	a := e.acquire(t, "a", longTTL)
	if res := e.flush(t, a); len(res.Rejected) != 0 {
		t.Errorf("empty Flush rejected %v", res.Rejected)
	}
	b := e.acquire(t, "a", longTTL)
	_, err := e.s.Flush(e.ctx, a, nil)
	wantFenced(t, err, a, b)
}

func testVersionRejection(t *testing.T, e *env) {
	l := e.acquire(t, "a", longTTL)
	e.flush(t, l, rec("k", 5, "v5"), rec("big", 1<<63+1, "big"))

	steps := []struct {
		name         string
		batch        []*statestore.Record
		wantRejected []string
		want         map[string]*statestore.Record
	}{{
		name:         "lower versions are rejected, the rest of the batch lands",
		batch:        []*statestore.Record{rec("k", 3, "v3"), rec("other", 1, "o1"), rec("big", 1<<63, "smaller")},
		wantRejected: []string{"k", "big"},
		want:         map[string]*statestore.Record{"k": rec("k", 5, "v5"), "other": rec("other", 1, "o1"), "big": rec("big", 1<<63+1, "big")},
	}, {
		name:  "an equal version overwrites (a retried flush)",
		batch: []*statestore.Record{{Key: "k", Version: 5, State: []byte("v5 again"), LastAccess: rec("k", 5, "").LastAccess}},
		want:  map[string]*statestore.Record{"k": {Key: "k", Version: 5, State: []byte("v5 again"), LastAccess: rec("k", 5, "").LastAccess}},
	}, {
		name:  "a later record for the same key in one batch sees the earlier",
		batch: []*statestore.Record{rec("k", 7, "v7"), rec("k", 6, "v6")},
		want:  map[string]*statestore.Record{"k": rec("k", 7, "v7")},
		// v6 comes after v7 in the batch, so it is the one rejected.
		wantRejected: []string{"k"},
	}}
	for _, s := range steps {
		res := e.flush(t, l, s.batch...)
		if diff := cmp.Diff(s.wantRejected, res.Rejected, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s: Rejected (-want +got):\n%s", s.name, diff)
		}
		keys := make([]string, 0, len(s.want))
		for k := range s.want {
			keys = append(keys, k)
		}
		if diff := cmp.Diff(s.want, e.load(t, keys...), recordOpts); diff != "" {
			t.Errorf("%s: Load (-want +got):\n%s", s.name, diff)
		}
	}
}

func testTombstones(t *testing.T, e *env) {
	l := e.acquire(t, "a", longTTL)
	e.flush(t, l, rec("k", 2, "x"), rec("keep", 1, "y"))

	res := e.flush(t, l, &statestore.Record{Key: "k", Version: 1, Deleted: true})
	if diff := cmp.Diff([]string{"k"}, res.Rejected); diff != "" {
		t.Errorf("stale tombstone: Rejected (-want +got):\n%s", diff)
	}
	if got := e.load(t, "k"); got["k"] == nil {
		t.Fatal("a stale tombstone deleted the record")
	}

	res = e.flush(t, l, &statestore.Record{Key: "k", Version: 3, Deleted: true}, &statestore.Record{Key: "never-existed", Deleted: true})
	if len(res.Rejected) != 0 {
		t.Errorf("tombstones: Rejected = %v, want none", res.Rejected)
	}
	if diff := cmp.Diff(map[string]*statestore.Record{"keep": rec("keep", 1, "y")}, e.load(t, "k", "keep", "never-existed"), recordOpts); diff != "" {
		t.Errorf("Load after tombstone (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"keep"}, e.hot(t, 10)); diff != "" {
		t.Errorf("HotKeys after tombstone (-want +got):\n%s", diff)
	}
}

func testHotKeysOrder(t *testing.T, e *env) {
	l := e.acquire(t, "a", longTTL)
	at := func(key string, ms int) *statestore.Record {
		return &statestore.Record{Key: key, Version: 1, LastAccess: base.Add(time.Duration(ms) * time.Millisecond)}
	}
	e.flush(t, l, at("c", 30), at("a", 10), at("e", 50), at("b", 20), at("d", 40))

	for _, tc := range []struct {
		n    int
		want []string
	}{
		{n: 10, want: []string{"e", "d", "c", "b", "a"}},
		{n: 2, want: []string{"e", "d"}},
		{n: 0, want: nil},
		{n: -1, want: nil},
	} {
		if diff := cmp.Diff(tc.want, e.hot(t, tc.n), cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("HotKeys(%d) (-want +got):\n%s", tc.n, diff)
		}
	}
	// Touching a cold key makes it the hottest.
	e.flush(t, l, at("a", 60))
	if diff := cmp.Diff([]string{"a", "e"}, e.hot(t, 2)); diff != "" {
		t.Errorf("HotKeys after touching a (-want +got):\n%s", diff)
	}
}

func testHotSetTrim(t *testing.T, e *env) {
	l := e.acquire(t, "a", longTTL)
	const n = HotSetSize + 20
	var recs []*statestore.Record
	var want []string
	for i := range n {
		key := fmt.Sprintf("k%03d", i)
		recs = append(recs, &statestore.Record{Key: key, Version: 1, LastAccess: base.Add(time.Duration(i) * time.Second)})
		if i >= n-HotSetSize {
			want = append([]string{key}, want...)
		}
	}
	e.flush(t, l, recs...)
	if diff := cmp.Diff(want, e.hot(t, 10*n)); diff != "" {
		t.Errorf("HotKeys after writing %d keys with a cap of %d (-want +got):\n%s", n, HotSetSize, diff)
	}
	// Trimming the index never deletes the records.
	if got := e.load(t, "k000"); got["k000"] == nil {
		t.Error("the record of a key trimmed from the hot set is gone")
	}
}

func testLastAccessDefault(t *testing.T, e *env) {
	l := e.acquire(t, "a", longTTL)
	e.flush(t, l, &statestore.Record{Key: "old", Version: 1, LastAccess: base})
	e.flush(t, l, &statestore.Record{Key: "k", Version: 1, State: []byte("x")})
	got := e.load(t, "k")["k"]
	if got == nil || got.LastAccess.IsZero() {
		t.Fatalf("Load = %+v, want a record with LastAccess set by the store", got)
	}
	if !got.LastAccess.After(base) {
		t.Errorf("LastAccess = %v, want the store's time of the write (after %v)", got.LastAccess, base)
	}
	if diff := cmp.Diff([]string{"k", "old"}, e.hot(t, 10)); diff != "" {
		t.Errorf("HotKeys (-want +got):\n%s", diff)
	}
}

func testLoadMissing(t *testing.T, e *env) {
	l := e.acquire(t, "a", longTTL)
	e.flush(t, l, rec("here", 1, "x"))
	for _, tc := range []struct {
		keys []string
		want []string
	}{
		{keys: nil, want: nil},
		{keys: []string{"nope"}, want: nil},
		{keys: []string{"nope", "here", "also-not"}, want: []string{"here"}},
	} {
		got, err := e.s.Load(e.ctx, e.slot, tc.keys)
		if err != nil {
			t.Fatalf("Load(%v): %v", tc.keys, err)
		}
		if got == nil {
			t.Errorf("Load(%v) = nil map, want an empty one", tc.keys)
		}
		var keys []string
		for k := range got {
			keys = append(keys, k)
		}
		if diff := cmp.Diff(tc.want, keys, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("Load(%v) keys (-want +got):\n%s", tc.keys, diff)
		}
	}
}

func testSlotsIsolated(t *testing.T, e *env) {
	l := e.acquire(t, "a", longTTL)
	e.flush(t, l, rec("k", 1, "slot 7"))
	other := statestore.SlotRef{Space: e.space, Slot: 8}
	ol, err := e.s.Acquire(e.ctx, other, "b", "", longTTL)
	if err != nil {
		t.Fatalf("Acquire of another slot: %v", err)
	}
	if ol.Epoch != 1 {
		t.Errorf("other slot's epoch = %d, want 1 (epochs are per slot)", ol.Epoch)
	}
	if got, err := e.s.Load(e.ctx, other, []string{"k"}); err != nil || len(got) != 0 {
		t.Errorf("Load of k in slot 8 = %v, %v; want nothing (it was written to slot 7)", got, err)
	}
	if got, err := e.s.HotKeys(e.ctx, other, 10); err != nil || len(got) != 0 {
		t.Errorf("HotKeys of slot 8 = %v, %v; want none", got, err)
	}
}

func testRoundTrip5000(t *testing.T, e *env) {
	l := e.acquire(t, "a", longTTL)
	rng := rand.New(rand.NewSource(1))
	const n = 5000
	want := make(map[string]*statestore.Record, n)
	recs := make([]*statestore.Record, 0, n)
	keys := make([]string, 0, n)
	for i := range n {
		state := make([]byte, 1+rng.Intn(300))
		rng.Read(state)
		r := &statestore.Record{
			Key:        fmt.Sprintf("entity-%05d", i),
			Version:    uint64(rng.Int63()),
			State:      state,
			LastAccess: base.Add(time.Duration(rng.Intn(1e6)) * time.Millisecond),
		}
		if i%3 == 0 {
			r.Dedup = []statestore.DedupEntry{{Source: "/src", ID: fmt.Sprint(i), Outcome: state[:1]}}
		}
		recs = append(recs, r)
		keys = append(keys, r.Key)
		want[r.Key] = r
	}
	if res := e.flush(t, l, recs...); len(res.Rejected) != 0 {
		t.Fatalf("Flush rejected %d records of a fresh slot", len(res.Rejected))
	}
	got := e.load(t, keys...)
	if len(got) != n {
		t.Fatalf("Load returned %d of %d records", len(got), n)
	}
	// cmp.Diff of the whole map takes seconds under -race; diff only the
	// records that differ.
	bad := 0
	for k, w := range want {
		g := got[k]
		if g != nil && g.Version == w.Version && bytes.Equal(g.State, w.State) && g.LastAccess.Equal(w.LastAccess) && len(g.Dedup) == len(w.Dedup) &&
			(len(w.Dedup) == 0 || g.Dedup[0].ID == w.Dedup[0].ID && bytes.Equal(g.Dedup[0].Outcome, w.Dedup[0].Outcome)) {
			continue
		}
		if bad++; bad <= 3 {
			t.Errorf("Load after Flush of %d records: %s (-want +got):\n%s", n, k, cmp.Diff(w, g, recordOpts))
		}
	}
	if hot := e.hot(t, n); len(hot) != HotSetSize {
		t.Errorf("hot set holds %d keys, want the cap %d", len(hot), HotSetSize)
	}
}

func testDedupAndBinary(t *testing.T, e *env) {
	l := e.acquire(t, "a", longTTL)
	want := map[string]*statestore.Record{
		"dedup": {Key: "dedup", Version: 1, LastAccess: base, State: []byte(`{"n":1}`), Dedup: []statestore.DedupEntry{
			{Source: "/orders", ID: "1", Outcome: []byte{0, 1, 2, 255}},
			{Source: "urn:x", ID: "ünïcode", Outcome: []byte("ok")},
			{Source: "/orders", ID: "3"},
		}},
		"{braces}:and:colons/é": {Key: "{braces}:and:colons/é", Version: 2, LastAccess: base, State: []byte{0, '\r', '\n', 0xff}},
		"empty-state":           {Key: "empty-state", Version: 3, LastAccess: base},
	}
	var recs []*statestore.Record
	var keys []string
	for k, r := range want {
		recs = append(recs, r)
		keys = append(keys, k)
	}
	e.flush(t, l, recs...)
	got := e.load(t, keys...)
	if diff := cmp.Diff(want, got, recordOpts); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	// Load must not alias: changing what it returned changes nothing stored.
	got["dedup"].Dedup[0].Outcome[0] = 42
	if again := e.load(t, "dedup"); !bytes.Equal(again["dedup"].Dedup[0].Outcome, []byte{0, 1, 2, 255}) {
		t.Error("changing a loaded record changed the stored one")
	}
}

func testMarkers(t *testing.T, e *env) {
	id, created, err := e.s.EnsureMarker(e.ctx, e.space)
	if err != nil || !created || id == "" {
		t.Fatalf("first EnsureMarker = %q, %v, %v; want a new id, created", id, created, err)
	}
	again, created, err := e.s.EnsureMarker(e.ctx, e.space)
	if err != nil || created || again != id {
		t.Fatalf("second EnsureMarker = %q, %v, %v; want %q, not created", again, created, err, id)
	}
	if err := e.s.CheckMarker(e.ctx, e.space, id); err != nil {
		t.Errorf("CheckMarker(own id): %v", err)
	}
	other := e.space + "-other"
	for _, tc := range []struct{ space, id string }{{e.space, "not-the-id"}, {other, id}} {
		if err := e.s.CheckMarker(e.ctx, tc.space, tc.id); !errors.Is(err, statestore.ErrStoreReset) {
			t.Errorf("CheckMarker(%s, %s) = %v, want ErrStoreReset", tc.space, tc.id, err)
		}
	}
	oid, created, err := e.s.EnsureMarker(e.ctx, other)
	if err != nil || !created || oid == id {
		t.Errorf("EnsureMarker of another space = %q, %v, %v; want its own new id", oid, created, err)
	}
}

// receive waits for the next request on ch, repeating send while it waits,
// as an asker does (pub/sub may drop a request sent before delivery works).
func receive(t *testing.T, ch <-chan statestore.HandoffRequest, send func()) statestore.HandoffRequest {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		send()
		select {
		case req, ok := <-ch:
			if !ok {
				t.Fatal("handoff channel closed while waiting")
			}
			return req
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("no handoff request within %v", waitFor)
		}
	}
}

func waitClosed(t *testing.T, ch <-chan statestore.HandoffRequest) {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatalf("handoff channel not closed within %v", waitFor)
		}
	}
}

func testHandoff(t *testing.T, e *env) {
	holder, other := e.space+"/pod-a", e.space+"/pod-b"
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	ch, err := e.s.WatchHandoffs(ctx, holder)
	if err != nil {
		t.Fatalf("WatchHandoffs: %v", err)
	}
	forOther := statestore.HandoffRequest{Slot: e.slot, Asker: "x", AskerAddr: "x:1"}
	want := statestore.HandoffRequest{Slot: e.slot, Asker: "pod-c", AskerAddr: "10.0.0.3:8080"}
	got := receive(t, ch, func() {
		// A request for another holder, sent first, must not arrive here.
		if err := e.s.RequestHandoff(e.ctx, forOther, other); err != nil {
			t.Fatalf("RequestHandoff to %s: %v", other, err)
		}
		if err := e.s.RequestHandoff(e.ctx, want, holder); err != nil {
			t.Fatalf("RequestHandoff to %s: %v", holder, err)
		}
	})
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("handoff request (-want +got):\n%s", diff)
	}
	cancel()
	waitClosed(t, ch)
}

// AcquireWith takes the lease as Acquire does. With Load it reads the keys
// as Load does, once the lease is the caller's, and only if granted: a held
// slot gives a HeldError and no records (nil); a free one the lease and the
// records written before it, absent keys absent. With AskHolder a refusal also sends the
// holder the caller's handoff request, as RequestHandoff does; without it,
// or when the lease is granted, nothing is sent. So of the calls below only
// the refused one with AskHolder reaches a's watcher, and a marker sent
// last is the next message there (the store handles the calls in order,
// and a subscriber gets messages in the order they were published).
func testAcquireWith(t *testing.T, e *env) {
	holder := e.space + "/pod-a"
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	watch, err := e.s.WatchHandoffs(ctx, holder)
	if err != nil {
		t.Fatalf("WatchHandoffs: %v", err)
	}
	a, err := e.s.Acquire(e.ctx, e.slot, holder, "a:1", longTTL)
	if err != nil {
		t.Fatal(err)
	}
	// j has a dedup list, so the records come back decoded in full, each
	// under its own key whatever the order of Load.
	j := rec("j", 5, "five")
	j.Dedup = []statestore.DedupEntry{{Source: "src", ID: "ev-1", Outcome: []byte("ok")}}
	e.flush(t, a, rec("k", 3, "three"), rec("gone", 1, "x"), j)
	e.flush(t, a, &statestore.Record{Key: "gone", Version: 2, Deleted: true})
	for _, ask := range []bool{false, true} {
		_, recs, err := e.s.AcquireWith(e.ctx, e.slot, "b", "b:1", longTTL, statestore.AcquireOptions{Load: []string{"k"}, AskHolder: ask})
		var he *statestore.HeldError
		if !errors.As(err, &he) || he.Lease != a {
			t.Fatalf("AcquireWith (ask %v) of a's live lease: %v, want a HeldError with %+v", ask, err, a)
		}
		if recs != nil {
			t.Errorf("a refused AcquireWith returned records %v", recs)
		}
	}
	select {
	case got := <-watch:
		want := statestore.HandoffRequest{Slot: e.slot, Asker: "b", AskerAddr: "b:1"}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("handoff request sent by AcquireWith (-want +got):\n%s", diff)
		}
	case <-time.After(waitFor):
		t.Fatalf("no handoff request within %v", waitFor)
	}
	if err := e.s.Release(e.ctx, a); err != nil {
		t.Fatal(err)
	}
	l, recs, err := e.s.AcquireWith(e.ctx, e.slot, "b", "b:1", longTTL, statestore.AcquireOptions{Load: []string{"never", "k", "gone", "j"}, AskHolder: true})
	if err != nil {
		t.Fatalf("AcquireWith of a free slot: %v", err)
	}
	want := statestore.Lease{Slot: e.slot, Holder: "b", Addr: "b:1", Epoch: a.Epoch + 1}
	if diff := cmp.Diff(want, l, cmpopts.IgnoreFields(statestore.Lease{}, "Acquired", "Expires")); diff != "" {
		t.Errorf("AcquireWith lease (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(l, e.current(t)); diff != "" {
		t.Errorf("Current after AcquireWith (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]*statestore.Record{"k": rec("k", 3, "three"), "j": j}, recs, recordOpts); diff != "" {
		t.Errorf("AcquireWith records (-want +got):\n%s", diff)
	}
	// With no options it is Acquire: our own lease again, at the next epoch.
	again, recs, err := e.s.AcquireWith(e.ctx, e.slot, "b", "b:1", longTTL, statestore.AcquireOptions{})
	if err != nil || again.Epoch != l.Epoch+1 || len(recs) != 0 {
		t.Errorf("AcquireWith without options = %+v, %v, %v; want b's lease at epoch %d", again, recs, err, l.Epoch+1)
	}
	// The last message on a's channel marks the end: nothing else came.
	end := statestore.HandoffRequest{Slot: e.slot, Asker: "end"}
	if err := e.s.RequestHandoff(e.ctx, end, holder); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-watch:
		if diff := cmp.Diff(end, got); diff != "" {
			t.Errorf("a's watcher got more than one request from AcquireWith (-want +got):\n%s", diff)
		}
	case <-time.After(waitFor):
		t.Fatalf("no handoff request within %v", waitFor)
	}
}

// ReleaseFor frees the lease like Release and, when it did, tells the
// asker on its WatchHandoffs channel, marked Released; a request to the
// same watcher is not marked. A stale ReleaseFor frees nothing and sends
// nothing: of two calls, the stale one first, the watcher's first message
// is the second's (the store handles them in order, and a subscriber gets
// messages in the order they were published).
func testReleaseFor(t *testing.T, e *env) {
	asker := e.space + "/pod-b"
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	ch, err := e.s.WatchHandoffs(ctx, asker)
	if err != nil {
		t.Fatalf("WatchHandoffs: %v", err)
	}
	next := func() statestore.HandoffRequest {
		t.Helper()
		select {
		case req, ok := <-ch:
			if !ok {
				t.Fatal("handoff channel closed while waiting")
			}
			return req
		case <-time.After(waitFor):
			t.Fatalf("nothing delivered within %v", waitFor)
		}
		return statestore.HandoffRequest{}
	}
	a := e.acquire(t, "a", longTTL)
	stale := a
	stale.Epoch--
	if err := e.s.ReleaseFor(e.ctx, stale, statestore.HandoffRequest{Slot: e.slot, Asker: asker, AskerAddr: "stale"}); err != nil {
		t.Fatalf("ReleaseFor of a stale lease: %v, want nil", err)
	}
	if diff := cmp.Diff(a, e.current(t)); diff != "" {
		t.Fatalf("a stale ReleaseFor changed the lease (-want +got):\n%s", diff)
	}
	if err := e.s.ReleaseFor(e.ctx, a, statestore.HandoffRequest{Slot: e.slot, Asker: asker, AskerAddr: "b:1"}); err != nil {
		t.Fatalf("ReleaseFor: %v", err)
	}
	if diff := cmp.Diff(statestore.Lease{Slot: e.slot, Epoch: a.Epoch}, e.current(t)); diff != "" {
		t.Errorf("Current after ReleaseFor (-want +got):\n%s", diff)
	}
	want := statestore.HandoffRequest{Slot: e.slot, Asker: asker, AskerAddr: "b:1", Released: true}
	if diff := cmp.Diff(want, next()); diff != "" {
		t.Errorf("notice (-want +got):\n%s", diff)
	}
	if b := e.acquire(t, "b", longTTL); b.Epoch != a.Epoch+1 {
		t.Errorf("Acquire after ReleaseFor: epoch %d, want %d", b.Epoch, a.Epoch+1)
	}
	req := statestore.HandoffRequest{Slot: e.slot, Asker: "pod-c", AskerAddr: "c:1"}
	if err := e.s.RequestHandoff(e.ctx, req, asker); err != nil {
		t.Fatalf("RequestHandoff: %v", err)
	}
	if diff := cmp.Diff(req, next()); diff != "" {
		t.Errorf("request after the notice (-want +got):\n%s", diff)
	}
}

func testInvalidArguments(t *testing.T, e *env) {
	l := e.acquire(t, "a", longTTL)
	noHolder := l
	noHolder.Holder = ""
	tests := []struct {
		name string
		call func() error
		want string // in the error message
	}{
		{"empty holder", func() error { _, err := e.s.Acquire(e.ctx, e.slot, "", "", longTTL); return err }, "holder"},
		{"zero ttl", func() error { _, err := e.s.Acquire(e.ctx, e.slot, "a", "", 0); return err }, "ttl"},
		{"sub-millisecond ttl", func() error { _, err := e.s.Renew(e.ctx, l, time.Microsecond); return err }, "ttl"},
		{"empty space", func() error { _, err := e.s.Load(e.ctx, statestore.SlotRef{}, []string{"k"}); return err }, "space"},
		{"brace in space", func() error {
			_, err := e.s.HotKeys(e.ctx, statestore.SlotRef{Space: "ns/a}b"}, 1)
			return err
		}, "ns/a}b"},
		{"nil record", func() error { _, err := e.s.Flush(e.ctx, l, []*statestore.Record{nil}); return err }, "record 0"},
		{"empty key", func() error {
			_, err := e.s.Flush(e.ctx, l, []*statestore.Record{rec("k", 1, ""), {Version: 1}})
			return err
		}, "record 1 has an empty key"},
		{"flush without holder", func() error { _, err := e.s.Flush(e.ctx, noHolder, nil); return err }, "holder"},
		{"handoff to nobody", func() error { return e.s.RequestHandoff(e.ctx, statestore.HandoffRequest{Slot: e.slot}, "") }, "holder"},
		{"release for nobody", func() error { return e.s.ReleaseFor(e.ctx, l, statestore.HandoffRequest{Slot: e.slot}) }, "asker"},
		{"LoadAll without a key list per slot", func() error {
			_, err := e.s.LoadAll(e.ctx, []statestore.SlotRef{e.slot, e.slot}, [][]string{{"k"}})
			return err
		}, "key lists"},
	}
	for _, tc := range tests {
		err := tc.call()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want an error mentioning %q", tc.name, err, tc.want)
		}
		if errors.Is(err, statestore.ErrUnavailable) || errors.Is(err, statestore.ErrFenced) {
			t.Errorf("%s: err = %v, want a plain argument error", tc.name, err)
		}
	}
	if got := e.load(t, "k"); len(got) != 0 {
		t.Errorf("a rejected Flush wrote %v", got)
	}
}

func testClosed(t *testing.T, e *env) {
	l := e.acquire(t, "a", longTTL)
	ch, err := e.s.WatchHandoffs(e.ctx, e.space+"/pod-a")
	if err != nil {
		t.Fatalf("WatchHandoffs: %v", err)
	}
	if err := e.s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	waitClosed(t, ch)
	calls := map[string]func() error{
		"Load":    func() error { _, err := e.s.Load(e.ctx, e.slot, []string{"k"}); return err },
		"Flush":   func() error { _, err := e.s.Flush(e.ctx, l, nil); return err },
		"HotKeys": func() error { _, err := e.s.HotKeys(e.ctx, e.slot, 1); return err },
		"Acquire": func() error { _, err := e.s.Acquire(e.ctx, e.slot, "a", "", longTTL); return err },
		"Renew":   func() error { _, err := e.s.Renew(e.ctx, l, longTTL); return err },
		"Release": func() error { return e.s.Release(e.ctx, l) },
		"ReleaseFor": func() error {
			return e.s.ReleaseFor(e.ctx, l, statestore.HandoffRequest{Slot: e.slot, Asker: "b"})
		},
		"RenewAll": func() error { _, errs := e.s.RenewAll(e.ctx, []statestore.Lease{l}, longTTL); return errs[0] },
		"AcquireAll": func() error {
			_, errs := e.s.AcquireAll(e.ctx, []statestore.SlotRef{e.slot}, "a", "", longTTL)
			return errs[0]
		},
		"ReleaseAll": func() error { return e.s.ReleaseAll(e.ctx, []statestore.Lease{l})[0] },
		"HotKeysAll": func() error { _, err := e.s.HotKeysAll(e.ctx, []statestore.SlotRef{e.slot}, 1); return err },
		"LoadAll": func() error {
			_, err := e.s.LoadAll(e.ctx, []statestore.SlotRef{e.slot}, [][]string{{"k"}})
			return err
		},
		"AcquireWith": func() error {
			_, _, err := e.s.AcquireWith(e.ctx, e.slot, "a", "", longTTL, statestore.AcquireOptions{Load: []string{"k"}})
			return err
		},
		"Current":        func() error { _, err := e.s.Current(e.ctx, e.slot); return err },
		"RequestHandoff": func() error { return e.s.RequestHandoff(e.ctx, statestore.HandoffRequest{Slot: e.slot}, "a") },
		"WatchHandoffs":  func() error { _, err := e.s.WatchHandoffs(e.ctx, "a"); return err },
		"EnsureMarker":   func() error { _, _, err := e.s.EnsureMarker(e.ctx, e.space); return err },
		"CheckMarker":    func() error { return e.s.CheckMarker(e.ctx, e.space, "x") },
		"Ping":           func() error { return e.s.Ping(e.ctx) },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, statestore.ErrClosed) {
			t.Errorf("%s after Close: err = %v, want ErrClosed", name, err)
		}
	}
	if err := e.s.Close(); err != nil {
		t.Errorf("second Close: %v, want nil", err)
	}
}
