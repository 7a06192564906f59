// kstate-agent is the per-pod sidecar of a kstate Service. See pkg/agent.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"knative.dev/pkg/logging"

	"github.com/kstate-dev/kstate/pkg/agent"
)

func main() {
	cfg := agent.DefaultConfig()
	fs := flag.NewFlagSet("kstate-agent", flag.ContinueOnError)
	level := fs.String("log-level", "info", "log level (debug, info, warn, error)")
	if err := cfg.Load(fs, os.Args[1:], os.LookupEnv); err != nil {
		if err == flag.ErrHelp {
			return
		}
		fmt.Fprintln(os.Stderr, "kstate-agent:", err)
		os.Exit(2)
	}
	logger, _ := logging.NewLogger("", *level)
	defer logger.Sync()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	srv, err := agent.NewServer(ctx, cfg, logger)
	if err != nil {
		logger.Fatalw("kstate-agent cannot start", "error", err)
	}
	if _, err := srv.Run(ctx); err != nil {
		logger.Errorw("kstate-agent stopped with an error", "error", err)
		os.Exit(1)
	}
}
