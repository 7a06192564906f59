// Package storetest is the contract suite every statestore.Store must pass.
// It checks each invariant of package statestore's documentation and each
// method of the interface; statestore runs it against Redis (redis_test.go)
// and Memory (memory_test.go).
//
// The suite keeps each subtest in its own entity space and holder names, so
// it can share one Redis with other tests. Time passes only through
// Harness.Advance; asynchronous deliveries are awaited with a deadline.
package storetest
