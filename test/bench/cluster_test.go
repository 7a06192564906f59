package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/kstate-dev/kstate/internal/proctest"
	"github.com/kstate-dev/kstate/pkg/dev"
	"github.com/kstate-dev/kstate/test/bench/stateless"
)

// control is the client for control requests and warm-up traffic.
var control = &http.Client{Timeout: 60 * time.Second}

// devCluster is a dev run: replicas of the agent and the counter example
// behind the key-affine proxy, in this process.
type devCluster struct {
	addr string
	url  string
	out  *proctest.LockedBuffer
	stop func() error
}

// startDev runs dev with o until the test ends (or stop), and returns once
// it serves. The example is the counter unless o says otherwise.
func startDev(t *testing.T, o dev.Options) *devCluster {
	t.Helper()
	if o.Example == "" && o.Function == "" {
		o.Example = "counter"
	}
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	o.Ready = func(a string) { ready <- a }
	c := &devCluster{out: &proctest.LockedBuffer{}}
	done := make(chan error, 1)
	go func() { done <- dev.Run(ctx, o, c.out, logger(t)) }()
	select {
	case c.addr = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("dev stopped before it served: %v\n%s", err, c.out.String())
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatalf("dev did not serve within 60s:\n%s", c.out.String())
	}
	c.url = "http://" + c.addr + "/"
	var once sync.Once
	var stopErr error
	c.stop = func() error {
		once.Do(func() {
			cancel()
			stopErr = <-done
		})
		return stopErr
	}
	t.Cleanup(func() {
		if err := c.stop(); err != nil {
			t.Errorf("dev: %v\n%s", err, c.out.String())
		}
		if t.Failed() {
			t.Logf("dev output:\n%s", c.out.String())
		}
	})
	return c
}

// preloads returns dev's reports of preloads, "dev-N takes S slots:
// preloaded E entities in Dms", in order.
func (c *devCluster) preloads() []string {
	var out []string
	for _, line := range strings.Split(c.out.String(), "\n") {
		if i := strings.Index(line, "] "); i >= 0 && strings.Contains(line, " takes ") && strings.Contains(line, "preloaded") {
			out = append(out, line[i+2:])
		}
	}
	return out
}

func logger(t *testing.T) *zap.SugaredLogger {
	if os.Getenv(EnvLog) == "" {
		return zap.NewNop().Sugar()
	}
	return zaptest.NewLogger(t).Sugar()
}

func (c *devCluster) status(t *testing.T) dev.Status {
	t.Helper()
	s, err := c.statusErr()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (c *devCluster) statusErr() (dev.Status, error) {
	var s dev.Status
	resp, err := control.Get("http://" + c.addr + dev.StatusPath)
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	err = json.NewDecoder(resp.Body).Decode(&s)
	return s, err
}

// scale asks dev for n replicas; it answers once they serve (preloaded,
// routed) and the ones leaving are drained.
func (c *devCluster) scale(n int) error {
	resp, err := control.Post(fmt.Sprintf("http://%s%s?replicas=%d", c.addr, dev.ScalePath, n), "", nil)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("scale to %d: %d %s", n, resp.StatusCode, body)
	}
	return nil
}

// waitClean waits until no replica has a dirty entity: every update is in
// Redis.
func (c *devCluster) waitClean(t *testing.T) {
	t.Helper()
	proctest.WaitFor(t, 30*time.Second, "every dirty entity flushed", func() bool { return c.status(t).Dirty == 0 })
}

// add sends one increment of key to url and returns the reply.
func add(t *testing.T, url, key string) countReply {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"by":1}`))
	req.Header.Set("Kstate-Key", key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := control.Do(req)
	if err != nil {
		t.Fatalf("POST %s for %s: %v", url, key, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s for %s: %d %s", url, key, resp.StatusCode, body)
	}
	var c countReply
	if err := json.Unmarshal(body, &c); err != nil {
		t.Fatalf("POST %s for %s: reply %q: %v", url, key, body, err)
	}
	return c
}

// statelessServer serves the stateless baseline on 127.0.0.1.
type statelessServer struct {
	addr, url string
	rdb       *redis.Client
	hs        *http.Server
}

// startStateless starts the baseline on redisURL and waits until Redis
// answers through it, as a readiness probe would.
func startStateless(redisURL string) (*statelessServer, error) {
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		return nil, err
	}
	rdb := redis.NewClient(opts)
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		rdb.Close()
		return nil, err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		rdb.Close()
		return nil, err
	}
	addr := lis.Addr().String()
	s := &statelessServer{addr: addr, url: "http://" + addr + "/", rdb: rdb, hs: &http.Server{Handler: stateless.Handler(rdb), ReadHeaderTimeout: 10 * time.Second}}
	go s.hs.Serve(lis)
	return s, nil
}

func (s *statelessServer) close() {
	s.hs.Close()
	s.rdb.Close()
}

// coldStateless is the stateless baseline for scale from zero, built like
// dev's: a front that holds requests while there is no replica, and a
// scaler that checks every 20 ms (dev's autoscaler tick) and starts one
// (listener, Redis client, readiness PING) when a request waits.
type coldStateless struct {
	url      string
	redisURL string
	hs       *http.Server
	proxy    *httputil.ReverseProxy
	tr       *http.Transport
	stopTick chan struct{}

	mu      sync.Mutex
	backend *statelessServer // nil: scaled to zero
	up      chan struct{}    // closed when backend is set
	waiting atomic.Int32
}

type backendKey struct{}

func startColdStateless(t *testing.T, redisURL string) *coldStateless {
	t.Helper()
	c := &coldStateless{redisURL: redisURL, up: make(chan struct{}), stopTick: make(chan struct{}),
		tr: &http.Transport{MaxIdleConnsPerHost: 100}}
	c.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = pr.In.Context().Value(backendKey{}).(string)
		},
		Transport: c.tr,
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.url = "http://" + lis.Addr().String() + "/"
	c.hs = &http.Server{Handler: c, ReadHeaderTimeout: 10 * time.Second}
	go c.hs.Serve(lis)
	go c.autoscale(t)
	t.Cleanup(func() {
		close(c.stopTick)
		c.hs.Close()
		c.scaleToZero()
	})
	return c
}

func (c *coldStateless) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	be, up := c.backend, c.up
	c.mu.Unlock()
	if be == nil {
		c.waiting.Add(1)
		select {
		case <-up:
		case <-r.Context().Done():
			c.waiting.Add(-1)
			http.Error(w, "no replica", http.StatusServiceUnavailable)
			return
		}
		c.waiting.Add(-1)
		c.mu.Lock()
		be = c.backend
		c.mu.Unlock()
	}
	c.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), backendKey{}, be.addr)))
}

func (c *coldStateless) autoscale(t *testing.T) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-c.stopTick:
			return
		case <-tick.C:
		}
		c.mu.Lock()
		idle := c.backend == nil
		c.mu.Unlock()
		if !idle || c.waiting.Load() == 0 {
			continue
		}
		be, err := startStateless(c.redisURL)
		if err != nil {
			t.Errorf("starting the stateless replica: %v", err)
			continue
		}
		c.mu.Lock()
		c.backend = be
		close(c.up)
		c.mu.Unlock()
	}
}

// scaleToZero stops the replica; call it with no request in flight.
func (c *coldStateless) scaleToZero() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.backend == nil {
		return
	}
	c.backend.close()
	c.backend = nil
	c.up = make(chan struct{})
	c.tr.CloseIdleConnections()
}

// redisCalls is the number of commands Redis has run (INFO commandstats),
// without the INFO commands themselves.
type redisCounter struct{ c *redis.Client }

func newRedisCounter(t *testing.T, addr string) *redisCounter {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { c.Close() })
	r := &redisCounter{c}
	r.calls(t) // connect now, so the handshake is not counted later
	return r
}

func (r *redisCounter) calls(t *testing.T) int64 {
	t.Helper()
	info, err := r.c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatalf("INFO commandstats: %v", err)
	}
	var total int64
	for _, line := range strings.Split(info, "\r\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") || name == "cmdstat_info" {
			continue
		}
		for _, f := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(f, "calls="); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				total += n
			}
		}
	}
	return total
}
