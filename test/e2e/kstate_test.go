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
	"sync"
	"testing"
	"time"
)

// redisServer is a private redis-server on the node address (pods reach it
// there), configured as production must be: append-only file, fsync
// always, no snapshots. It is stopped when the test ends.
type redisServer struct {
	t    *testing.T
	Addr string
	args []string
	dir  string
	mu   sync.Mutex
	cmd  *exec.Cmd
}

func startRedis(t *testing.T) *redisServer {
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
	r := &redisServer{t: t, dir: t.TempDir(), Addr: net.JoinHostPort(nodeIP, fmt.Sprint(port))}
	r.args = []string{bin, "--bind", nodeIP, "--port", fmt.Sprint(port), "--protected-mode", "no",
		"--appendonly", "yes", "--appendfsync", "always", "--save", "", "--dir", r.dir, "--logfile", filepath.Join(r.dir, "redis.log")}
	r.Start()
	t.Cleanup(func() {
		r.stop(os.Interrupt)
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(r.dir, "redis.log"))
			t.Logf("redis-server log:\n%s", b)
		}
	})
	return r
}

// Start starts the server (again, on the same port and files) and waits
// until it accepts connections.
func (r *redisServer) Start() {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	cmd := exec.Command(r.args[0], r.args[1:]...)
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.cmd = cmd
	for start := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		if c, err := net.Dial("tcp", r.Addr); err == nil {
			c.Close()
			return
		}
		if time.Since(start) > 10*time.Second {
			r.t.Fatalf("redis-server did not listen on %s", r.Addr)
		}
	}
}

// Kill stops the server with SIGKILL: what an acknowledged fsync put in
// the append-only file is all that survives.
func (r *redisServer) Kill() { r.stop(os.Kill) }

// Signal sends sig to the running server (SIGSTOP and SIGCONT hang it and
// let it go on).
func (r *redisServer) Signal(sig os.Signal) {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		r.t.Fatalf("signal %v: redis-server is not running", sig)
	}
	if err := r.cmd.Process.Signal(sig); err != nil {
		r.t.Fatalf("signal %v to redis-server: %v", sig, err)
	}
}

func (r *redisServer) stop(sig os.Signal) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Signal(sig)
	_ = r.cmd.Wait()
	r.cmd = nil
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

// TestDemoScaleToZero runs each example's scale-to-zero demo on the cluster
// (hack/demo-scale-to-zero.sh --cluster): the example's own service.yaml,
// driven with CloudEvents, scaled to zero and back; the script fails unless
// the state is intact and the first request from zero hit the cache.
func TestDemoScaleToZero(t *testing.T) {
	t.Parallel()
	requireKstateInstalled(t)
	script, err := filepath.Abs("../../hack/demo-scale-to-zero.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, example := range []string{"counter", "cart", "visitors", "join"} {
		t.Run(example, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(script, "--cluster", example)
			cmd.Env = append(os.Environ(), "KSTATE_DEMO_NO_UP=1", "KSTATE_CLUSTER_DIR="+clusterDir)
			out, err := cmd.CombinedOutput()
			t.Logf("%s", out)
			if err != nil {
				t.Fatalf("demo %s: %v", example, err)
			}
		})
	}
}
