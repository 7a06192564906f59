package bench

import (
	"context"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/Shopify/toxiproxy/v2/toxics"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/kstate-dev/kstate/internal/redistest"
)

// delayToxicType is the toxiproxy toxic type of preciseLatency.
const delayToxicType = "kstate_bench_latency"

func init() { toxics.Register(delayToxicType, new(preciseLatency)) }

// preciseLatency is toxiproxy's latency toxic with microsecond resolution:
// every chunk is passed on Micros after toxiproxy read it. The stock toxic
// counts in milliseconds and waits on Go timers, which fire up to a
// millisecond late when the runtime is idle; this one hands each chunk to a
// delay line that sleeps on its own OS thread.
type preciseLatency struct {
	Micros int64 `json:"micros"`
}

// GetBufferSize implements toxics.BufferedToxic, as the stock toxic does.
func (t *preciseLatency) GetBufferSize() int { return 1024 }

// Pipe implements toxics.Toxic.
func (t *preciseLatency) Pipe(stub *toxics.ToxicStub) {
	line := delayLineFor(time.Duration(t.Micros) * time.Microsecond)
	for {
		select {
		case <-stub.Interrupt:
			return
		case c := <-stub.Input:
			if c == nil {
				stub.Close()
				return
			}
			select {
			case <-line.hold(c.Timestamp):
			case <-stub.Interrupt:
				stub.Output <- c // never drop data
				return
			}
			stub.Output <- c
		}
	}
}

// delayLine releases chunks a fixed delay after they were read. The delay
// is the same for every chunk, so release order is arrival order: one FIFO
// and one thread serve every connection. The thread sleeps with nanosleep
// and a timer slack of 1 ns, ending early by its measured wake-up latency.
type delayLine struct {
	delay time.Duration
	in    chan held

	mu   sync.Mutex
	late []time.Duration // release time minus due time, per chunk
}

type held struct {
	due  time.Time
	done chan struct{}
}

var (
	linesMu sync.Mutex
	lines   = map[time.Duration]*delayLine{}
)

// delayLineFor returns the process's delay line for d, starting it once.
func delayLineFor(d time.Duration) *delayLine {
	linesMu.Lock()
	defer linesMu.Unlock()
	if l := lines[d]; l != nil {
		return l
	}
	l := &delayLine{delay: d, in: make(chan held, 1<<16)}
	ready := make(chan struct{})
	go l.run(ready)
	<-ready
	lines[d] = l
	return l
}

// hold returns a channel closed delay after read.
func (l *delayLine) hold(read time.Time) <-chan struct{} {
	h := held{due: read.Add(l.delay), done: make(chan struct{})}
	l.in <- h
	return h.done
}

const prSetTimerSlack = 29 // prctl(2)

func (l *delayLine) run(ready chan<- struct{}) {
	runtime.LockOSThread() // for good: the timer slack is per thread
	syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerSlack, 1, 0)
	// Calibrate: how much later than asked does nanosleep return?
	var over []time.Duration
	for range 50 {
		start := time.Now()
		nanosleep(200 * time.Microsecond)
		over = append(over, time.Since(start)-200*time.Microsecond)
	}
	early := quantile(over, 0.5)
	close(ready)
	for h := range l.in {
		if wait := time.Until(h.due) - early; wait > 0 {
			nanosleep(wait)
		}
		close(h.done)
		late := time.Since(h.due)
		l.mu.Lock()
		if len(l.late) < 4<<20 {
			l.late = append(l.late, late)
		}
		l.mu.Unlock()
	}
}

func nanosleep(d time.Duration) {
	ts := syscall.NsecToTimespec(d.Nanoseconds())
	for syscall.Nanosleep(&ts, &ts) == syscall.EINTR {
	}
}

// delivered returns the delay actually added to the chunks released since
// the last call: the median and p99 of delay plus lateness.
func (l *delayLine) delivered() (p50, p99 time.Duration, n int) {
	l.mu.Lock()
	late := l.late
	l.late = nil
	l.mu.Unlock()
	if len(late) == 0 {
		return 0, 0, 0
	}
	return l.delay + quantile(late, 0.5), l.delay + quantile(late, 0.99), len(late)
}

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

var toxiServer = sync.OnceValue(func() *toxiproxy.ApiServer {
	return toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
})

// startDelayedRedis starts redis-server (configured as production must be)
// behind a toxiproxy on 127.0.0.1 that adds delay each way and counts the
// commands clients send.
func startDelayedRedis(t *testing.T, delay time.Duration) *delayedRedis {
	t.Helper()
	srv := redistest.Start(t)
	p := toxiproxy.NewProxy(toxiServer(), fmt.Sprintf("redis-%s", srv.Addr()), "127.0.0.1:0", srv.Addr())
	if err := p.Start(); err != nil {
		t.Fatalf("starting toxiproxy: %v", err)
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
func (d *delayedRedis) setDelay(t *testing.T, delay time.Duration) {
	t.Helper()
	for _, s := range []string{"upstream", "downstream"} {
		name := "delay-" + s
		if d.proxy.Toxics.GetToxic(name) != nil {
			if err := d.proxy.Toxics.RemoveToxic(context.Background(), name); err != nil {
				t.Fatalf("removing toxic %s: %v", name, err)
			}
		}
		if delay <= 0 {
			continue
		}
		js := fmt.Sprintf(`{"name": %q, "type": %q, "stream": %q, "attributes": {"micros": %d}}`,
			name, delayToxicType, s, delay.Microseconds())
		if _, err := d.proxy.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
			t.Fatalf("adding toxic %s: %v", name, err)
		}
	}
	d.delay = delay
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
	p50, p99, n := delayLineFor(d.delay).delivered()
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
