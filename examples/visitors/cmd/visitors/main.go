// Command visitors serves the unique-visitors example function for the
// kstate agent in its pod, on $KSTATE_FUNCTION_ADDR (default 127.0.0.1:9081).
package main

import (
	"context"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/kstate-dev/kstate/examples/visitors"
	"github.com/kstate-dev/kstate/pkg/sdk"
)

func main() {
	// On SIGTERM sdk.Serve keeps answering until the agent, which drains at
	// the same time, has disconnected.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := sdk.Serve(ctx, visitors.Handler()); err != nil {
		log.Fatalf("visitors: %v", err)
	}
}
