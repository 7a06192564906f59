//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// The cluster variants of benchmarks P4 and P5 (issue 7, docs/performance.md).
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

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
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
// Service with preload cut to one entity (lazy loading) and a stateless
// Service (Knative's hello), all three scaled from zero at the same moment
// in each round, so they share the machine's conditions.
func TestBenchColdStartCluster(t *testing.T) {
	benchOnly(t)
	const rounds = 5
	ns, _ := kstateNamespace(t)
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
	hosts["stateless"], _ = applyKsvc(t, ns, "hello", helloKsvc("hello"))
	// Hot keys with state in Redis for both kstate Services.
	keys := entityKeys("hot", 200)
	for _, svc := range []string{"kstate", "lazy"} {
		for _, k := range keys {
			count(t, hosts[svc], "POST", k, "")
		}
	}
	first := map[string][]time.Duration{}
	for r := range rounds {
		for _, svc := range []string{"counter", "lazy", "hello"} {
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
	k, l, s := median(first["kstate"]), median(first["lazy"]), median(first["stateless"])
	benchRow(t, "| P5 cluster | first response from zero, hot key, median of %d | %v | stateless %v | %.2f× | ≤ 1.05× |", rounds, k.Round(time.Millisecond), s.Round(time.Millisecond), float64(k)/float64(s))
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
