package statestore_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kstate-dev/kstate/statestore"
	"github.com/kstate-dev/kstate/statestore/storetest"
)

// memoryHarness gives each test its own store and fake clock.
type memoryHarness struct {
	mu     sync.Mutex
	clocks map[*testing.T]*clocktesting.FakePassiveClock
}

func (h *memoryHarness) New(t *testing.T) statestore.Store {
	clk := clocktesting.NewFakePassiveClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	h.mu.Lock()
	h.clocks[t] = clk
	h.mu.Unlock()
	m := statestore.NewMemory(clk)
	m.SetHotSetSize(storetest.HotSetSize)
	t.Cleanup(func() { m.Close() })
	return m
}

func (h *memoryHarness) Advance(t *testing.T, d time.Duration) {
	h.mu.Lock()
	clk := h.clocks[t]
	h.mu.Unlock()
	clk.SetTime(clk.Now().Add(d))
}

func TestMemoryContract(t *testing.T) {
	storetest.Run(t, &memoryHarness{clocks: map[*testing.T]*clocktesting.FakePassiveClock{}})
}

func TestMemoryReset(t *testing.T) {
	ctx := context.Background()
	m := statestore.NewMemory(clocktesting.NewFakePassiveClock(time.Now()))
	id, _, err := m.EnsureMarker(ctx, "ns/svc")
	if err != nil {
		t.Fatalf("EnsureMarker: %v", err)
	}
	slot := statestore.SlotRef{Space: "ns/svc", Slot: 1}
	l, err := m.Acquire(ctx, slot, "a", "", time.Minute)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	m.Reset()
	if err := m.CheckMarker(ctx, "ns/svc", id); !errors.Is(err, statestore.ErrStoreReset) {
		t.Errorf("CheckMarker after Reset: %v, want ErrStoreReset", err)
	}
	if _, err := m.Flush(ctx, l, nil); !errors.Is(err, statestore.ErrFenced) {
		t.Errorf("Flush after Reset: %v, want ErrFenced", err)
	}
}

// TestMemoryExpiryBoundary pins the boundary the Redis scripts use: a lease
// is live while expires > now, in milliseconds.
func TestMemoryExpiryBoundary(t *testing.T) {
	ctx := context.Background()
	clk := clocktesting.NewFakePassiveClock(time.UnixMilli(1_000_000))
	m := statestore.NewMemory(clk)
	slot := statestore.SlotRef{Space: "ns/svc", Slot: 1}
	if _, err := m.Acquire(ctx, slot, "a", "", time.Second); err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	clk.SetTime(time.UnixMilli(1_000_999))
	if _, err := m.Acquire(ctx, slot, "b", "", time.Second); !errors.Is(err, statestore.ErrLeaseHeld) {
		t.Fatalf("Acquire 1ms before expiry: err = %v, want ErrLeaseHeld", err)
	}
	clk.SetTime(time.UnixMilli(1_001_000))
	if l, err := m.Acquire(ctx, slot, "b", "", time.Second); err != nil || l.Epoch != 2 {
		t.Fatalf("Acquire at expiry = %+v, %v; want epoch 2", l, err)
	}
}
