// Command redis-delay is a TCP proxy that adds a fixed delay each way
// (package delay): the cluster benchmarks (test/e2e, P2 and P5) put each
// side's Redis behind it, as the dev benchmarks do in process. It prints
// one line, "listening on ADDR", once it accepts connections, and runs until
// SIGTERM or SIGINT. Benchmark infrastructure, not part of kstate.
//
//	redis-delay -listen 10.200.0.1:0 -upstream 10.200.0.1:6379 -delay 250us
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/kstate-dev/kstate/test/bench/delay"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	upstream := flag.String("upstream", "", "Redis address to forward to (required)")
	d := flag.Duration("delay", 0, "delay added each way")
	flag.Parse()
	if *upstream == "" || *d < 0 {
		log.Fatalf("redis-delay: -upstream is required and -delay must be 0 or more (got %q, %s)", *upstream, *d)
	}
	p, err := delay.NewProxy("redis", *listen, *upstream, *d)
	if err != nil {
		log.Fatalf("redis-delay: %v", err)
	}
	fmt.Printf("listening on %s\n", p.Listen)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	p50, p99, n := delay.LineFor(*d).Delivered()
	fmt.Fprintf(os.Stderr, "redis-delay: one-way delay delivered: median %s, p99 %s over %d chunks\n", p50, p99, n)
	p.Stop()
}
