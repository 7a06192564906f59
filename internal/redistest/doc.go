// Package redistest runs real redis-server processes for tests.
//
// Every Server is private to one test: it listens on a free 127.0.0.1 port,
// keeps its data in the test's temporary directory and is stopped when the
// test ends. It is configured like production must be (append-only file with
// appendfsync always, no RDB snapshots), so Kill followed by Restart brings
// back every acknowledged write, and Wipe simulates a store that comes back
// empty. StartCluster builds a Redis Cluster out of such servers.
//
// When redis-server is not installed the tests are skipped, unless
// KSTATE_REQUIRE_REDIS=1 (set by hack/test.sh), which makes it a failure so
// CI can never pass by skipping. KSTATE_TEST_REDIS_URL points Shared at a
// server started once for a whole test run.
//
// Server methods call t.Fatal on failure, so call them from the test's own
// goroutine.
package redistest
