package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"k8s.io/utils/clock"

	"github.com/kstate-dev/kstate/examples/counter"
	"github.com/kstate-dev/kstate/internal/redistest"
	"github.com/kstate-dev/kstate/pkg/sdk"
	"github.com/kstate-dev/kstate/statestore"
)

// BenchmarkWarmHit is the engine's hot path: a warm key, in-process
// function, nothing but the mailbox, the cache and the bookkeeping.
func BenchmarkWarmHit(b *testing.B) {
	cfg := testConfig("a", "bench/warm")
	store := statestore.NewMemory(clock.RealClock{})
	a, err := New(cfg, store, &counterFn{})
	if err != nil {
		b.Fatal(err)
	}
	a.Start(context.Background())
	defer a.Stop()
	ctx := context.Background()
	inv := event("k", "", "add", 1)
	a.Invoke(ctx, inv)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := a.Invoke(ctx, inv); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWarmKeyVsStateless compares one warm key through the whole agent
// (HTTP ingress, gRPC function, write-behind to Redis) with the stateless
// baseline: an HTTP handler that does a Redis GET and SET per request. Both
// run against the same redis-server in the same run; read the ratio of
// their p50-ns and redis-ops/req metrics. Redis here is on loopback, which
// flatters the baseline (hack/bench and docs/performance.md add latency).
func BenchmarkWarmKeyVsStateless(b *testing.B) {
	srv := redistest.Start(b)
	b.Run("kstate", func(b *testing.B) {
		addr := startBenchAgent(b, srv.URL())
		measureHTTP(b, srv, "http://"+addr+"/")
	})
	b.Run("stateless", func(b *testing.B) {
		addr := startStateless(b, srv.URL())
		measureHTTP(b, srv, "http://"+addr+"/")
	})
}

func measureHTTP(b *testing.B, srv *redistest.Server, url string) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	send := func() {
		req, _ := http.NewRequest("POST", url, strings.NewReader(`{"by":1}`))
		req.Header.Set("Kstate-Key", "hot")
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
	for i := 0; i < 100; i++ { // warm the key and the connections
		send()
	}
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	before := commandsProcessed(b, rdb)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		send()
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	// Let the write-behind flush land so its commands are counted.
	time.Sleep(300 * time.Millisecond)
	ops := commandsProcessed(b, rdb) - before - 1 // minus the INFO itself
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
	b.ReportMetric(float64(ops)/float64(b.N), "redis-ops/req")
}

func commandsProcessed(b *testing.B, rdb *redis.Client) int64 {
	info, err := rdb.Info(context.Background(), "stats").Result()
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "total_commands_processed:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	b.Fatal("no total_commands_processed in INFO")
	return 0
}

func startBenchAgent(b *testing.B, storeURL string) string {
	ctx, cancel := context.WithCancel(context.Background())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go sdk.ServeListener(ctx, lis, counter.Handler(), sdk.WithDrainTimeout(time.Second), sdk.WithLogger(zap.NewNop().Sugar()))
	cfg := DefaultConfig()
	cfg.Pod, cfg.Space = "bench", fmt.Sprintf("bench/%d", time.Now().UnixNano())
	cfg.Addr, cfg.AdminAddr, cfg.FunctionAddr, cfg.StoreURL = "127.0.0.1:0", "127.0.0.1:0", lis.Addr().String(), storeURL
	srv, err := NewServer(ctx, cfg, zap.NewNop().Sugar())
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Run(ctx); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	for !srv.Agent.Ready() {
		time.Sleep(time.Millisecond)
	}
	return srv.Addr()
}

// startStateless is the baseline: state in Redis only, GET+SET per request.
func startStateless(b *testing.B, storeURL string) string {
	opts, err := redis.ParseURL(storeURL)
	if err != nil {
		b.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Kstate-Key")
		var in struct{ By int64 }
		json.NewDecoder(r.Body).Decode(&in)
		n, err := rdb.Get(r.Context(), "stateless:"+key).Int64()
		if err != nil && err != redis.Nil {
			http.Error(w, err.Error(), 500)
			return
		}
		n += in.By
		if err := rdb.Set(r.Context(), "stateless:"+key, n, 0).Err(); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"key": key, "count": n})
	})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	hs := &http.Server{Handler: h}
	go hs.Serve(lis)
	b.Cleanup(func() { hs.Close(); rdb.Close() })
	return lis.Addr().String()
}
