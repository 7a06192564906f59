// Command stateless-counter serves the benchmarks' stateless baseline
// (package stateless) as a Knative Service: on $PORT (default 8080), with
// Redis at $REDIS_URL. It connects to Redis before it listens, so Knative's
// default TCP readiness probe counts that as part of its cold start, as
// kstate's agent does its store connection.
package main

import (
	"context"
	"log"
	"net/http"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kstate-dev/kstate/test/bench/stateless"
)

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	opts, err := redis.ParseURL(os.Getenv("REDIS_URL"))
	if err != nil {
		log.Fatalf("stateless-counter: REDIS_URL: %v", err)
	}
	rdb := redis.NewClient(opts)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		log.Fatalf("stateless-counter: Redis at %s: %v", opts.Addr, err)
	}
	srv := &http.Server{Addr: ":" + port, Handler: stateless.Handler(rdb), ReadHeaderTimeout: 10 * time.Second}
	log.Printf("stateless-counter: listening on :%s, Redis at %s", port, opts.Addr)
	log.Fatal(srv.ListenAndServe())
}
