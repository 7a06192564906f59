package bench

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/redis/go-redis/v9"

	"github.com/kstate-dev/kstate/internal/redistest"
	benchdelay "github.com/kstate-dev/kstate/test/bench/delay"
)

// delayedRedis is a private redis-server and a toxiproxy in front of it
// that delays both directions.
type delayedRedis struct {
	*redistest.Server
	proxy *toxiproxy.Proxy
	delay time.Duration
	// sent counts the commands clients send through the proxy.
	sent *cmdCounts
	// URL reaches Redis through the proxy; Server.URL() directly.
	URL string
}

// startDelayedRedis starts redis-server (configured as production must be)
// behind a toxiproxy on 127.0.0.1 that adds delay each way and counts the
// commands clients send.
func startDelayedRedis(t *testing.T, delay time.Duration) *delayedRedis {
	t.Helper()
	srv := redistest.Start(t)
	p, err := benchdelay.NewProxy(fmt.Sprintf("redis-%s", srv.Addr()), "127.0.0.1:0", srv.Addr(), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	d := &delayedRedis{Server: srv, proxy: p, URL: "redis://" + p.Listen, sent: countsFor(p.Name)}
	js := fmt.Sprintf(`{"name": "count", "type": %q, "stream": "upstream", "attributes": {"counter": %q}}`, countToxicType, p.Name)
	if _, err := p.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
		t.Fatalf("adding the command counter: %v", err)
	}
	d.setDelay(t, delay)
	return d
}

// setDelay changes the delay each way, on open connections too.
func (d *delayedRedis) setDelay(t *testing.T, to time.Duration) {
	t.Helper()
	if err := benchdelay.Set(d.proxy, to); err != nil {
		t.Fatal(err)
	}
	d.delay = to
}

// rtt is the median PING round trip over n pings through url.
func rtt(t *testing.T, url string, n int) time.Duration {
	t.Helper()
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opts)
	defer c.Close()
	ctx := context.Background()
	if err := c.Ping(ctx).Err(); err != nil { // connect first
		t.Fatalf("PING %s: %v", url, err)
	}
	var d []time.Duration
	for range n {
		start := time.Now()
		if err := c.Ping(ctx).Err(); err != nil {
			t.Fatalf("PING %s: %v", url, err)
		}
		d = append(d, time.Since(start))
	}
	return quantile(d, 0.5)
}

// delayNote describes the delay for the table: what was configured, the
// PING round trip it adds, and what the delay line delivered.
func (d *delayedRedis) delayNote(t *testing.T) string {
	t.Helper()
	if d.delay <= 0 {
		return "Redis on loopback, no delay added"
	}
	p50, p99, n := benchdelay.LineFor(d.delay).Delivered()
	direct, proxied := rtt(t, d.Server.URL(), 200), rtt(t, d.URL, 200)
	return fmt.Sprintf("Redis behind toxiproxy, %s added each way; PING round trip %s direct, %s through the proxy (idle, median of 200); "+
		"one-way delay delivered during the run: median %s, p99 %s over %d chunks",
		us(d.delay), us(direct), us(proxied), us(p50), us(p99), n)
}

func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond)) }

// quantile returns the q-quantile of d (nearest rank); d is sorted in
// place.
func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	i := int(q*float64(len(d))+0.999999) - 1
	return d[min(max(i, 0), len(d)-1)]
}
