// Package proctest runs kstate as real processes for the process-level test
// tiers (test/integration, test/chaos): it builds kstate-agent and the
// counter function once per test binary, with -race (Main), starts them on
// free loopback ports (StartAgent, StartCounter), talks to them over HTTP
// and the admin gRPC API, and reads what landed in Redis through the state
// store API (OpenStore, StoredCounts).
//
// Invariants: every process a test starts is stopped when the test ends
// (SIGCONT, SIGTERM, then SIGKILL) and dies with the test binary on Linux
// (Pdeathsig); its stderr is checked for race reports and printed when the
// test failed. Only the KSTATE_* settings a test gives reach a process.
package proctest
