package dev

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/kstate-dev/kstate/activator-plugin/affinity"
	"github.com/kstate-dev/kstate/examples"
	"github.com/kstate-dev/kstate/pkg/agent"
	"github.com/kstate-dev/kstate/pkg/placement"
	"github.com/kstate-dev/kstate/pkg/sdk"
)

// cluster is dev's stand-in for a Knative revision and its autoscaler: a set
// of agent+function replicas behind the key-affine router, scaled by hand,
// to zero when idle, and from zero when a request waits.
type cluster struct {
	o        Options
	ex       examples.Example
	storeURL string
	router   *affinity.Router
	log      *zap.SugaredLogger
	events   func(format string, args ...any)

	mu       sync.Mutex // serializes scaling
	replicas []*replica
	nextID   int

	lastRequest atomic.Int64 // unix nanos
	scaleEvents atomic.Int64
	// Totals of replicas that are gone, so status lines keep counting.
	gone agentTotals
}

type replica struct {
	name   string
	srv    *agent.Server
	cancel context.CancelFunc
	done   chan runResult
	fn     *exec.Cmd // the --function process, if any
}

type runResult struct {
	sum agent.DrainSummary
	err error
}

// agentTotals are counters summed over replicas.
type agentTotals struct {
	requests, hits, misses, flushes, handoffs, drainFlushed atomic.Int64
}

// startReplica starts one agent+function pair and waits until it is ready.
// The caller preloads it and adds it to the router.
func (c *cluster) startReplica(ctx context.Context, name string) (*replica, error) {
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	fnLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		return nil, fmt.Errorf("function listener: %w", err)
	}
	fnAddr := fnLis.Addr().String()
	var fn *exec.Cmd
	if c.o.Function == "" {
		go sdk.ServeListener(rctx, fnLis, c.ex.Handler(), sdk.WithLogger(c.log.Named(name)), sdk.WithDrainTimeout(time.Second))
	} else {
		// The port was free a moment ago; the function binds it itself.
		fnLis.Close()
		if fn, err = c.startFunction(rctx, name, fnAddr); err != nil {
			cancel()
			return nil, err
		}
	}

	cfg := agent.DefaultConfig()
	cfg.Pod = name
	cfg.Addr, cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.FunctionAddr = fnAddr
	cfg.Space = "dev/" + c.ex.Name
	cfg.KeySpec = c.keySpec()
	cfg.StoreURL = c.storeURL
	cfg.Slots = c.router.Slots()
	cfg.MinHold = c.o.MinHold
	if c.o.Durability != "" {
		cfg.Durability = c.o.Durability
	}
	if c.o.FlushInterval > 0 {
		cfg.FlushInterval = c.o.FlushInterval
	}
	srv, err := agent.NewServer(rctx, cfg, c.log.Named(name))
	if err != nil {
		cancel()
		stopFunction(fn)
		return nil, err
	}
	r := &replica{name: name, srv: srv, cancel: cancel, done: make(chan runResult, 1), fn: fn}
	go func() {
		sum, err := srv.Run(rctx)
		r.done <- runResult{sum, err}
	}()
	for !srv.Agent.Ready() {
		if ctx.Err() != nil {
			c.stopReplica(r)
			return nil, ctx.Err()
		}
		time.Sleep(5 * time.Millisecond)
	}
	return r, nil
}

// stopReplica takes r out of the router, lets its in-flight requests
// finish, and drains it: flush everything, release its slots.
func (c *cluster) stopReplica(r *replica) runResult {
	for c.router.InFlight(r.name) > 0 {
		time.Sleep(time.Millisecond)
	}
	r.cancel()
	res := <-r.done
	stopFunction(r.fn) // after the agent's drain, which may still call it
	c.gone.add(r.srv.Agent.Stats())
	return res
}

// startFunction runs --function for one replica, listening where
// KSTATE_FUNCTION_ADDR says, and waits until its gRPC health check serves.
func (c *cluster) startFunction(ctx context.Context, name, addr string) (*exec.Cmd, error) {
	cmd := exec.Command("sh", "-c", c.o.Function)
	cmd.Env = append(os.Environ(), sdk.AddressEnv+"="+addr)
	out := &prefixWriter{prefix: name + " function: ", w: c.events}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // stop its children too
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("--function %q: %w", c.o.Function, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		stopFunction(cmd)
		return nil, err
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(functionStartTimeout)
	for {
		hctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := health.Check(hctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			go func() { <-exited }() // reap it whenever it ends
			return cmd, nil
		}
		select {
		case werr := <-exited:
			return nil, fmt.Errorf("--function %q exited before serving on %s (%s=%s): %v", c.o.Function, addr, sdk.AddressEnv, addr, werr)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stopFunction(cmd)
			return nil, fmt.Errorf("--function %q did not answer gRPC health checks on %s within %s; it must listen on $%s", c.o.Function, addr, functionStartTimeout, sdk.AddressEnv)
		}
	}
}

const functionStartTimeout = 30 * time.Second

// stopFunction ends a --function process group: SIGTERM, then SIGKILL.
func stopFunction(cmd *exec.Cmd) {
	if cmd == nil || cmd.Process == nil {
		return
	}
	pgid := -cmd.Process.Pid
	syscall.Kill(pgid, syscall.SIGTERM)
	for i := 0; i < 100; i++ {
		if syscall.Kill(pgid, 0) != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	syscall.Kill(pgid, syscall.SIGKILL)
}

// prefixWriter turns a function's output into dev event lines.
type prefixWriter struct {
	prefix string
	w      func(format string, args ...any)
	mu     sync.Mutex
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			return len(b), nil
		}
		p.w("%s%s", p.prefix, p.buf[:i])
		p.buf = p.buf[i+1:]
	}
}

// scale moves to n replicas. Scale-down removes the replicas holding the
// least state first, as pod-deletion-cost does on a cluster.
func (c *cluster) scale(ctx context.Context, n int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n < 0 || n > maxReplicas {
		return fmt.Errorf("replicas %d: expected 0..%d", n, maxReplicas)
	}
	from := len(c.replicas)
	if n == from {
		return nil
	}
	c.scaleEvents.Add(1)
	c.events("scale %d → %d", from, n)
	before, err := placement.New(c.names(), c.router.Slots())
	if err != nil {
		return err
	}
	var leaving []*replica
	if n > from {
		for i := from; i < n; i++ {
			c.nextID++
			r, err := c.startReplica(ctx, fmt.Sprintf("dev-%d", c.nextID))
			if err != nil {
				return fmt.Errorf("starting a replica: %w", err)
			}
			c.replicas = append(c.replicas, r)
		}
	} else {
		// Coldest first: fewest cached plus dirty entities go, as
		// pod-deletion-cost does on a cluster.
		sort.SliceStable(c.replicas, func(i, j int) bool {
			return c.replicas[i].weight() > c.replicas[j].weight()
		})
		leaving = c.replicas[n:]
		c.replicas = c.replicas[:n]
	}
	after, err := placement.New(c.names(), c.router.Slots())
	if err != nil {
		return err
	}
	// Every replica preloads the slots the new table gives it (newcomers:
	// all of theirs; with bounded-load placement old replicas can gain some
	// too) before traffic moves. Free slots are taken on the way (scale from
	// zero); slots still held elsewhere are hints, re-read when their lease
	// comes over.
	for _, r := range c.replicas {
		var gained []uint32
		for _, slot := range after.SlotsOf(r.name) {
			if before.Owner(slot) != r.name {
				gained = append(gained, slot)
			}
		}
		if len(gained) == 0 || c.o.NoPreload {
			continue
		}
		prep, err := r.srv.Agent.Prepare(ctx, gained, 0, 0)
		if err != nil {
			c.log.Warnw("preload incomplete; the rest loads lazily", zap.String("replica", r.name), zap.Error(err))
		}
		c.events("%s takes %d slots: preloaded %d entities in %dms", r.name, len(gained), prep.GetEntitiesLoaded(), prep.GetDurationMs())
	}
	if err := c.updateRouter(); err != nil {
		return err
	}
	for _, r := range leaving {
		res := c.stopReplica(r)
		if res.err != nil {
			c.events("%s stopped with unflushed state: %v", r.name, res.err)
			continue
		}
		c.gone.drainFlushed.Add(int64(res.sum.Flushed))
		c.events("%s drained: %d entities flushed, %d slots released in %s", r.name, res.sum.Flushed, res.sum.Released, res.sum.Took.Round(time.Millisecond))
	}
	return nil
}

const maxReplicas = 64

func (r *replica) weight() int64 {
	st := r.srv.Agent.Stats()
	return st.GetEntities() + st.GetDirtyEntities()
}

func (c *cluster) names() []string {
	out := make([]string, len(c.replicas))
	for i, r := range c.replicas {
		out[i] = r.name
	}
	return out
}

func (c *cluster) updateRouter() error {
	pods := make([]affinity.Pod, len(c.replicas))
	for i, r := range c.replicas {
		pods[i] = affinity.Pod{Name: r.name, Addr: r.srv.Addr()}
	}
	_, err := c.router.Update(pods)
	return err
}

func (c *cluster) keySpec() string {
	if c.o.Key != "" {
		return c.o.Key
	}
	return c.ex.Key
}

// autoscale scales to zero after the idle time and from zero when a
// request waits, until ctx ends.
func (c *cluster) autoscale(ctx context.Context) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.mu.Lock()
		n := len(c.replicas)
		c.mu.Unlock()
		switch {
		case n == 0 && c.router.Waiting() > 0:
			if err := c.scale(ctx, 1); err != nil {
				c.events("scale from zero failed: %v", err)
			}
		case n > 0 && c.o.ScaleToZeroAfter > 0 && c.router.Waiting() == 0 &&
			time.Since(time.Unix(0, c.lastRequest.Load())) >= c.o.ScaleToZeroAfter:
			if err := c.scale(ctx, 0); err != nil {
				c.events("scale to zero failed: %v", err)
			}
		}
	}
}

// Status is what GET /.kstate/dev/status answers and the status line shows.
type Status struct {
	Replicas    []string `json:"replicas"`
	Requests    int64    `json:"requests"`
	CacheHits   int64    `json:"cacheHits"`
	CacheMisses int64    `json:"cacheMisses"`
	Entities    int64    `json:"entities"`
	Dirty       int64    `json:"dirtyEntities"`
	Flushes     int64    `json:"flushes"`
	Handoffs    int64    `json:"handoffs"`
	ScaleEvents int64    `json:"scaleEvents"`
	Waiting     int      `json:"waiting"`
}

func (c *cluster) status() Status {
	c.mu.Lock()
	reps := append([]*replica(nil), c.replicas...)
	c.mu.Unlock()
	s := Status{
		Replicas: []string{}, Requests: c.gone.requests.Load(), CacheHits: c.gone.hits.Load(),
		CacheMisses: c.gone.misses.Load(), Flushes: c.gone.flushes.Load(), Handoffs: c.gone.handoffs.Load(),
		ScaleEvents: c.scaleEvents.Load(), Waiting: c.router.Waiting(),
	}
	for _, r := range reps {
		st := r.srv.Agent.Stats()
		s.Replicas = append(s.Replicas, r.name)
		s.Requests += st.GetRequests()
		s.CacheHits += st.GetCacheHits()
		s.CacheMisses += st.GetCacheMisses()
		s.Entities += st.GetEntities()
		s.Dirty += st.GetDirtyEntities()
		s.Flushes += st.GetFlushes()
		s.Handoffs += st.GetHandoffsIn()
	}
	sort.Strings(s.Replicas)
	return s
}

func (t *agentTotals) add(st interface {
	GetRequests() int64
	GetCacheHits() int64
	GetCacheMisses() int64
	GetFlushes() int64
	GetHandoffsIn() int64
}) {
	t.requests.Add(st.GetRequests())
	t.hits.Add(st.GetCacheHits())
	t.misses.Add(st.GetCacheMisses())
	t.flushes.Add(st.GetFlushes())
	t.handoffs.Add(st.GetHandoffsIn())
}

func (s Status) line() string {
	hit := 0.0
	if total := s.CacheHits + s.CacheMisses; total > 0 {
		hit = 100 * float64(s.CacheHits) / float64(total)
	}
	return fmt.Sprintf("replicas=%d requests=%d hit=%.1f%% entities=%d dirty=%d flushes=%d handoffs=%d scale-events=%d",
		len(s.Replicas), s.Requests, hit, s.Entities, s.Dirty, s.Flushes, s.Handoffs, s.ScaleEvents)
}
