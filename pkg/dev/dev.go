package dev

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/alicebob/miniredis/v2"
	"go.uber.org/zap"

	"github.com/kstate-dev/kstate/examples"
	"github.com/kstate-dev/kstate/pkg/agent"
	"github.com/kstate-dev/kstate/pkg/keyspec"
	"github.com/kstate-dev/kstate/pkg/sdk"
	"github.com/kstate-dev/kstate/statestore"
)

// Options configure a dev run.
type Options struct {
	Example    string
	Addr       string // serving address
	Redis      string // store URL; empty: the embedded store
	Key        string // key spec; empty: the example's own, else the defaults
	Slots      int
	Durability agent.Durability
	// FlushInterval is the write-behind interval.
	FlushInterval time.Duration
	// Ready, when set, is called with the serving address once it serves.
	Ready func(addr string)
}

// Validate names the first bad option.
func (o *Options) Validate() error {
	if _, err := examples.Lookup(o.Example); err != nil {
		return fmt.Errorf("--example: %w", err)
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
	return nil
}

// Run serves until ctx ends, then flushes and reports.
func Run(ctx context.Context, o Options, out io.Writer, log *zap.SugaredLogger) error {
	if err := o.Validate(); err != nil {
		return err
	}
	ex, _ := examples.Lookup(o.Example)

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

	fnLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("function listener: %w", err)
	}
	fnCtx, stopFn := context.WithCancel(context.WithoutCancel(ctx))
	fnDone := make(chan error, 1)
	go func() {
		fnDone <- sdk.ServeListener(fnCtx, fnLis, ex.Handler(), sdk.WithLogger(log), sdk.WithDrainTimeout(time.Second))
	}()
	defer func() { stopFn(); <-fnDone }()

	cfg := agent.DefaultConfig()
	cfg.Pod = "dev-0"
	cfg.Addr = o.Addr
	cfg.AdminAddr = "127.0.0.1:0"
	cfg.FunctionAddr = fnLis.Addr().String()
	cfg.Space = "dev/" + ex.Name
	cfg.KeySpec = ex.Key
	if o.Key != "" {
		cfg.KeySpec = o.Key
	}
	cfg.StoreURL = storeURL
	if o.Slots > 0 {
		cfg.Slots = o.Slots
	}
	if o.Durability != "" {
		cfg.Durability = o.Durability
	}
	if o.FlushInterval > 0 {
		cfg.FlushInterval = o.FlushInterval
	}
	srv, err := agent.NewServer(ctx, cfg, log)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "kstate dev: example %q on http://%s (store: %s, %s durability, flush every %s)\n",
		ex.Name, srv.Addr(), storeName, cfg.Durability, cfg.FlushInterval)
	fmt.Fprintf(out, "  try: %s\n", ex.Try(srv.Addr()))
	fmt.Fprintln(out, "  Ctrl-C flushes every entity and stops.")
	if o.Ready != nil {
		go func() {
			waitReady(ctx, srv.Agent)
			o.Ready(srv.Addr())
		}()
	}
	sum, err := srv.Run(ctx)
	if err != nil {
		fmt.Fprintf(out, "kstate dev: stopped with unflushed state: %v\n", err)
		return err
	}
	fmt.Fprintf(out, "kstate dev: stopped after %d requests; the final flush wrote %d dirty entities to %s in %s, so nothing is left unwritten.\n",
		srv.Agent.Stats().GetRequests(), sum.Flushed, storeName, sum.Took.Round(time.Millisecond))
	return nil
}

func waitReady(ctx context.Context, a *agent.Agent) {
	for !a.Ready() && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
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
