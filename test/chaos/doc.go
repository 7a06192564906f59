// Package chaos is kstate's reliability suite: a fleet of real kstate-agent
// processes (internal/proctest) on a real redis-server, behind the same
// key-affine router the activator plugin uses (activator-plugin/affinity),
// under a steady load of CloudEvents made with sdk-go, while a scenario
// disrupts it: kill -9 or SIGTERM of an agent, a Redis restart or outage, a
// slot moved, a rollout, a scale to zero, redelivered events, a partition
// between an agent and Redis.
//
// Every scenario ends with the same checker:
//   - Ledger: every increment the load generator got a 2xx for is in Redis
//     exactly once (a retried event keeps its CloudEvents id, so the agents'
//     dedup makes retries safe). Increments that were never acknowledged are
//     re-sent until they are, so the stored count must equal the
//     acknowledged one. The one scenario where loss is documented, kill -9 of
//     an agent in async durability, reports the loss and checks that it is
//     bounded by what the agent acknowledged within its last flush interval.
//   - Replies: where nothing may be lost, the counts a key's acknowledged
//     increments returned are exactly 1..n: two pods serving one key at once
//     would hand out a count twice.
//   - Writers: a MONITOR connection to Redis sees every entity write the
//     flush script makes and the lease epoch and holder it ran under. No
//     epoch may have two holders, and no entity may be written under an
//     older epoch after a newer one.
//   - Fencing: writes the store rejected as stale (agents' rejected_writes)
//     are counted and logged.
//
// Short versions run in the normal test run (a few seconds each). Set
// KSTATE_CHAOS_LONG=1 for the long versions (longer load, a 30 s Redis
// outage). The suite does not prove anything about a real cluster's
// network, kubelet or endpoints propagation; the e2e tier (test/e2e) is for
// that. See docs/reliability.md.
package chaos
