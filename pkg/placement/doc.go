// Package placement decides which pod serves an entity key: key -> slot ->
// pod. The activator plugin, the agent, the controller and the CLI all call
// it, and every activator replica computes it on its own from its own view of
// the ready pods, so the answer must be a pure function of its inputs.
//
// # Key -> slot
//
// SlotOf(key, S) is xxHash64 (seed 0) of the key's UTF-8 bytes modulo S, the
// slot count of the entity space (DefaultSlots unless configured, at most
// MaxSlots). It is the one part of placement other languages must reproduce
// (docs/routing.md, "Keys and slots"). S is fixed for an entity space:
// changing it moves almost every key to another slot.
//
// # Slot -> pod
//
// A Table assigns every slot to one member (pod name) of a member set. Its
// invariants:
//
//   - Deterministic: New depends only on the set of names and S, not on their
//     order and not on earlier tables, so two activators that saw endpoints
//     arrive in different orders agree exactly.
//   - Load-bounded: no member owns more than max(ceil(S/N), floor(1.05*S/N))
//     slots. For S/N >= 20 (N <= 204 at the default 4096 slots) that is at
//     most 1.05 times the average.
//   - Complete: with at least one member every slot has an owner; with none,
//     Owner is "" and callers buffer.
//   - Immutable: a Table never changes after New and is safe to share.
//   - Cheap to read: Owner is one index, OwnerOfKey one hash and one index.
//
// # Algorithm
//
// Bounded-load rendezvous hashing over slots, solved as a stable assignment.
// Every (slot, member) pair has a rendezvous score (a 64-bit mix of the
// member's xxHash64 and the slot number); each member may hold at most the cap
// above. The table is the unique stable assignment for these scores: no slot
// and member would both rather be together than with what they have. Because
// slots and members rank pairs by the same score it equals the global greedy
// (take pairs from the best score down, give the slot to the member while the
// slot is free and the member below the cap), which does not depend on the
// order members or slots are visited; assign computes it by deferred
// acceptance over each slot's few best members.
//
// Why this one (measured in docs/routing.md, "Placement"):
//
//   - Plain rendezvous moves only what it must, but its load is a Poisson
//     draw: max/avg reaches 1.4-1.5 at N = 100 over 4096 slots.
//   - Maglev balances to one slot but reshuffles 2-4 times the ideal on a
//     join or leave at 41 slots per pod, and depends on member order unless
//     sorted first.
//   - Ring-based bounded loads (buraksezer/consistent) meet the cap but, at
//     the same cap, move about as much on a join and 3 times more on a leave
//     at N = 100, and take 0.5 s to rebuild at N = 1000.
//   - The stable assignment keeps rendezvous' movement where the cap does not
//     bind and meets the cap exactly. What it cannot avoid is the cascade the
//     issue warned about: when a member at its cap loses a slot it takes back
//     one it had refused, which moves a slot between two other pods, and so
//     on. At 4096 slots a join or leave moves at most 1.1 times the ideal up
//     to N = 10; beyond, the cascade grows to 1.4 times on average and about
//     2.7 times at worst near N = 100. The cascade shrinks with S/N (about
//     1.1 times at worst near N = 100 with 65536 slots) and with a looser cap.
//     DefaultSlots stays 4096 because 16 times more slots is 16 times more
//     leases, hot sets and handoff units in Redis and a 15 times slower
//     rebuild, while the extra moves only cost handoffs, never safety. The
//     leases are the constant cost: 65536 of them take 5.7% of a Redis core
//     to renew while the Service is idle, 4096 take 0.33%
//     (statestore's BenchmarkRenewAll; docs/routing.md, "Why 4096").
//
// # Compatibility
//
// The score function, the cap and the tie-breaks are part of the placement
// contract like SlotOf: components of one installation must run the same
// definition, or they will disagree on owners (safe, because slot leases
// decide who writes, but every disagreement is a handoff).
package placement
