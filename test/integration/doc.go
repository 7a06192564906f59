// Package integration holds kstate's process-level integration tests: real
// redis-server processes (internal/redistest), real kstate-agent processes
// and real counter-function processes (examples/counter/cmd/counter), talking
// HTTP, gRPC and CloudEvents over 127.0.0.1.
//
// The processes are run by internal/proctest, shared with test/chaos:
// TestMain builds both binaries once, with -race, from the repository that
// contains the test; every agent's stderr is checked for race reports and
// printed when a test fails. The package has no non-test code; this file
// only documents it. See docs/testing.md for how the tiers fit together and
// how to run one test.
package integration
