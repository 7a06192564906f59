package dev

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"go.uber.org/zap"

	"github.com/kstate-dev/kstate/activator-plugin/affinity"
	"github.com/kstate-dev/kstate/examples"
	"github.com/kstate-dev/kstate/pkg/agent"
	"github.com/kstate-dev/kstate/pkg/keyspec"
	"github.com/kstate-dev/kstate/pkg/placement"
	"github.com/kstate-dev/kstate/statestore"
)

// Control paths dev serves on its own address, beside the routed traffic.
const (
	ScalePath  = "/.kstate/dev/scale"
	StatusPath = "/.kstate/dev/status"
)

// Options configure a dev run.
type Options struct {
	Example string
	// Function is a command that serves a gRPC function on
	// $KSTATE_FUNCTION_ADDR; one runs per replica. It replaces Example.
	Function string
	Addr     string // serving address (the router)
	Redis    string // store URL; empty: the embedded store
	Key      string // key spec; empty: the example's own, else the defaults
	Slots    int
	// Replicas to start with (agent+function pairs behind the router).
	Replicas   int
	Durability agent.Durability
	// FlushInterval is the write-behind interval.
	FlushInterval time.Duration
	// ScaleToZeroAfter scales to zero after this long without requests; 0
	// never does.
	ScaleToZeroAfter time.Duration
	// NoPreload turns the preload on scale events off: replicas load what
	// they gain lazily, on each key's first request (the baseline the
	// scale-from-zero benchmark compares preloading with).
	NoPreload bool
	// MinHold is the agents' KSTATE_MIN_HOLD.
	MinHold time.Duration
	// StatusEvery prints a status line this often when something changed;
	// 0 never does.
	StatusEvery time.Duration
	// Ready, when set, is called with the serving address once it serves.
	Ready func(addr string)
}

// Validate names the first bad option.
func (o *Options) Validate() error {
	if o.Function == "" {
		if _, err := examples.Lookup(o.Example); err != nil {
			return fmt.Errorf("--example: %w", err)
		}
	}
	if _, _, err := net.SplitHostPort(o.Addr); err != nil {
		return fmt.Errorf("--addr %q: expected HOST:PORT, e.g. 127.0.0.1:8080", o.Addr)
	}
	if o.Key != "" {
		if _, err := keyspec.Parse(o.Key); err != nil {
			return fmt.Errorf("--key: %w", err)
		}
	}
	if o.Redis != "" {
		if _, err := statestore.ParseURL(o.Redis); err != nil {
			return fmt.Errorf("--redis: %w", err)
		}
	}
	if o.Replicas < 0 || o.Replicas > maxReplicas {
		return fmt.Errorf("--replicas %d: expected 0..%d", o.Replicas, maxReplicas)
	}
	if o.Slots < 0 || o.Slots > placement.MaxSlots {
		return fmt.Errorf("--slots %d: expected 1..%d (0 for the default %d)", o.Slots, placement.MaxSlots, placement.DefaultSlots)
	}
	if o.ScaleToZeroAfter < 0 {
		return fmt.Errorf("--scale-to-zero-after %s: expected 0 (never) or more", o.ScaleToZeroAfter)
	}
	return nil
}

// Run serves until ctx ends, then drains every replica and reports.
func Run(ctx context.Context, o Options, out io.Writer, log *zap.SugaredLogger) error {
	if err := o.Validate(); err != nil {
		return err
	}
	ex, _ := examples.Lookup(o.Example)
	if o.Function != "" {
		ex = examples.Example{Name: "function", Try: func(addr string) string {
			return fmt.Sprintf("curl -s -XPOST -H 'Kstate-Key: k1' -d '{}' http://%s/", addr)
		}}
	}
	if o.Slots == 0 {
		o.Slots = placement.DefaultSlots
	}

	storeURL, storeName := o.Redis, statestore.Redacted(o.Redis)
	if storeURL == "" {
		mr := miniredis.NewMiniRedis()
		if err := mr.StartAddr("127.0.0.1:0"); err != nil {
			return fmt.Errorf("starting the embedded store: %w", err)
		}
		defer mr.Close()
		storeURL, storeName = "redis://"+mr.Addr(), "the embedded store"
	} else if err := pingStore(ctx, storeURL); err != nil {
		return fmt.Errorf("--redis %s: %w", storeName, err)
	}

	router, err := affinity.NewRouter(affinity.Options{Slots: o.Slots})
	if err != nil {
		return err
	}
	defer router.Close()
	var outMu sync.Mutex
	printf := func(format string, args ...any) {
		outMu.Lock()
		defer outMu.Unlock()
		fmt.Fprintf(out, format, args...)
	}
	c := &cluster{
		o: o, ex: ex, storeURL: storeURL, router: router, log: log,
		events: func(format string, args ...any) {
			printf("[%s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
		},
	}
	c.lastRequest.Store(time.Now().UnixNano())

	var spec *keyspec.Spec
	if ks := c.keySpec(); ks != "" {
		s := keyspec.MustParse(ks) // validated above or an example's own
		spec = &s
	}
	lis, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return fmt.Errorf("--addr %s: %w", o.Addr, err)
	}
	front := &http.Server{Handler: c.handler(ctx, &affinity.Proxy{Router: router, Spec: spec, ErrorLog: log.Warnf}), ReadHeaderTimeout: 10 * time.Second}
	go front.Serve(lis)
	addr := lis.Addr().String()

	what := fmt.Sprintf("example %q", ex.Name)
	if o.Function != "" {
		what = fmt.Sprintf("function %q", o.Function)
	}
	printf("kstate dev: %s on http://%s (store: %s, %s durability)\n", what, addr, storeName, durabilityOf(o))
	printf("  try:   %s\n", ex.Try(addr))
	printf("  scale: go run ./cmd/kn-kstate dev scale N --addr %s\n", addr)
	printf("  Ctrl-C flushes every entity and stops.\n")
	if err := c.scale(ctx, o.Replicas); err != nil {
		front.Close()
		c.scale(context.Background(), 0)
		return err
	}
	c.lastRequest.Store(time.Now().UnixNano()) // idle time counts from here
	if o.Ready != nil {
		o.Ready(addr)
	}
	go c.autoscale(ctx)
	if o.StatusEvery > 0 {
		go c.printStatus(ctx, o.StatusEvery, printf)
	}

	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	front.Shutdown(sctx)
	if err := c.scale(context.Background(), 0); err != nil {
		return err
	}
	st := c.status()
	printf("kstate dev: stopped after %d requests; the final flush wrote %d dirty entities to %s, so nothing is left unwritten.\n",
		st.Requests, c.gone.drainFlushed.Load(), storeName)
	return nil
}

func durabilityOf(o Options) agent.Durability {
	if o.Durability != "" {
		return o.Durability
	}
	return agent.DurabilityAsync
}

// handler serves the control paths and routes everything else, noting when
// requests come so the autoscaler can tell idle time.
func (c *cluster) handler(ctx context.Context, proxy http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(ScalePath, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			affinity.WriteError(w, http.StatusMethodNotAllowed, "POST "+ScalePath+"?replicas=N")
			return
		}
		n, err := strconv.Atoi(r.URL.Query().Get("replicas"))
		if err != nil {
			affinity.WriteError(w, http.StatusBadRequest, fmt.Sprintf("replicas %q: expected a whole number", r.URL.Query().Get("replicas")))
			return
		}
		c.lastRequest.Store(time.Now().UnixNano())
		if err := c.scale(ctx, n); err != nil {
			affinity.WriteError(w, http.StatusBadRequest, err.Error())
			return
		}
		writeJSON(w, c.status())
	})
	mux.HandleFunc(StatusPath, func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, c.status()) })
	mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.lastRequest.Store(time.Now().UnixNano())
		defer c.lastRequest.Store(time.Now().UnixNano())
		proxy.ServeHTTP(w, r)
	}))
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func (c *cluster) printStatus(ctx context.Context, every time.Duration, printf func(string, ...any)) {
	t := time.NewTicker(every)
	defer t.Stop()
	last := ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if line := c.status().line(); line != last {
			printf("[%s] %s\n", time.Now().Format("15:04:05"), line)
			last = line
		}
	}
}

// pingStore fails fast, with the reason, when a given Redis is unreachable.
func pingStore(ctx context.Context, url string) error {
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	s, err := statestore.NewRedis(pctx, url, statestore.RedisOptions{})
	if err == nil {
		defer s.Close()
		err = s.Ping(pctx)
	}
	if errors.Is(err, statestore.ErrUnavailable) {
		return fmt.Errorf("cannot reach Redis: %w", err)
	}
	return err
}
