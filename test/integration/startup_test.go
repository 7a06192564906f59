package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kstate-dev/kstate/internal/redistest"
)

// startupOutcome is how an agent that cannot start ends.
type startupOutcome struct {
	ExitCode        int
	NamesTheSetting bool // stderr names KSTATE_STORE_URL
	Panicked        bool // stderr has a Go panic
}

// A malformed store URL is a configuration error: the agent says so, naming
// KSTATE_STORE_URL, and exits 1 rather than crashing.
func TestBadStoreURLIsReported(t *testing.T) {
	cfg := agentConfig{Pod: "bad-store", Space: redistest.UniqueSpace(t), StoreURL: "http://" + freeAddr(t), Function: freeAddr(t)}
	p := startProcess(t, "agent bad-store", agentBin, agentEnv(cfg, freeAddr(t), freeAddr(t)))
	if !p.wait(20 * time.Second) {
		t.Fatalf("agent with KSTATE_STORE_URL=%s still running after 20s, want it to exit", cfg.StoreURL)
	}
	stderr := p.stderr.String()
	got := startupOutcome{
		ExitCode:        p.exitCode(),
		NamesTheSetting: strings.Contains(stderr, "KSTATE_STORE_URL"),
		Panicked:        strings.Contains(stderr, "panic:"),
	}
	if diff := cmp.Diff(startupOutcome{ExitCode: 1, NamesTheSetting: true}, got); diff != "" {
		t.Errorf("(-want +got):\n%s\nstderr:\n%s", diff, stderr)
	}
}

// An unreachable Redis is not a reason to crash-loop: the agent runs, stays
// unready and says why, and turns ready once Redis answers.
func TestUnreachableStoreKeepsAgentUnready(t *testing.T) {
	fn := startCounter(t)
	redis := redistest.Start(t)
	redis.Stop() // Restart brings it back on the same address.
	cfg := agentConfig{Pod: "late-store", Space: redistest.UniqueSpace(t), StoreURL: redis.URL(), Function: fn.Addr}
	a := &agent{cfg: cfg, Addr: freeAddr(t), AdminAddr: freeAddr(t)}
	a.process = startProcess(t, "agent late-store@"+a.Addr, agentBin, agentEnv(cfg, a.Addr, a.AdminAddr))
	deadline := time.Now().Add(startTimeout)
	for {
		status, body, err := a.readyz()
		if err == nil && status == 503 && strings.Contains(body, "state store") {
			break
		}
		if !a.running() || time.Now().After(deadline) {
			t.Fatalf("with Redis down: running=%v readiness %d %q %v; want a running agent answering 503 that names the state store\nstderr:\n%s",
				a.running(), status, body, err, a.stderr.String())
		}
		time.Sleep(pollEvery)
	}
	redis.Restart()
	if err := a.waitReady(); err != nil {
		t.Fatalf("after Redis came up: %v\nstderr:\n%s", err, a.stderr.String())
	}
}
