// Package bench is kstate's benchmark suite (issue 7): the scenarios that
// need a whole cluster run here, in dev mode (pkg/dev: replicas of the agent
// and the counter example behind the key-affine proxy, all in this process)
// on real redis-server processes (internal/redistest), with real HTTP on
// 127.0.0.1 and load from vegeta (open-loop arrival, as a library). Each
// result is a ratio against a baseline measured in the same run:
//
//   - P2, a warm stateful counter against a stateless handler doing a Redis
//     GET+SET per request: latency percentiles at the same open-loop rate,
//     saturation throughput, and Redis commands per request.
//   - P4, scale-up from 2 to 4 replicas under a fixed open-loop rate: p99
//     while the slots move against p99 before, failed requests, and the
//     share of moved keys whose first request after the scale hit memory.
//   - P5, scale from zero: the first response for a hot key with preload,
//     with lazy loading (dev Options.NoPreload), and for a stateless handler
//     started cold the same way.
//   - P7, the drain of 100,000 dirty entities in one agent, against the
//     30-second window a pod gets to stop.
//
// For P2, P4, P5 and P7 Redis sits behind toxiproxy (in this process, as a
// library) with a fixed delay added each way (250 µs unless
// KSTATE_BENCH_REDIS_DELAY says otherwise), to stand for an in-cluster
// round trip. Go timers cannot sleep less than about a millisecond on an
// idle runtime, so the delay is a toxic of this package that sleeps with
// nanosleep on one dedicated thread; the delay it actually delivered is
// measured and reported with the results. Another toxic counts, by kind,
// the commands clients send to Redis (an EVALSHA is one), which is what
// "Redis commands per request" reports; INFO commandstats, which also
// counts the commands scripts run inside Redis, is reported beside it.
//
// P1, P3 and P6 are the existing benchmarks of activator-plugin,
// pkg/placement and statestore. hack/bench.sh runs all seven and prints one
// markdown table; docs/performance.md explains each measurement, its
// baseline, and what the numbers do not prove.
//
// Without KSTATE_BENCH the tests are a smoke check for `go test ./...`: each
// scenario runs at a tiny scale and asserts only correctness (no failed
// request, every acknowledged increment counted exactly once, every drained
// entity in Redis), never a time. KSTATE_BENCH=quick or full runs them at
// benchmark scale and writes the rows of the table, and PNG plots of latency
// over time for P4 and P5, to $BENCH_OUT (default: a kstate-bench directory
// under the system temporary directory).
//
// The package has no non-test code; this file only documents it.
package bench
