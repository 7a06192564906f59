//go:build e2e

package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The cluster variants of benchmarks P2, P4, P5 and P7 (issue 7,
// docs/performance.md).
// They run only with KSTATE_E2E_BENCH=1 (hack/cluster/bench.sh) and never
// assert a time: they log a markdown table of ratios against baselines
// measured in the same run, and write it to $BENCH_OUT/cluster-bench.md when
// BENCH_OUT is set.

func benchOnly(t *testing.T) {
	t.Helper()
	if os.Getenv("KSTATE_E2E_BENCH") != "1" {
		t.Skip("a benchmark: set KSTATE_E2E_BENCH=1 (or run hack/cluster/bench.sh)")
	}
}

var benchRows struct {
	sync.Mutex
	rows []string
}

func benchRow(t *testing.T, format string, args ...any) {
	row := fmt.Sprintf(format, args...)
	t.Log(row)
	benchRows.Lock()
	defer benchRows.Unlock()
	benchRows.rows = append(benchRows.rows, row)
	if dir := os.Getenv("BENCH_OUT"); dir != "" {
		head := "| id | measure | kstate | baseline | ratio | goal |\n| --- | --- | --- | --- | --- | --- |\n"
		_ = os.MkdirAll(dir, 0o755)
		_ = os.WriteFile(filepath.Join(dir, "cluster-bench.md"), []byte(head+strings.Join(benchRows.rows, "\n")+"\n"), 0o644)
	}
}

func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// TestBenchColdStartCluster is P5 on the cluster: the first response from
// zero for a hot key of the kstate counter (preload on), against the same
// Service with preload cut to one entity (lazy loading) and the stateless
// baseline (test/bench/stateless), all three scaled from zero at the same
// moment in each round, so they share the machine's conditions, and each
// with its Redis behind the same delay.
func TestBenchColdStartCluster(t *testing.T) {
	benchOnly(t)
	const rounds = 5
	ns, _ := delayedKstateNamespace(t)
	window := map[string]string{"autoscaling.knative.dev/window": "6s"}
	withKstate := func(extra map[string]string) map[string]string {
		m := map[string]string{"kstate.dev/enabled": "true"}
		for k, v := range window {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	hosts := map[string]string{}
	hosts["kstate"], _ = applyKsvc(t, ns, "counter", counterService(t, "counter", withKstate(nil)))
	// Its own space, so its slots and data are its own; preload of one entity
	// is lazy loading in all but name.
	hosts["lazy"], _ = applyKsvc(t, ns, "lazy", counterService(t, "lazy", withKstate(map[string]string{"kstate.dev/preload": "entities=1"})))
	// The stateless baseline connects to its Redis before it listens and
	// does a GET and a SET for the first request, behind the same delay.
	statelessProxy, _ := delayedRedis(t)
	hosts["stateless"], _ = applyKsvc(t, ns, "stateless", statelessService(t, "stateless", statelessProxy, window))
	// Hot keys with state in Redis for both kstate Services.
	keys := entityKeys("hot", 200)
	for _, svc := range []string{"kstate", "lazy"} {
		for _, k := range keys {
			count(t, hosts[svc], "POST", k, "")
		}
	}
	first := map[string][]time.Duration{}
	for r := range rounds {
		for _, svc := range []string{"counter", "lazy", "stateless"} {
			waitScaledToZero(t, ns, svc, 4*time.Minute)
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for name, host := range hosts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				hdr := map[string]string{"Kstate-Key": keys[r]}
				start := time.Now()
				code, body, err := request("GET", host, "/", "", hdr)
				took := time.Since(start)
				if err != nil || code != 200 {
					t.Errorf("round %d %s: %d %v %q", r, name, code, err, body)
					return
				}
				mu.Lock()
				first[name] = append(first[name], took)
				mu.Unlock()
			}()
		}
		wg.Wait()
		t.Logf("round %d: kstate %v, lazy %v, stateless %v", r, first["kstate"][r].Round(time.Millisecond),
			first["lazy"][r].Round(time.Millisecond), first["stateless"][r].Round(time.Millisecond))
	}
	if t.Failed() {
		return
	}
	k, l, s := quantile(first["kstate"], .5), quantile(first["lazy"], .5), quantile(first["stateless"], .5)
	benchRow(t, "| P5 cluster | first response from zero, hot key, median of %d (Redis +%s each way) | %v | stateless GET+SET %v | %.2f× | ≤ 1.05× |", rounds, redisDelay, k.Round(time.Millisecond), s.Round(time.Millisecond), float64(k)/float64(s))
	benchRow(t, "| P5 cluster | same, against lazy loading (preload of 1 entity) | %v | lazy %v | %.2f× | — |", k.Round(time.Millisecond), l.Round(time.Millisecond), float64(k)/float64(l))
}

// TestBenchScaleUpCluster is P4 on the cluster: a closed loop of POSTs over
// 1,000 keys against two pods, then a scale to four (the PodAutoscaler's
// min-scale). It compares the p99 while slots move (from the scale request
// until four pods are Ready, plus 5 s) with the p99 of the steady phase
// before it, and reports failed requests and the joining pods' first-hit
// ratio. For context it then runs the same scale-up of a stateless Service
// (Knative's hello) under the same loop: what starting two pods costs the
// requests on this node without any state.
//
// The benchmarks do not run in parallel with each other: each one's pods
// and load would be the other's noise.
func TestBenchScaleUpCluster(t *testing.T) {
	benchOnly(t)
	ns, _ := kstateNamespace(t)
	host, _ := applyKsvc(t, ns, "counter", counterService(t, "counter", map[string]string{
		"kstate.dev/enabled":                "true",
		"autoscaling.knative.dev/min-scale": "2",
	}))
	const rev = "counter-00001"
	keys := entityKeys("k", 1000)
	for _, k := range keys {
		count(t, host, "POST", k, "")
	}
	before := readyPods(t, ns, rev)
	kstate := scaleUpUnderLoad(t, ns, rev, func(n int) (int, error) {
		code, _, err := request("POST", host, "/", "", map[string]string{"Kstate-Key": keys[n%len(keys)]})
		return code, err
	})

	var hits, misses int64
	for _, p := range readyPods(t, ns, rev) {
		if contains(before, p) {
			continue
		}
		st := statsOf(t, ns, p)
		hits, misses = hits+st.CacheHits, misses+st.CacheMisses
	}

	helloNS := namespace(t)
	helloHost, _ := applyKsvc(t, helloNS, "hello", strings.Replace(helloKsvc("hello"),
		"autoscaling.knative.dev/window: \"6s\"", "autoscaling.knative.dev/min-scale: \"2\"", 1))
	stateless := scaleUpUnderLoad(t, helloNS, "hello-00001", func(int) (int, error) {
		code, _, err := request("GET", helloHost, "/", "", nil)
		return code, err
	})

	ratio := float64(hits) / float64(max(hits+misses, 1))
	benchRow(t, "| P4 cluster | first-hit ratio on the joining pods | %.3f (%d/%d) | — | — | ≥ 0.95 |", ratio, hits, hits+misses)
	benchRow(t, "| P4 cluster | p99 while slots move, 2 → 4 pods (%d requests over %v) | %v | steady %v | %.2f× | ≤ 3× |",
		len(kstate.moving), kstate.window.Round(100*time.Millisecond), kstate.p99Moving(), kstate.p99Steady(), kstate.ratio())
	benchRow(t, "| P4 cluster | failed requests during the scale-up | %d of %d | — | — | 0 |", kstate.failed, kstate.total)
	benchRow(t, "| P4 cluster | the same scale-up of a stateless Service (hello): p99 while pods start / steady | %v / %v | — | %.2f× | — |",
		stateless.p99Moving(), stateless.p99Steady(), stateless.ratio())
	if kstate.failed > 0 {
		t.Errorf("%d of %d kstate requests failed during the scale-up", kstate.failed, kstate.total)
	}
}

// scaleUpRun is one scale-up under load: request latencies before the scale
// (steady) and from the scale request until 5 s after four pods were Ready
// (moving).
type scaleUpRun struct {
	steady, moving []time.Duration
	window         time.Duration // scale request to four Ready pods
	failed, total  int
}

func (r scaleUpRun) p99Steady() time.Duration { return quantile(r.steady, .99).Round(time.Microsecond) }
func (r scaleUpRun) p99Moving() time.Duration { return quantile(r.moving, .99).Round(time.Microsecond) }
func (r scaleUpRun) ratio() float64 {
	return float64(quantile(r.moving, .99)) / float64(quantile(r.steady, .99))
}

// scaleUpUnderLoad runs send in a closed loop of 8 workers (n counts each
// worker's requests, interleaved so the workers cover different keys),
// scales revision rev from 2 to 4 pods after a 20 s steady phase, and keeps
// the load 10 s past the fourth Ready pod.
func scaleUpUnderLoad(t *testing.T, ns, rev string, send func(n int) (int, error)) scaleUpRun {
	type sample struct {
		at   time.Time
		took time.Duration
		ok   bool
	}
	var mu sync.Mutex
	var samples []sample
	stop := make(chan struct{})
	var wg sync.WaitGroup
	const workers = 8
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				code, err := send(n*workers + w)
				mu.Lock()
				samples = append(samples, sample{start, time.Since(start), err == nil && code == 200})
				mu.Unlock()
			}
		}()
	}
	time.Sleep(20 * time.Second) // the steady phase: a measurement window, not a wait for a condition
	scaleAt := time.Now()
	mustKubectl(t, "", "-n", ns, "annotate", "pa", rev, "autoscaling.knative.dev/min-scale=4", "--overwrite")
	waitFor(t, "four ready pods of "+rev, 3*time.Minute, func() bool { return len(readyPods(t, ns, rev)) == 4 })
	readyAt := time.Now()
	time.Sleep(10 * time.Second) // after the move: part of the measured window
	close(stop)
	wg.Wait()

	run := scaleUpRun{window: readyAt.Sub(scaleAt), total: len(samples)}
	for _, s := range samples {
		if !s.ok {
			run.failed++
			continue
		}
		switch {
		case s.at.Before(scaleAt):
			run.steady = append(run.steady, s.took)
		case s.at.Before(readyAt.Add(5 * time.Second)):
			run.moving = append(run.moving, s.took)
		}
	}
	t.Logf("%s: %d requests (%d failed); steady %d (p50 %v p99 %v p999 %v), scale-up %d over %v (p50 %v p99 %v p999 %v)",
		rev, run.total, run.failed, len(run.steady), quantile(run.steady, .5), quantile(run.steady, .99), quantile(run.steady, .999),
		len(run.moving), run.window.Round(time.Millisecond), quantile(run.moving, .5), quantile(run.moving, .99), quantile(run.moving, .999))
	if len(run.steady) == 0 || len(run.moving) == 0 {
		t.Fatalf("%s: no samples in one of the phases", rev)
	}
	return run
}

// TestBenchWarmCounterCluster is P2 on the cluster: one warm key of the
// kstate counter against the stateless baseline (test/bench/stateless: a
// Redis GET and SET per request), each one pod, both behind the activator
// (the baseline gets target-burst-capacity -1 as kstate's webhook gives the
// counter), each with its own Redis on the node address, so both cross the
// same ingress, activator and queue-proxy. Redis is on the node, with no
// added delay: a round trip here is a loopback one, which flatters the
// baseline (docs/performance.md).
//
// It measures, alternating the sides: latency under an open-loop load
// (each request sent at its scheduled time whatever the earlier ones did,
// its latency counted from that time), throughput of a closed loop of 16
// workers, and the commands each side's Redis ran per request (INFO
// total_commands_processed: commands inside scripts included).
func TestBenchWarmCounterCluster(t *testing.T) {
	benchOnly(t)
	const (
		rate    = 200 // requests a second, open loop
		openFor = 10 * time.Second
		satFor  = 5 * time.Second
		rounds  = 2
		key     = "warm"
	)
	ns, kstateRedis := delayedKstateNamespace(t)
	onePod := map[string]string{"autoscaling.knative.dev/min-scale": "1", "autoscaling.knative.dev/max-scale": "1"}
	kAnn := map[string]string{"kstate.dev/enabled": "true"}
	for k, v := range onePod {
		kAnn[k] = v
	}
	statelessProxy, statelessRedis := delayedRedis(t)
	hosts := map[string]string{}
	hosts["kstate"], _ = applyKsvc(t, ns, "counter", counterService(t, "counter", kAnn))
	onePod["autoscaling.knative.dev/target-burst-capacity"] = "-1"
	hosts["stateless"], _ = applyKsvc(t, ns, "stateless", statelessService(t, "stateless", statelessProxy, onePod))
	// Commands are counted on the servers, behind the proxies.
	redisOf := map[string]string{"kstate": kstateRedis, "stateless": statelessRedis.Addr}
	send := func(side string) (int, error) {
		code, _, err := request("POST", hosts[side], "/", "", map[string]string{"Kstate-Key": key})
		return code, err
	}
	for _, side := range []string{"kstate", "stateless"} {
		for range 50 { // warm: the key loaded, connections open
			if code, err := send(side); err != nil || code != 200 {
				t.Fatalf("%s warm-up: %d %v", side, code, err)
			}
		}
	}

	latency := map[string][]time.Duration{}
	commands := map[string]float64{}
	sent := map[string]int{}
	for r := range rounds {
		for _, side := range []string{"kstate", "stateless"} {
			before := redisCommands(t, redisOf[side])
			lat, failed := openLoop(rate, openFor, func() (int, error) { return send(side) })
			if side == "kstate" { // count the write-behind flush of the last requests too
				pod := readyPods(t, ns, "counter-00001")[0]
				waitFor(t, "the warm key flushed", 30*time.Second, func() bool { return statsOf(t, ns, pod).DirtyEntities == 0 })
			}
			commands[side] += float64(redisCommands(t, redisOf[side]) - before)
			sent[side] += len(lat) + failed
			latency[side] = append(latency[side], lat...)
			if failed > 0 {
				t.Errorf("round %d %s: %d of %d requests failed", r, side, failed, len(lat)+failed)
			}
			t.Logf("round %d %s open loop: %d requests, p50 %v p99 %v", r, side, len(lat), quantile(lat, .5), quantile(lat, .99))
		}
	}
	served := map[string]int{}
	for r := range rounds {
		for _, side := range []string{"kstate", "stateless"} {
			n, failed := closedLoop(16, satFor, func() (int, error) { return send(side) })
			served[side] += n
			if failed > 0 {
				t.Errorf("round %d %s saturation: %d requests failed", r, side, failed)
			}
			t.Logf("round %d %s closed loop: %.0f req/s", r, side, float64(n)/satFor.Seconds())
		}
	}
	k, s := latency["kstate"], latency["stateless"]
	benchRow(t, "| P2 cluster | warm counter p50 latency (1 key, %d req/s open loop, %d×%v per side; Redis +%s each way) | %v | %v (stateless GET+SET) | %.2f | ≤ 0.5 |",
		rate, rounds, openFor, redisDelay, quantile(k, .5).Round(time.Microsecond), quantile(s, .5).Round(time.Microsecond), float64(quantile(k, .5))/float64(quantile(s, .5)))
	benchRow(t, "| P2 cluster | p99 / p999 latency (same run) | %v / %v | %v / %v | %.2f / %.2f | — |",
		quantile(k, .99).Round(time.Microsecond), quantile(k, .999).Round(time.Microsecond), quantile(s, .99).Round(time.Microsecond), quantile(s, .999).Round(time.Microsecond),
		float64(quantile(k, .99))/float64(quantile(s, .99)), float64(quantile(k, .999))/float64(quantile(s, .999)))
	sat := (rounds * satFor).Seconds()
	kt, st := float64(served["kstate"])/sat, float64(served["stateless"])/sat
	benchRow(t, "| P2 cluster | throughput at saturation (16 closed-loop workers, %d×%v per side) | %.0f req/s | %.0f req/s | %.2f | ≥ 2 |", rounds, satFor, kt, st, kt/st)
	kc, sc := commands["kstate"]/float64(sent["kstate"]), commands["stateless"]/float64(sent["stateless"])
	benchRow(t, "| P2 cluster | Redis commands run per request (INFO, inside scripts included; open-loop runs) | %.4f | %.2f | %.3f | ≤ 0.05 |", kc, sc, kc/sc)
}

// openLoop sends at rate requests a second for d, each at its scheduled
// time in its own goroutine, and returns the latencies of the answered ones
// (from the scheduled time, so a slow server cannot hold back the load and
// hide its queue) and the count of failed ones.
func openLoop(rate int, d time.Duration, send func() (int, error)) ([]time.Duration, int) {
	n := int(d.Seconds() * float64(rate))
	interval := time.Second / time.Duration(rate)
	lat := make([]time.Duration, n)
	ok := make([]bool, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		at := start.Add(time.Duration(i) * interval)
		time.Sleep(time.Until(at))
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, err := send()
			lat[i], ok[i] = time.Since(at), err == nil && code == 200
		}()
	}
	wg.Wait()
	var answered []time.Duration
	for i := range n {
		if ok[i] {
			answered = append(answered, lat[i])
		}
	}
	return answered, n - len(answered)
}

// closedLoop runs workers that each send the next request when the last
// one is answered, for d, and returns the answered and failed counts. A
// worker stops early when send returns stop (when given).
func closedLoop(workers int, d time.Duration, send func() (int, error), stop ...error) (answered, failed int) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	deadline := time.Now().Add(d)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				code, err := send()
				if len(stop) > 0 && errors.Is(err, stop[0]) {
					return
				}
				mu.Lock()
				if err == nil && code == 200 {
					answered++
				} else {
					failed++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return answered, failed
}

// redisCommands is the commands the Redis at addr has run (INFO stats).
func redisCommands(t *testing.T, addr string) int64 {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	out, err := exec.Command("redis-cli", "-h", host, "-p", port, "INFO", "stats").Output()
	if err != nil {
		t.Fatalf("redis-cli INFO stats on %s: %v", addr, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "total_commands_processed:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatalf("INFO total_commands_processed %q: %v", v, err)
			}
			return n
		}
	}
	t.Fatalf("no total_commands_processed in INFO stats of %s", addr)
	return 0
}

// redisDelay is the delay the cluster benchmarks add to each side's Redis,
// each way (KSTATE_E2E_REDIS_DELAY, default 250µs): the stand-in
// for an in-cluster round trip, as in the dev benchmarks.
var redisDelay = envOr("KSTATE_E2E_REDIS_DELAY", "250us")

// delayedRedis starts a private redis-server and the benchmarks' delay
// proxy in front of it (test/bench/cmd/redis-delay, which build.sh builds
// for the host) on the node address, and returns the proxy's address.
func delayedRedis(t *testing.T) (addr string, r *redisServer) {
	t.Helper()
	r = startRedis(t)
	cmd := exec.Command(filepath.Join(clusterDir, "bin", "kstate", "redis-delay"),
		"-listen", net.JoinHostPort(nodeIP, "0"), "-upstream", r.Addr, "-delay", redisDelay)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting redis-delay (run hack/cluster/build.sh): %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
		t.Logf("%s -> %s: %s", addr, r.Addr, strings.TrimSpace(stderr.String()))
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening on ")
	if err != nil || !ok {
		t.Fatalf("redis-delay: %q, %v; stderr: %s", line, err, stderr.String())
	}
	return addr, r
}

// delayedKstateNamespace is kstateNamespace with the agents' Redis behind
// the delay proxy.
func delayedKstateNamespace(t *testing.T) (ns, redisAddr string) {
	t.Helper()
	requireKstateInstalled(t)
	proxy, r := delayedRedis(t)
	ns = namespace(t)
	mustKubectl(t, "", "-n", ns, "create", "secret", "generic", "kstate-store", "--from-literal=url=redis://"+proxy)
	return ns, r.Addr
}

// statelessService is the benchmarks' stateless baseline
// (test/bench/stateless: a Redis GET and SET per request) as a Knative
// Service on the Redis at redisAddr, with annotations.
func statelessService(t *testing.T, name, redisAddr string, annotations map[string]string) string {
	t.Helper()
	return serviceYAML(name, annotations, fmt.Sprintf("image: %s\n        env:\n        - name: REDIS_URL\n          value: redis://%s\n",
		imageRef(t, "stateless-counter"), redisAddr))
}

// TestBenchDrainCluster is P7 on the cluster: one pod holds many dirty
// entities (a one-minute flush interval, the longest the webhook accepts:
// the load and the delete fit in the pod's first minute), and
// `kubectl delete pod` sends it SIGTERM. The agent's drain (refuse new
// work, flush everything, release every lease) is timed by the agent
// itself ("kstate agent drained: … in T" in its log, streamed before the
// delete) against the 30 s the pod has before SIGKILL. Then a sample of the
// entities is read back from Redis with `kn kstate get`.
func TestBenchDrainCluster(t *testing.T) {
	benchOnly(t)
	const entities = 10000
	ns, redisAddr := kstateNamespace(t)
	host, _ := applyKsvc(t, ns, "counter", counterService(t, "counter", map[string]string{
		"kstate.dev/enabled":                "true",
		"kstate.dev/flush-interval":         "1m",
		"autoscaling.knative.dev/min-scale": "1",
		"autoscaling.knative.dev/max-scale": "1",
	}))
	const rev = "counter-00001"
	pod := readyPods(t, ns, rev)[0]
	keys := entityKeys("drain", entities)
	var next atomic.Int64
	answered, failed := closedLoop(16, 10*time.Minute, func() (int, error) {
		i := next.Add(1) - 1
		if i >= int64(len(keys)) {
			return 0, errDone
		}
		code, _, err := request("POST", host, "/", "", map[string]string{"Kstate-Key": keys[i]})
		return code, err
	}, errDone)
	if failed > 0 || answered != entities {
		t.Fatalf("loading: %d answered, %d failed, want %d answered", answered, failed, entities)
	}
	st := statsOf(t, ns, pod)
	t.Logf("before the delete: %d entities, %d dirty (%d bytes), %d flushes so far", st.Entities, st.DirtyEntities, st.DirtyBytes, st.Flushes)

	logs := exec.Command(kubectlPath, "--kubeconfig", kubeconfig, "-n", ns, "logs", "-f", pod, "-c", "kstate-agent", "--since=1s")
	var out strings.Builder
	logs.Stdout = &out
	if err := logs.Start(); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	mustKubectl(t, "", "-n", ns, "delete", "pod", pod, "--wait=false")
	done := make(chan error, 1)
	go func() { done <- logs.Wait() }()
	select {
	case <-done: // the container ended
	case <-time.After(2 * time.Minute):
		_ = logs.Process.Kill()
		t.Fatalf("the agent's log did not end within 2 minutes of the delete")
	}
	gone := time.Since(deleted)
	m := regexp.MustCompile(`kstate agent drained: (\d+) entities flushed, (\d+) slots released in ([0-9.]+[a-zµ]+)`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no drain line in the agent's log:\n%s", out.String())
	}
	took, err := time.ParseDuration(m[3])
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("drained: %s entities flushed, %s slots released in %v; the log ended %v after the delete", m[1], m[2], took, gone.Round(time.Millisecond))
	if m[1] != fmt.Sprint(st.DirtyEntities) {
		t.Errorf("the drain flushed %s entities, but %d were dirty just before the delete: a periodic flush came between (the load took too long)", m[1], st.DirtyEntities)
	}
	// Every sampled entity is in Redis with its one increment.
	for i := 0; i < entities; i += entities / 50 {
		if o := mustKnKstate(t, "get", "counter", keys[i], "-n", ns, "-o", "json", "--redis", "redis://"+redisAddr); !hasCount(o, 1) {
			t.Fatalf("kn kstate get %s after the drain: %s, want count 1", keys[i], o)
		}
	}
	benchRow(t, "| P7 cluster | graceful drain on SIGTERM (`kubectl delete pod`) of one pod with %s dirty entities | %v (%s slots released) | 30 s (the drain window) | %.3f | ≤ 3 s (≤ 0.10) |",
		m[1], took.Round(time.Millisecond), m[2], took.Seconds()/30)
}

// errDone ends a closedLoop worker: the work ran out.
var errDone = errors.New("done")
