package affinity

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kstate-dev/kstate/pkg/placement"
)

// testTimeout bounds every wait on a condition in these tests.
const testTimeout = 10 * time.Second

func pods(names ...string) []Pod {
	out := make([]Pod, len(names))
	for i, n := range names {
		out[i] = Pod{Name: n, Addr: "10.0.0." + fmt.Sprint(i+1) + ":8012"}
	}
	return out
}

func mustRouter(t testing.TB, opts Options, ps []Pod) *Router {
	t.Helper()
	r, err := NewRouter(opts)
	if err != nil {
		t.Fatal("NewRouter:", err)
	}
	if _, err := r.Update(ps); err != nil {
		t.Fatal("Update:", err)
	}
	return r
}

// eventually polls cond until it holds or testTimeout passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", testTimeout, what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestNewRouterOptions(t *testing.T) {
	tests := []struct {
		name      string
		opts      Options
		wantSlots int
		wantErr   bool
	}{
		{name: "defaults", opts: Options{}, wantSlots: placement.DefaultSlots},
		{name: "slots", opts: Options{Slots: 64, Concurrency: 3}, wantSlots: 64},
		{name: "too many slots", opts: Options{Slots: placement.MaxSlots + 1}, wantErr: true},
		{name: "negative concurrency", opts: Options{Concurrency: -1}, wantErr: true},
		{name: "negative queue", opts: Options{QueueDepth: -1}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewRouter(tc.opts)
			if (err != nil) != tc.wantErr {
				t.Fatalf("NewRouter(%+v) error = %v, want error %v", tc.opts, err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if r.Slots() != tc.wantSlots {
				t.Errorf("Slots() = %d, want %d", r.Slots(), tc.wantSlots)
			}
			if _, _, ok := r.Pick("k"); ok {
				t.Error("Pick on a new router found a pod")
			}
		})
	}
}

func TestUpdate(t *testing.T) {
	tests := []struct {
		name        string
		first, next []Pod
		wantChanged bool
		wantErr     bool
	}{
		{name: "same set, other order", first: pods("a", "b", "c"), next: []Pod{pods("a", "b", "c")[2], pods("a", "b", "c")[0], pods("a", "b", "c")[1]}},
		{name: "join", first: pods("a", "b"), next: pods("a", "b", "c"), wantChanged: true},
		{name: "address change", first: pods("a"), next: []Pod{{Name: "a", Addr: "10.9.9.9:8012"}}, wantChanged: true},
		{name: "to empty", first: pods("a"), next: nil, wantChanged: true},
		{name: "no name", first: pods("a"), next: []Pod{{Addr: "10.0.0.1:1"}}, wantErr: true},
		{name: "no address", first: pods("a"), next: []Pod{{Name: "a"}}, wantErr: true},
		{name: "twice", first: pods("a"), next: []Pod{{Name: "a", Addr: "1:1"}, {Name: "a", Addr: "2:2"}}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := mustRouter(t, Options{Slots: 64}, tc.first)
			before := r.Table()
			changed, err := r.Update(tc.next)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Update() error = %v, want error %v", err, tc.wantErr)
			}
			if changed != tc.wantChanged {
				t.Errorf("Update() changed = %v, want %v", changed, tc.wantChanged)
			}
			if !tc.wantChanged && r.Table() != before {
				t.Error("Update() replaced the table without a change")
			}
		})
	}
}

// TestPickFollowsPlacement: the router's decision is placement's OwnerOfKey
// over the pod names, and the address is the pod's.
func TestPickFollowsPlacement(t *testing.T) {
	ps := pods("a", "b", "c", "d", "e")
	r := mustRouter(t, Options{}, ps)
	names := []string{"a", "b", "c", "d", "e"}
	table, err := placement.New(names, placement.DefaultSlots)
	if err != nil {
		t.Fatal(err)
	}
	addr := map[string]string{}
	for _, p := range ps {
		addr[p.Name] = p.Addr
	}
	for i := 0; i < 1000; i++ {
		key := fmt.Sprintf("key-%d", i)
		slot, owner, ok := r.Pick(key)
		wantSlot, wantOwner := table.OwnerOfKey(key)
		if !ok || slot != wantSlot || owner != (Pod{Name: wantOwner, Addr: addr[wantOwner]}) {
			t.Fatalf("Pick(%q) = %d, %+v, %v; want %d, %s at %s", key, slot, owner, ok, wantSlot, wantOwner, addr[wantOwner])
		}
	}
}

// TestOrderIndependence: routers fed the same final set through different
// update sequences agree on every slot.
func TestOrderIndependence(t *testing.T) {
	all := pods("p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7")
	rnd := rand.New(rand.NewSource(7))
	var routers []*Router
	for i := 0; i < 4; i++ {
		r := mustRouter(t, Options{Slots: 512}, nil)
		order := rnd.Perm(len(all))
		var cur []Pod
		for _, j := range order {
			cur = append(cur, all[j])
			if _, err := r.Update(cur); err != nil {
				t.Fatal(err)
			}
		}
		routers = append(routers, r)
	}
	for s := 0; s < 512; s++ {
		want := routers[0].Table().Owner(uint32(s))
		for i, r := range routers[1:] {
			if got := r.Table().Owner(uint32(s)); got != want {
				t.Fatalf("slot %d: router %d says %s, router 0 says %s", s, i+1, got, want)
			}
		}
	}
}

func TestAcquireBuffersAtZero(t *testing.T) {
	r := mustRouter(t, Options{}, nil)
	const n = 20
	type result struct {
		addr string
		err  error
	}
	results := make(chan result, n)
	for i := 0; i < n; i++ {
		go func() {
			tk, err := r.Acquire(context.Background(), fmt.Sprintf("k%d", i))
			results <- result{tk.Addr(), err}
			tk.Release()
		}()
	}
	eventually(t, "all requests to wait for a pod", func() bool { return r.Waiting() == n })
	select {
	case res := <-results:
		t.Fatalf("Acquire returned %+v with no ready pod", res)
	default:
	}
	if _, err := r.Update(pods("a")); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		res := <-results
		if res.err != nil || res.addr != "10.0.0.1:8012" {
			t.Errorf("Acquire after the pod appeared = %q, %v; want 10.0.0.1:8012", res.addr, res.err)
		}
	}
	if got := r.Waiting(); got != 0 {
		t.Errorf("Waiting() = %d after the pod appeared, want 0", got)
	}
}

func TestAcquireAtZeroEndsWithContext(t *testing.T) {
	r := mustRouter(t, Options{}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 1)
	go func() {
		_, err := r.Acquire(ctx, "k")
		errs <- err
	}()
	eventually(t, "the request to wait", func() bool { return r.Waiting() == 1 })
	cancel()
	err := <-errs
	if !errors.Is(err, ErrNoReadyPod) || !errors.Is(err, context.Canceled) {
		t.Errorf("Acquire error = %v, want ErrNoReadyPod wrapping context.Canceled", err)
	}
}

func TestConcurrencyLimitAndQueue(t *testing.T) {
	r := mustRouter(t, Options{Concurrency: 1, QueueDepth: 1}, pods("a"))
	first, err := r.Acquire(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	second := make(chan error, 1)
	go func() {
		tk, err := r.Acquire(context.Background(), "k")
		second <- err
		tk.Release()
	}()
	eventually(t, "the second request to queue", func() bool { return r.InFlight("a") == 2 })
	// The queue (1) is full: a third request is refused at once.
	if _, err := r.Acquire(context.Background(), "k"); !errors.Is(err, ErrQueueFull) {
		t.Errorf("third Acquire error = %v, want ErrQueueFull", err)
	}
	select {
	case err := <-second:
		t.Fatalf("second Acquire returned (%v) while the pod was full", err)
	default:
	}
	first.Release()
	if err := <-second; err != nil {
		t.Errorf("second Acquire = %v after a release", err)
	}
	eventually(t, "the places to be given back", func() bool { return r.InFlight("a") == 0 })
}

// TestOwnerLeavesWhileQueued: a request queued at a full pod that leaves the
// ready set routes again to the key's new owner; the request in flight keeps
// its place until it ends.
func TestOwnerLeavesWhileQueued(t *testing.T) {
	r := mustRouter(t, Options{Slots: 64, Concurrency: 1}, pods("a", "b"))
	key := keyOwnedBy(t, r, "a")
	held, err := r.Acquire(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	queued := make(chan Ticket, 1)
	go func() {
		tk, err := r.Acquire(context.Background(), key)
		if err != nil {
			t.Error("queued Acquire:", err)
		}
		queued <- tk
	}()
	eventually(t, "the second request to queue at a", func() bool { return r.InFlight("a") == 2 })
	if _, err := r.Update([]Pod{pods("a", "b")[1]}); err != nil {
		t.Fatal(err)
	}
	tk := <-queued
	if tk.PodName() != "b" {
		t.Errorf("queued request went to %q after a left, want b", tk.PodName())
	}
	tk.Release()
	if held.PodName() != "a" {
		t.Errorf("in-flight ticket is at %q, want a", held.PodName())
	}
	held.Release() // must not block or panic after a left
}

func TestClose(t *testing.T) {
	r := mustRouter(t, Options{}, nil)
	errs := make(chan error, 1)
	go func() {
		_, err := r.Acquire(context.Background(), "k")
		errs <- err
	}()
	eventually(t, "the request to wait", func() bool { return r.Waiting() == 1 })
	r.Close()
	if err := <-errs; !errors.Is(err, ErrClosed) {
		t.Errorf("Acquire after Close = %v, want ErrClosed", err)
	}
	if _, err := r.Update(pods("a")); !errors.Is(err, ErrClosed) {
		t.Errorf("Update after Close = %v, want ErrClosed", err)
	}
	r.Close() // idempotent
}

// TestAcquireConcurrentWithUpdates runs requests against a router whose pod
// set changes under them; with -race it checks the view handover.
func TestAcquireConcurrentWithUpdates(t *testing.T) {
	all := pods("a", "b", "c", "d")
	r := mustRouter(t, Options{Slots: 128, Concurrency: 2}, all)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				tk, err := r.Acquire(ctx, fmt.Sprintf("k%d", i))
				if err != nil {
					t.Error("Acquire:", err)
					return
				}
				tk.Release()
			}
		}()
	}
	for i := 0; i < 200; i++ {
		if _, err := r.Update(all[:1+i%len(all)]); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	for _, p := range all {
		if n := r.InFlight(p.Name); n != 0 {
			t.Errorf("InFlight(%s) = %d after all requests ended, want 0", p.Name, n)
		}
	}
}

// keyOwnedBy returns a key the router sends to pod name.
func keyOwnedBy(t testing.TB, r *Router, name string) string {
	t.Helper()
	for i := 0; i < 100000; i++ {
		key := fmt.Sprintf("key-%d", i)
		if _, p, ok := r.Pick(key); ok && p.Name == name {
			return key
		}
	}
	t.Fatalf("no key owned by %s", name)
	return ""
}

func TestPods(t *testing.T) {
	r := mustRouter(t, Options{}, []Pod{{Name: "b", Addr: "2:2"}, {Name: "a", Addr: "1:1"}})
	want := []Pod{{Name: "a", Addr: "1:1"}, {Name: "b", Addr: "2:2"}}
	if diff := cmp.Diff(want, r.Pods()); diff != "" {
		t.Errorf("Pods() (-want,+got):\n%s", diff)
	}
}
