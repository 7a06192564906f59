package agent

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// Waiters must get the key in the order they arrived, one at a time.
func TestMailboxOrder(t *testing.T) {
	var mb mailbox
	ctx := context.Background()
	if err := mb.lock(ctx, 100); err != nil {
		t.Fatal(err)
	}
	const n = 50
	var (
		mu    sync.Mutex
		order []int
		wg    sync.WaitGroup
		inUse int
	)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if err := mb.lock(ctx, 100); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			inUse++
			if inUse != 1 {
				t.Errorf("%d holders at once", inUse)
			}
			order = append(order, i)
			inUse--
			mu.Unlock()
			mb.unlock()
		}(i)
		// Wait until goroutine i is queued so arrival order is known.
		waitFor(t, func() bool { mb.mu.Lock(); defer mb.mu.Unlock(); return len(mb.waiters) == i+1 })
	}
	mb.unlock()
	wg.Wait()
	want := make([]int, n)
	for i := range want {
		want[i] = i
	}
	if diff := cmp.Diff(want, order); diff != "" {
		t.Errorf("order (-want +got):\n%s", diff)
	}
}

func TestMailboxBound(t *testing.T) {
	var mb mailbox
	ctx := context.Background()
	mb.lock(ctx, 1)
	done := make(chan error)
	go func() { done <- mb.lock(ctx, 1) }()
	waitFor(t, func() bool { mb.mu.Lock(); defer mb.mu.Unlock(); return len(mb.waiters) == 1 })
	if err := mb.lock(ctx, 1); !errors.Is(err, errMailboxFull) {
		t.Fatalf("third lock: got %v, want errMailboxFull", err)
	}
	mb.unlock()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mb.unlock()
	if mb.busy {
		t.Error("mailbox still busy after the last unlock")
	}
}

// A waiter that gives up must not keep the key locked, even when the lock
// was handed to it at the moment it gave up.
func TestMailboxCancel(t *testing.T) {
	var mb mailbox
	mb.lock(context.Background(), 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- mb.lock(ctx, 10) }()
	waitFor(t, func() bool { mb.mu.Lock(); defer mb.mu.Unlock(); return len(mb.waiters) == 1 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	mb.unlock()
	if err := mb.lock(context.Background(), 10); err != nil {
		t.Fatalf("lock after a cancelled waiter: %v", err)
	}
}

// waitFor polls cond until it holds or 10s pass.
func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}
