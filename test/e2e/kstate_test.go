//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startRedis starts a private redis-server on the node address (pods reach
// it there), configured as production must be: append-only file, fsync
// always, no snapshots. It is stopped when the test ends.
func startRedis(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server is not on PATH (apt-get install redis-server): %v", err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort(nodeIP, "0"))
	if err != nil {
		t.Fatalf("no free port on %s (is the cluster up?): %v", nodeIP, err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir := t.TempDir()
	logf := filepath.Join(dir, "redis.log")
	cmd := exec.Command(bin, "--bind", nodeIP, "--port", fmt.Sprint(port), "--protected-mode", "no",
		"--appendonly", "yes", "--appendfsync", "always", "--save", "", "--dir", dir, "--logfile", logf)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logf)
			t.Logf("redis-server log:\n%s", b)
		}
	})
	addr := net.JoinHostPort(nodeIP, fmt.Sprint(port))
	for start := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("redis-server did not listen on %s", addr)
		}
	}
}

type countReply struct {
	Key   string `json:"key"`
	Count int64  `json:"count"`
}

func count(t *testing.T, host, method, key, body string) countReply {
	t.Helper()
	out := mustRequest(t, method, host, "/", body, map[string]string{"Kstate-Key": key, "Content-Type": "application/json"})
	var r countReply
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%s key %s: answer %q is not a count: %v", method, key, out, err)
	}
	if r.Key != key {
		t.Fatalf("%s key %s: answer %q names another key", method, key, out)
	}
	return r
}

// TestKstateCounterSurvivesScaleToZero: a Service with nothing but kstate
// annotations (the webhook injects the agent) keeps its state across a
// scale to zero and back, and the first request from zero is answered.
func TestKstateCounterSurvivesScaleToZero(t *testing.T) {
	t.Parallel()
	ns, redisAddr := kstateNamespace(t)
	host, took := applyKsvc(t, ns, "counter", counterService(t, "counter", map[string]string{
		"kstate.dev/enabled":             "true",
		"autoscaling.knative.dev/window": "6s",
	}))
	t.Logf("ksvc counter (Redis at %s) Ready in %s", redisAddr, took.Round(time.Millisecond))

	want := map[string]int64{}
	for i, key := range []string{"alice", "bob", "alice", "carol", "alice"} {
		by := int64(i + 1)
		want[key] += by
		if got := count(t, host, "POST", key, fmt.Sprintf(`{"by": %d}`, by)); got.Count != want[key] {
			t.Fatalf("POST %s by %d: count %d, want %d", key, by, got.Count, want[key])
		}
	}
	for key, n := range want {
		if got := count(t, host, "GET", key, ""); got.Count != n {
			t.Fatalf("GET %s before scale to zero: count %d, want %d", key, got.Count, n)
		}
	}

	gone := waitScaledToZero(t, ns, "counter", 4*time.Minute)
	t.Logf("scaled to zero %s after the last request", gone.Round(time.Second))

	start := time.Now()
	got := count(t, host, "GET", "alice", "")
	t.Logf("first answer from zero in %s", time.Since(start).Round(time.Millisecond))
	pods := readyPods(t, ns, "counter-00001")
	if len(pods) != 1 {
		t.Fatalf("after the first request from zero: ready pods %v, want one", pods)
	}
	if st := statsOf(t, ns, pods[0]); st.CacheMisses != 0 {
		t.Errorf("the pod that came from zero missed its cache %d times (hits %d): preload from zero did not load the hot keys", st.CacheMisses, st.CacheHits)
	}
	for key, n := range want {
		if got = count(t, host, "GET", key, ""); got.Count != n {
			t.Fatalf("GET %s after scale to zero and back: count %d, want %d (state lost)", key, got.Count, n)
		}
	}
	if got := count(t, host, "POST", "alice", `{"by": 100}`); got.Count != want["alice"]+100 {
		t.Fatalf("POST alice after scale from zero: count %d, want %d", got.Count, want["alice"]+100)
	}
	if strings.TrimSpace(mustKubectl(t, "", "-n", ns, "get", "ksvc", "counter", "-o", "jsonpath={.status.latestReadyRevisionName}")) != "counter-00001" {
		t.Fatalf("the Service rolled to another revision during the test")
	}
}
