package plugin

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// Run with:
//
//	go test -run '^$' -bench Throughput -benchtime 3s ./activator-plugin/
//
// BenchmarkThroughput sends requests through the activator's handler chain
// (context handler, key extraction for kstate, activation handler, reverse
// proxy) to the same four HTTP backends on 127.0.0.1, once for a plain
// revision through Knative's own throttler and once for a kstate revision
// through the plugin, with containerConcurrency 0 (no limits) and 10 (per-pod
// breakers in both). Compare within one run only. The kstate-vs-stock
// sub-benchmark alternates chunks of both (and which goes first), so that
// load from other processes on a shared machine hits both alike, and reports
// throughput-ratio = kstate throughput / stock throughput (goal >= 0.95).

const (
	benchWorkers = 16 // concurrent requests
	benchChunk   = 64 // requests per side per alternation
)

func BenchmarkThroughput(b *testing.B) {
	e := newEnv(b, envOpts{})
	var backends []*backend
	for i := 0; i < 4; i++ {
		backends = append(backends, newBackend(b, fmt.Sprintf("pod-%d", i)))
	}
	ccs := []int64{0, 10}
	for _, cc := range ccs {
		plain, cart := fmt.Sprintf("plain-cc%d", cc), fmt.Sprintf("cart-cc%d", cc)
		e.createRevision(revision(plain, withCC(cc)))
		e.createRevision(revision(cart, withKstate(), withCC(cc)))
		e.setEndpoints(privateEndpoints(plain, backends))
		e.setEndpoints(privateEndpoints(cart, backends))
		e.waitForPods(cart, backends...)
		// Knative's throttler learns the endpoints through its own watcher.
		if err := wait.PollUntilContextTimeout(e.ctx, time.Millisecond, testTimeout, true, func(context.Context) (bool, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			return e.do(request(ctx, plain, "k", "")).Code == http.StatusOK, nil
		}); err != nil {
			b.Fatalf("Knative's throttler never routed %s", plain)
		}
	}

	ks := keys(1000)
	send := func(b *testing.B, h http.Handler, rev string, i int) {
		k := ks[i%len(ks)]
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, request(context.Background(), rev, k, k))
		if rec.Code != http.StatusOK {
			b.Fatalf("%s: status %d %q", rev, rec.Code, rec.Body.String())
		}
	}
	parallel := func(b *testing.B, h http.Handler, rev string) {
		b.SetParallelism(benchWorkers / 2)
		var next atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				send(b, h, rev, int(next.Add(1)))
			}
		})
	}
	// load sends n requests with benchWorkers workers and returns the wall
	// time.
	load := func(b *testing.B, h http.Handler, rev string, n int) time.Duration {
		var next atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for w := 0; w < benchWorkers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := int(next.Add(1)); i <= n; i = int(next.Add(1)) {
					send(b, h, rev, i)
				}
			}()
		}
		wg.Wait()
		return time.Since(start)
	}

	for _, cc := range ccs {
		plain, cart := fmt.Sprintf("plain-cc%d", cc), fmt.Sprintf("cart-cc%d", cc)
		b.Run(fmt.Sprintf("cc=%d/stock", cc), func(b *testing.B) { parallel(b, e.stockChain, plain) })
		b.Run(fmt.Sprintf("cc=%d/kstate", cc), func(b *testing.B) { parallel(b, e.chain, cart) })
		b.Run(fmt.Sprintf("cc=%d/kstate-vs-stock", cc), func(b *testing.B) {
			var stock, kstate time.Duration
			for round, done := 0, 0; done < b.N; round, done = round+1, done+benchChunk {
				n := min(benchChunk, b.N-done)
				if round%2 == 0 { // alternate which goes first, too
					stock += load(b, e.stockChain, plain, n)
					kstate += load(b, e.chain, cart, n)
				} else {
					kstate += load(b, e.chain, cart, n)
					stock += load(b, e.stockChain, plain, n)
				}
			}
			b.ReportMetric(float64(stock)/float64(kstate), "throughput-ratio")
			b.ReportMetric(float64(stock.Nanoseconds())/float64(b.N), "stock-ns/req")
			b.ReportMetric(float64(kstate.Nanoseconds())/float64(b.N), "kstate-ns/req")
		})
	}
}
