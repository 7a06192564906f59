package statestore

import (
	"errors"
	"fmt"
	"time"
)

// ErrClosed: the Store was closed; every later call fails with it.
var ErrClosed = errors.New("statestore: store is closed")

// FencedError is returned (wrapping ErrFenced) by Flush and Renew when the
// slot's lease no longer names the caller's holder at the caller's epoch.
type FencedError struct {
	// Lease is the caller's lease, now stale.
	Lease Lease
	// Current is the slot's lease as stored: who took over (Holder is empty
	// when the lease was released and nobody took it since).
	Current Lease
}

func (e *FencedError) Error() string {
	now := fmt.Sprintf("not held (epoch %d)", e.Current.Epoch)
	if e.Current.Holder != "" {
		now = fmt.Sprintf("held by %s (%s) at epoch %d", e.Current.Holder, e.Current.Addr, e.Current.Epoch)
	}
	return fmt.Sprintf("slot %s: lease of %s at epoch %d is fenced: the slot is now %s",
		e.Lease.Slot, e.Lease.Holder, e.Lease.Epoch, now)
}

func (e *FencedError) Unwrap() error { return ErrFenced }

// validateSpace rejects spaces that would break the key layout: a '}' would
// end the Redis Cluster hash tag early and put the slots of a space in one
// cluster slot (and a '{' makes the tag hard to read back).
func validateSpace(space string) error {
	if space == "" {
		return errors.New("statestore: entity space is empty, want \"<namespace>/<name>\"")
	}
	for _, c := range space {
		if c == '{' || c == '}' {
			return fmt.Errorf("statestore: entity space %q contains %q; braces are reserved for the Redis Cluster hash tag", space, c)
		}
	}
	return nil
}

func validateLease(l Lease) error {
	if err := validateSpace(l.Slot.Space); err != nil {
		return err
	}
	if l.Holder == "" {
		return fmt.Errorf("statestore: lease of slot %s has an empty holder", l.Slot)
	}
	return nil
}

// validateTTL checks the arguments of Acquire and Renew (op names which).
func validateTTL(op string, slot SlotRef, holder string, ttl time.Duration) error {
	if err := validateSpace(slot.Space); err != nil {
		return err
	}
	if holder == "" {
		return fmt.Errorf("statestore: %s slot %s: holder is empty, want the agent's pod name", op, slot)
	}
	if ttl < time.Millisecond {
		return fmt.Errorf("statestore: %s slot %s: ttl is %v, want at least 1ms (the store counts milliseconds)", op, slot, ttl)
	}
	return nil
}

func validateRecords(slot SlotRef, records []*Record) error {
	for i, r := range records {
		if r == nil {
			return fmt.Errorf("statestore: flush slot %s: record %d is nil", slot, i)
		}
		if r.Key == "" {
			return fmt.Errorf("statestore: flush slot %s: record %d has an empty key", slot, i)
		}
	}
	return nil
}
