// Package delay adds a fixed delay to TCP traffic with microsecond
// resolution, as a toxiproxy toxic: the benchmarks' stand-in for an
// in-cluster round trip to Redis (issue 7: "put Redis behind a realistic
// in-cluster round trip"). test/bench uses it in process; cmd/redis-delay
// runs it as a proxy of its own for the cluster benchmarks (test/e2e).
//
// toxiproxy's own latency toxic counts in whole milliseconds and waits on
// Go timers, which fire up to a millisecond late when the runtime is idle.
// This toxic hands every chunk to a delay line: one OS thread that sleeps
// with nanosleep at a timer slack of 1 ns. The delay is the same for every
// chunk, so release order is arrival order and one FIFO serves every
// connection. It is benchmark infrastructure, not part of kstate.
package delay

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/Shopify/toxiproxy/v2/toxics"
	"github.com/rs/zerolog"
)

// ToxicType is the toxiproxy toxic type of Latency.
const ToxicType = "kstate_bench_latency"

func init() { toxics.Register(ToxicType, new(Latency)) }

// Latency passes every chunk on Micros after toxiproxy read it.
type Latency struct {
	Micros int64 `json:"micros"`
}

// GetBufferSize implements toxics.BufferedToxic, as the stock toxic does.
func (t *Latency) GetBufferSize() int { return 1024 }

// Pipe implements toxics.Toxic.
func (t *Latency) Pipe(stub *toxics.ToxicStub) {
	line := LineFor(time.Duration(t.Micros) * time.Microsecond)
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

// Line releases chunks a fixed delay after they were read, ending its
// sleeps early by its measured wake-up latency.
type Line struct {
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
	lines   = map[time.Duration]*Line{}
)

// LineFor returns the process's delay line for d, starting it once.
func LineFor(d time.Duration) *Line {
	linesMu.Lock()
	defer linesMu.Unlock()
	if l := lines[d]; l != nil {
		return l
	}
	l := &Line{delay: d, in: make(chan held, 1<<16)}
	ready := make(chan struct{})
	go l.run(ready)
	<-ready
	lines[d] = l
	return l
}

// hold returns a channel closed delay after read.
func (l *Line) hold(read time.Time) <-chan struct{} {
	h := held{due: read.Add(l.delay), done: make(chan struct{})}
	l.in <- h
	return h.done
}

const prSetTimerSlack = 29 // prctl(2)

func (l *Line) run(ready chan<- struct{}) {
	runtime.LockOSThread() // for good: the timer slack is per thread
	syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerSlack, 1, 0)
	// Calibrate: how much later than asked does nanosleep return?
	var over []time.Duration
	for range 50 {
		start := time.Now()
		nanosleep(200 * time.Microsecond)
		over = append(over, time.Since(start)-200*time.Microsecond)
	}
	slices.Sort(over)
	early := over[len(over)/2]
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

// Delivered returns the delay actually added to the chunks released since
// the last call: the median and p99 of delay plus lateness, and how many.
func (l *Line) Delivered() (p50, p99 time.Duration, n int) {
	l.mu.Lock()
	late := l.late
	l.late = nil
	l.mu.Unlock()
	if len(late) == 0 {
		return 0, 0, 0
	}
	slices.Sort(late)
	at := func(q float64) time.Duration { return late[min(int(q*float64(len(late))), len(late)-1)] }
	return l.delay + at(0.5), l.delay + at(0.99), len(late)
}

var server = sync.OnceValue(func() *toxiproxy.ApiServer {
	return toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
})

// NewProxy starts a toxiproxy proxy from listen to upstream that delays
// both directions by d (none when d is 0).
func NewProxy(name, listen, upstream string, d time.Duration) (*toxiproxy.Proxy, error) {
	p := toxiproxy.NewProxy(server(), name, listen, upstream)
	if err := p.Start(); err != nil {
		return nil, fmt.Errorf("starting proxy %s -> %s: %w", listen, upstream, err)
	}
	if err := Set(p, d); err != nil {
		p.Stop()
		return nil, err
	}
	return p, nil
}

// Set changes p's delay each way, on open connections too.
func Set(p *toxiproxy.Proxy, d time.Duration) error {
	for _, s := range []string{"upstream", "downstream"} {
		name := "delay-" + s
		if p.Toxics.GetToxic(name) != nil {
			if err := p.Toxics.RemoveToxic(context.Background(), name); err != nil {
				return fmt.Errorf("removing toxic %s: %w", name, err)
			}
		}
		if d <= 0 {
			continue
		}
		js := fmt.Sprintf(`{"name": %q, "type": %q, "stream": %q, "attributes": {"micros": %d}}`, name, ToxicType, s, d.Microseconds())
		if _, err := p.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
			return fmt.Errorf("adding toxic %s: %w", name, err)
		}
	}
	return nil
}
