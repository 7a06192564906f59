package chaos

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/kstate-dev/kstate/internal/proctest"
)

const (
	// giveUp bounds the retries of one event: past it the event counts as
	// failed, and the scenario fails.
	giveUp = 60 * time.Second
	// slowAttempt: attempts slower than this are logged (shown with -v or
	// when the scenario fails), to tell where a scenario spends its time.
	slowAttempt = 2 * time.Second
	// eventSource is the CloudEvents source of every event of the load.
	eventSource = "/kstate/chaos"
)

// ack is one acknowledged increment: the event's id, the count its reply
// gave, and when the reply came.
type ack struct {
	id    string
	count int64
	at    time.Time
}

// load sends increments as CloudEvents (binary mode, sdk-go's encoding),
// each retried with the same id until it is acknowledged.
type load struct {
	t    *testing.T
	url  string
	keys []string
	pace time.Duration // pause between a worker's events (a trickle); 0: none
	// redeliverEvery: every n-th acknowledged event is sent again at once
	// with its source and id, as a broker does when an acknowledgement is
	// lost; 0: never.
	redeliverEvery int
	redelivered    atomic.Int64

	mu       sync.Mutex
	acks     map[string][]ack // key -> acks in reply order
	failures []string         // events that were answered with a final error

	total   atomic.Int64 // acknowledged
	retries atomic.Int64 // attempts answered with a retryable error
	stop    chan struct{}
	wg      sync.WaitGroup
}

// startLoad starts workers sending increments over nkeys keys until stop.
func startLoad(t *testing.T, url string, workers, nkeys int, pace time.Duration, redeliverEvery int) *load {
	l := &load{t: t, url: url, pace: pace, redeliverEvery: redeliverEvery, acks: map[string][]ack{}, stop: make(chan struct{})}
	for i := 0; i < nkeys; i++ {
		l.keys = append(l.keys, fmt.Sprintf("c-%d", i))
	}
	for w := 0; w < workers; w++ {
		l.wg.Add(1)
		go l.work(w)
	}
	t.Cleanup(l.halt)
	return l
}

func (l *load) work(w int) {
	defer l.wg.Done()
	for i := 0; ; i++ {
		select {
		case <-l.stop:
			return
		default:
		}
		// Workers walk the keys with different strides, so a key gets
		// concurrent events from several workers.
		key := l.keys[(w*7+i*(w+1))%len(l.keys)]
		id := fmt.Sprintf("w%d-%d", w, i)
		if count, ok := l.deliver(key, id); ok && l.redeliverEvery > 0 && i%l.redeliverEvery == 0 {
			l.redeliver(key, id, count)
		}
		if l.pace > 0 {
			select {
			case <-l.stop:
				return
			case <-time.After(l.pace):
			}
		}
	}
}

// deliver sends one increment until it is acknowledged or fails for good.
// An event in flight when the load stops is still delivered: the ledger
// never has an event that may or may not have been applied.
func (l *load) deliver(key, id string) (int64, bool) {
	deadline := time.Now().Add(giveUp)
	backoff := 5 * time.Millisecond
	var last string
	for time.Now().Before(deadline) {
		began := time.Now()
		ans, err := send(l.url, event(key, id))
		if took := time.Since(began); took > slowAttempt {
			l.t.Logf("event %s (key %s): an attempt took %v: %v %v", id, key, took.Round(time.Millisecond), ans, err)
		}
		switch {
		case err == nil && ans.Status/100 == 2:
			n, err := proctest.ReplyCount(ans, key)
			if err != nil {
				l.fail(fmt.Sprintf("event %s (key %s): %v", id, key, err))
				return 0, false
			}
			l.mu.Lock()
			l.acks[key] = append(l.acks[key], ack{id: id, count: n, at: time.Now()})
			l.mu.Unlock()
			l.total.Add(1)
			return n, true
		case err == nil && !retryable(ans.Status):
			l.fail(fmt.Sprintf("event %s (key %s): final answer %s", id, key, ans))
			return 0, false
		case err != nil:
			last = err.Error()
		default:
			last = ans.String()
		}
		l.retries.Add(1)
		time.Sleep(backoff)
		backoff = min(2*backoff, 200*time.Millisecond)
	}
	l.fail(fmt.Sprintf("event %s (key %s): not acknowledged within %v; last answer: %s", id, key, giveUp, last))
	return 0, false
}

// redeliver sends an acknowledged event again: it must be answered as a
// duplicate, with the count of its first answer. Retryable answers are
// retried, as a broker would.
func (l *load) redeliver(key, id string, count int64) {
	deadline := time.Now().Add(giveUp)
	for time.Now().Before(deadline) {
		ans, err := send(l.url, event(key, id))
		if err != nil || retryable(ans.Status) {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		n, err := proctest.ReplyCount(ans, key)
		if err != nil || n != count || ans.Header.Get("Kstate-Duplicate") == "" {
			l.fail(fmt.Sprintf("redelivered event %s (key %s): count %d, Kstate-Duplicate %q (%v); want the first answer's count %d, marked duplicate",
				id, key, n, ans.Header.Get("Kstate-Duplicate"), err, count))
		}
		l.redelivered.Add(1)
		return
	}
	l.fail(fmt.Sprintf("redelivered event %s (key %s): not answered within %v", id, key, giveUp))
}

// retryable are the answers after which nothing was applied, or the event
// may be re-sent with its id: overload, a pod going away, a slot moving.
func retryable(status int) bool {
	switch status {
	case http.StatusTooManyRequests, http.StatusMisdirectedRequest, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

func (l *load) fail(msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failures = append(l.failures, msg)
}

// waitAcked waits until n more increments than now were acknowledged: the
// load makes progress at this point of the scenario.
func (l *load) waitAcked(n int64) {
	l.t.Helper()
	want := l.total.Load() + n
	proctest.WaitFor(l.t, giveUp, fmt.Sprintf("%d acknowledged increments", want), func() bool { return l.total.Load() >= want })
}

// halt stops the workers once their events in flight are acknowledged.
func (l *load) halt() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// ledger returns the acknowledgements per key, after halt.
func (l *load) ledger() map[string][]ack {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.failures) > 0 {
		l.t.Errorf("%d events failed for good; first: %s", len(l.failures), strings.Join(l.failures[:min(5, len(l.failures))], "; "))
	}
	out := make(map[string][]ack, len(l.acks))
	for k, v := range l.acks {
		out[k] = append([]ack(nil), v...)
	}
	return out
}

// event is the increment of key by 1 with the given id.
func event(key, id string) cloudevents.Event {
	ev := cloudevents.NewEvent()
	ev.SetID(id)
	ev.SetSource(eventSource)
	ev.SetType("dev.kstate.counter.add")
	ev.SetExtension("partitionkey", key)
	_ = ev.SetData(cloudevents.ApplicationJSON, map[string]int{"by": 1})
	return ev
}

// send posts ev in binary mode, encoded by sdk-go, and reads the answer.
func send(url string, ev cloudevents.Event) (proctest.Answer, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
	if err != nil {
		return proctest.Answer{}, err
	}
	if err := cehttp.WriteRequest(ctx, binding.ToMessage(&ev), req); err != nil {
		return proctest.Answer{}, fmt.Errorf("encoding event %s: %w", ev.ID(), err)
	}
	return proctest.Do(req)
}
