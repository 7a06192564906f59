// Package statestore owns kstate's durable state: versioned entity records,
// per-slot leases with fencing epochs, the per-slot hot-set index and the
// store marker used to detect a reset.
//
// Invariants every implementation keeps (the contract suite in
// statestore/storetest checks them against Redis and the memory store):
//
//   - A slot's epoch never decreases, not even across Release. Acquire of a
//     free or expired lease sets epoch = previous epoch + 1.
//   - Flush writes a batch for one slot atomically, and only while the slot's
//     lease still names the flushing holder at the flushing epoch. Otherwise
//     nothing is written and ErrFenced is returned: a late writer is rejected,
//     never merged.
//   - Within an accepted batch, a record whose version is lower than the
//     stored one is not written and is reported in FlushResult.Rejected.
//   - Lease expiry is judged by the store's clock (Redis TIME), so agents'
//     clock skew cannot make two holders.
//   - Every key of one slot shares one Redis Cluster hash tag
//     ({<space>/<slot>}), so each per-slot script touches one cluster slot.
package statestore
