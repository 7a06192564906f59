//go:build e2e

package e2e

// Cluster versions of failure scenarios that test/chaos runs in dev mode:
// SIGTERM of a pod (async and sync), a 30 s Redis outage (killed, and
// hung), a partition between one agent and Redis past the lease TTL
// (async and sync), kill -9 of an agent with async durability, and a sync
// agent killed while cut off from Redis. They use chaosLoad, a CloudEvent
// load like ceLoad (the same events, each retried with its id until
// acknowledged) that also records every attempt's outcome and every
// acknowledgement's time and pod, so a scenario can say what the clients
// saw while it lasted and judge a bounded loss.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// chaosAck is one acknowledged event.
type chaosAck struct {
	id    string
	count int64
	at    time.Time // when the client had the answer
	pod   string    // Kstate-Pod of the answer
	dup   bool      // Kstate-Duplicate: answered with the outcome of an earlier delivery
}

// chaosAttempt is one HTTP attempt of an event: its answer's status code
// (0: no answer) and when the attempt was sent and ended.
type chaosAttempt struct {
	start, end time.Time
	code       int
}

// chaosLoad sends counter.add CloudEvents as ceLoad does (binary and
// structured mode, a broker's headers, each event retried with its id until
// a 2xx, for at most 2 minutes).
type chaosLoad struct {
	host string
	keys []string

	stop chan struct{}
	wg   sync.WaitGroup

	mu       sync.Mutex
	acks     map[string][]chaosAck // key -> acknowledged events, in the order answered
	attempts []chaosAttempt
	samples  map[int][]string // status code -> a few failed attempts, for the log
	sent     int
	retries  int
	lostErrs []string // events never acknowledged
}

func startChaosLoad(t *testing.T, host string, keys []string, workers int) *chaosLoad {
	l := &chaosLoad{host: host, keys: keys, stop: make(chan struct{}),
		acks: map[string][]chaosAck{}, samples: map[int][]string{}}
	for w := range workers {
		l.wg.Add(1)
		go l.worker(w, workers)
	}
	t.Cleanup(l.halt)
	return l
}

// chaosCounter applies the counter with two pods (min-scale 2) and the given
// extra annotations, and starts a chaosLoad of 4 workers over 40 keys named
// PREFIX-NNNN; it returns once 200 events were acknowledged.
func chaosCounter(t *testing.T, ns, prefix string, annotations map[string]string) (string, *chaosLoad) {
	t.Helper()
	ann := map[string]string{"kstate.dev/enabled": "true", "autoscaling.knative.dev/min-scale": "2"}
	for k, v := range annotations {
		ann[k] = v
	}
	host, _ := applyKsvc(t, ns, "counter", counterService(t, "counter", ann))
	waitFor(t, "two ready pods", 3*time.Minute, func() bool { return len(readyPods(t, ns, "counter-00001")) == 2 })
	load := startChaosLoad(t, host, entityKeys(prefix, 40), 4)
	waitFor(t, "load to start", time.Minute, func() bool { return load.acknowledged() > 200 })
	return host, load
}

func (l *chaosLoad) halt() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

func (l *chaosLoad) acknowledged() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sent
}

// waitAcked waits until n more events than now are acknowledged.
func (l *chaosLoad) waitAcked(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	from := l.acknowledged()
	waitFor(t, fmt.Sprintf("%d more acknowledged events", n), timeout, func() bool { return l.acknowledged() >= from+n })
}

func (l *chaosLoad) worker(w, workers int) {
	defer l.wg.Done()
	for n := 0; ; n++ {
		select {
		case <-l.stop:
			return
		default:
		}
		key := l.keys[(n*workers+w)%len(l.keys)]
		id := fmt.Sprintf("e2e-%d-%d", w, n)
		a, ok := l.deliver(key, id, w%2 == 1)
		l.mu.Lock()
		if !ok {
			l.lostErrs = append(l.lostErrs, fmt.Sprintf("event %s for key %s was never acknowledged", id, key))
			l.mu.Unlock()
			return
		}
		l.sent++
		l.acks[key] = append(l.acks[key], a)
		l.mu.Unlock()
	}
}

// deliver sends one event until a 2xx comes (for at most 2 minutes).
func (l *chaosLoad) deliver(key, id string, structured bool) (chaosAck, bool) {
	arrival := time.Now().UTC().Format(time.RFC3339Nano)
	hdr := map[string]string{
		"Traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"Prefer":      "reply",
	}
	body := `{"by": 1}`
	if structured {
		hdr["Content-Type"] = "application/cloudevents+json"
		body = fmt.Sprintf(`{"specversion":"1.0","id":%q,"source":"/apis/v1/namespaces/e2e/brokers/default","type":"counter.add",`+
			`"partitionkey":%q,"knativearrivaltime":%q,"datacontenttype":"application/json","data":{"by":1}}`, id, key, arrival)
	} else {
		for k, v := range map[string]string{
			"Ce-Specversion": "1.0", "Ce-Id": id, "Ce-Source": "/apis/v1/namespaces/e2e/brokers/default",
			"Ce-Type": "counter.add", "Ce-Partitionkey": key, "Ce-Knativearrivaltime": arrival,
			"Content-Type": "application/json",
		} {
			hdr[k] = v
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for backoff := 50 * time.Millisecond; time.Now().Before(deadline); {
		start := time.Now()
		code, out, rh, err := requestHeaders("POST", l.host, "/", body, hdr)
		end := time.Now()
		if err != nil {
			code = 0
		}
		if err == nil && code/100 == 2 {
			var r countReply
			var jerr error
			if strings.HasPrefix(rh.Get("Content-Type"), "application/cloudevents+json") {
				var ev struct {
					Data countReply `json:"data"`
				}
				jerr = json.Unmarshal([]byte(out), &ev)
				r = ev.Data
			} else {
				jerr = json.Unmarshal([]byte(out), &r)
			}
			if jerr == nil && r.Key == key {
				l.mu.Lock()
				l.attempts = append(l.attempts, chaosAttempt{start, end, code})
				l.mu.Unlock()
				return chaosAck{id: id, count: r.Count, at: end, pod: rh.Get("Kstate-Pod"), dup: rh.Get("Kstate-Duplicate") == "true"}, true
			}
			err = fmt.Errorf("reply %q (%s) is not a count of %s", out, rh.Get("Content-Type"), key)
			code = -1
		}
		l.mu.Lock()
		l.attempts = append(l.attempts, chaosAttempt{start, end, code})
		l.retries++
		if len(l.samples[code]) < 3 {
			l.samples[code] = append(l.samples[code], fmt.Sprintf("%s %s at %s after %s: err %v body %.160q",
				key, id, start.Format("15:04:05.000"), end.Sub(start).Round(time.Millisecond), err, out))
		}
		l.mu.Unlock()
		time.Sleep(backoff)
		backoff = min(2*backoff, time.Second)
	}
	return chaosAck{}, false
}

// outcomes counts the attempts that ended in [from, to) by status code
// ("no answer" for transport errors, "bad reply" for a 2xx that was not a
// count), and says how long the slowest took.
func (l *chaosLoad) outcomes(from, to time.Time) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	byCode := map[int]int{}
	var slowest time.Duration
	for _, a := range l.attempts {
		if a.end.Before(from) || !a.end.Before(to) {
			continue
		}
		byCode[a.code]++
		slowest = max(slowest, a.end.Sub(a.start))
	}
	codes := make([]int, 0, len(byCode))
	for c := range byCode {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	var parts []string
	for _, c := range codes {
		name := strconv.Itoa(c)
		switch c {
		case 0:
			name = "no answer"
		case -1:
			name = "bad reply"
		}
		parts = append(parts, fmt.Sprintf("%s: %d", name, byCode[c]))
	}
	if len(parts) == 0 {
		return "no attempt"
	}
	return fmt.Sprintf("%s (slowest %s)", strings.Join(parts, ", "), slowest.Round(time.Millisecond))
}

// slowestStarted is how long the slowest attempt sent after from took.
func (l *chaosLoad) slowestStarted(from time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	var d time.Duration
	for _, a := range l.attempts {
		if !a.start.Before(from) {
			d = max(d, a.end.Sub(a.start))
		}
	}
	return d.Round(time.Millisecond)
}

// ackTimes is when the events pod acknowledged in [from, to) were
// answered, as offsets from from, in order; a "dup" marks an answer with
// the outcome of an earlier delivery (Kstate-Duplicate).
func (l *chaosLoad) ackTimes(pod string, from, to time.Time) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	type at struct {
		d   time.Duration
		dup bool
	}
	var ats []at
	for _, acks := range l.acks {
		for _, a := range acks {
			if a.pod == pod && !a.at.Before(from) && a.at.Before(to) {
				ats = append(ats, at{a.at.Sub(from).Round(time.Millisecond), a.dup})
			}
		}
	}
	sort.Slice(ats, func(i, j int) bool { return ats[i].d < ats[j].d })
	out := make([]string, len(ats))
	for i, a := range ats {
		out[i] = a.d.String()
		if a.dup {
			out[i] += " dup"
		}
	}
	return out
}

// refused counts the attempts that ended in [from, to) without a 2xx.
func (l *chaosLoad) refused(from, to time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, a := range l.attempts {
		if !a.end.Before(from) && a.end.Before(to) && a.code/100 != 2 {
			n++
		}
	}
	return n
}

// ackedBy counts the events acknowledged in [from, to), by answering pod.
func (l *chaosLoad) ackedBy(from, to time.Time) map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	by := map[string]int{}
	for _, acks := range l.acks {
		for _, a := range acks {
			if !a.at.Before(from) && a.at.Before(to) {
				by[a.pod]++
			}
		}
	}
	return by
}

// chaosVerdict is what check found.
type chaosVerdict struct {
	acked, lost, retries int
	lostKeys             map[string]int64
}

// check stops the load and compares every key's count, read back through
// the Service, with the events acknowledged for it. A count above the
// acknowledged events is always an error (an event applied twice). A count
// below is an error unless loss is given and accepts it. Without loss, the
// counts the acknowledged events of a key were answered with must also be
// exactly 1..n (no count answered to two events: one writer).
func (l *chaosLoad) check(t *testing.T, loss func(key string, lost int64, acks []chaosAck) error) chaosVerdict {
	t.Helper()
	l.halt()
	l.mu.Lock()
	defer l.mu.Unlock()
	v := chaosVerdict{acked: l.sent, retries: l.retries, lostKeys: map[string]int64{}}
	t.Logf("load: %d events acknowledged, %d retries", l.sent, l.retries)
	codes := make([]int, 0, len(l.samples))
	for c := range l.samples {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	for _, c := range codes {
		for _, s := range l.samples[c] {
			t.Logf("  retried (%d): %s", c, s)
		}
	}
	for _, e := range l.lostErrs {
		t.Error(e)
	}
	if l.sent == 0 {
		t.Fatal("load: no event was acknowledged")
	}
	for _, key := range l.keys {
		acks := l.acks[key]
		acked := int64(len(acks))
		got := count(t, l.host, "GET", key, "").Count
		switch {
		case got > acked:
			t.Errorf("key %s: count %d, but %d events were acknowledged (%+d: applied twice)", key, got, acked, got-acked)
		case got < acked:
			v.lost += int(acked - got)
			v.lostKeys[key] = acked - got
			if loss == nil {
				t.Errorf("key %s: count %d, but %d events were acknowledged (%d lost)", key, got, acked, acked-got)
			} else if err := loss(key, acked-got, acks); err != nil {
				t.Errorf("key %s: %d acknowledged events lost: %v", key, acked-got, err)
			}
		}
		if loss != nil {
			continue
		}
		seen := map[int64]string{}
		for _, a := range acks {
			if other, dup := seen[a.count]; dup {
				t.Errorf("doubled: key %s count %d answered to %s and %s", key, a.count, other, a.id)
			}
			seen[a.count] = a.id
		}
		for c := int64(1); c <= acked; c++ {
			if _, ok := seen[c]; !ok {
				t.Errorf("key %s: no acknowledged event was answered with count %d of 1..%d", key, c, acked)
				break
			}
		}
	}
	return v
}

// chaosStats is the part of an agent's /.kstate/stats these tests read
// (protojson: 64-bit integers are strings, zero fields left out).
type chaosStats struct {
	Pod             string `json:"pod"`
	Entities        int64  `json:"entities,string"`
	DirtyEntities   int64  `json:"dirtyEntities,string"`
	DirtyBytes      int64  `json:"dirtyBytes,string"`
	FlushLagMs      int64  `json:"flushLagMs,string"`
	Requests        int64  `json:"requests,string"`
	Flushes         int64  `json:"flushes,string"`
	FlushedEntities int64  `json:"flushedEntities,string"`
	RejectedWrites  int64  `json:"rejectedWrites,string"`
	HandoffsIn      int64  `json:"handoffsIn,string"`
	HandoffsOut     int64  `json:"handoffsOut,string"`
	Ready           bool   `json:"ready"`
	Slots           []struct {
		Slot uint32 `json:"slot"`
	} `json:"slots"`
}

func chaosStatsOf(t *testing.T, ns, pod string) chaosStats {
	t.Helper()
	out := mustKubectl(t, "", "get", "--raw", fmt.Sprintf("/api/v1/namespaces/%s/pods/%s:8080/proxy/.kstate/stats", ns, pod))
	var s chaosStats
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("stats of %s: %v: %s", pod, err, out)
	}
	return s
}

func (s chaosStats) String() string {
	return fmt.Sprintf("%d slots, %d entities (%d dirty, %d B, flush lag %d ms), %d requests, %d flushes, %d rejected writes, handoffs in/out %d/%d, ready %v",
		len(s.Slots), s.Entities, s.DirtyEntities, s.DirtyBytes, s.FlushLagMs, s.Requests, s.Flushes, s.RejectedWrites, s.HandoffsIn, s.HandoffsOut, s.Ready)
}

// TestSigtermUnderLoad: one of two pods is deleted (the kubelet SIGTERMs its
// containers; the agent drains, flushes and releases its slots) while
// CloudEvents flow, with the default (async) durability and with sync. The
// ReplicaSet starts a replacement; no acknowledged event is lost or applied
// twice, and no count is answered to two events.
func TestSigtermUnderLoad(t *testing.T) {
	t.Parallel()
	sigtermUnderLoad(t, "async")
}

// TestSigtermSyncUnderLoad is TestSigtermUnderLoad with durability sync.
func TestSigtermSyncUnderLoad(t *testing.T) {
	t.Parallel()
	sigtermUnderLoad(t, "sync")
}

// sigtermUnderLoad is one run of TestSigterm*. (Each durability is its own
// test rather than a subtest: namespace names the namespace after the test.)
func sigtermUnderLoad(t *testing.T, durability string) {
	ns, _ := kstateNamespace(t)
	var ann map[string]string
	if durability == "sync" {
		ann = map[string]string{"kstate.dev/durability": "sync"}
	}
	_, load := chaosCounter(t, ns, "term", ann)
	pods := readyPods(t, ns, "counter-00001")
	victim := pods[0]
	before := chaosStatsOf(t, ns, victim)
	t.Logf("victim %s before SIGTERM: %s", victim, before)

	at := load.acknowledged()
	start := time.Now()
	mustKubectl(t, "", "-n", ns, "delete", "pod", victim, "--wait=false")
	gone := waitFor(t, "the deleted pod to be gone", 3*time.Minute, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := kubectl(ctx, "", "-n", ns, "get", "pod", victim, "-o", "name")
		return err != nil && strings.Contains(err.Error(), "NotFound")
	})
	t.Logf("pod %s deleted after %d events; gone %s later; attempts meanwhile: %s",
		victim, at, gone.Round(time.Millisecond), load.outcomes(start, time.Now()))
	waitFor(t, "a replacement pod to be Ready", 3*time.Minute, func() bool {
		p := readyPods(t, ns, "counter-00001")
		return len(p) == 2 && !contains(p, victim)
	})
	t.Logf("two pods Ready again %s after the delete: %v", time.Since(start).Round(time.Millisecond), readyPods(t, ns, "counter-00001"))
	load.waitAcked(t, 300, 2*time.Minute)
	end := time.Now()
	t.Logf("attempts from the delete to the end: %s", load.outcomes(start, end))
	t.Logf("acknowledged from the delete to the end, by pod: %v", load.ackedBy(start, end))
	v := load.check(t, nil)
	var rejected int64
	for _, p := range readyPods(t, ns, "counter-00001") {
		st := chaosStatsOf(t, ns, p)
		rejected += st.RejectedWrites
		t.Logf("pod %s after: %s", p, st)
	}
	t.Logf("SIGTERM (%s): %d events acknowledged, %d retries, %d lost, %d writes rejected by the fence", durability, v.acked, v.retries, v.lost, rejected)
}

// TestRedisOutage30s: the test's redis-server is SIGKILLed under load and
// started again from its append-only file 30 s later: a crashed or
// restarting Redis, whose port refuses connections at once. With
// kstate.dev/max-dirty-bytes 4Ki the agents soon hold as much unflushed
// state as they may and refuse writes with 503 (back-pressure; the load
// retries with the same id); the test fails if no attempt was refused
// during the outage. After the restart the agents flush what they
// buffered: no acknowledged event is lost or applied twice.
func TestRedisOutage30s(t *testing.T) {
	t.Parallel()
	redisOutage(t, false)
}

// TestRedisHung30s is TestRedisOutage30s with a hung Redis instead of a
// dead one: redis-server is stopped with SIGSTOP for 30 s and continued
// with SIGCONT. Its port still accepts connections (the kernel completes
// the handshake) and nothing answers, so every store call waits for its
// timeout (KSTATE_FLUSH_TIMEOUT, 5 s) instead of failing at once.
func TestRedisHung30s(t *testing.T) {
	t.Parallel()
	redisOutage(t, true)
}

// signalRedis sends a signal to the test's redis-server.
func signalRedis(t *testing.T, r *redisServer, sig syscall.Signal) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		t.Fatalf("redis-server is not running")
	}
	if err := r.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to redis-server: %v", sig, err)
	}
}

func redisOutage(t *testing.T, hung bool) {
	const outage = 30 * time.Second
	ns, redis := kstateNamespaceWithRedis(t)
	_, load := chaosCounter(t, ns, "outage", map[string]string{"kstate.dev/max-dirty-bytes": "4Ki"})
	pods := readyPods(t, ns, "counter-00001")

	what := "killed (SIGKILL)"
	if hung {
		what = "stopped (SIGSTOP)"
		// A stopped server would never handle the SIGINT that stops it
		// when the test ends; cleanups run last-in first-out.
		t.Cleanup(func() {
			redis.mu.Lock()
			defer redis.mu.Unlock()
			if redis.cmd != nil {
				_ = redis.cmd.Process.Signal(syscall.SIGCONT)
			}
		})
		signalRedis(t, redis, syscall.SIGSTOP)
	} else {
		redis.Kill()
	}
	down := time.Now()
	at := load.acknowledged()
	// Show the outage reached the agents before it ends.
	waitFor(t, "unflushed writes in an agent while Redis is down", 20*time.Second, func() bool {
		for _, p := range pods {
			if chaosStatsOf(t, ns, p).DirtyEntities > 0 {
				return true
			}
		}
		return false
	})
	for _, p := range pods {
		t.Logf("pod %s during the outage: %s", p, chaosStatsOf(t, ns, p))
	}
	time.Sleep(time.Until(down.Add(outage))) // the outage's length, not a wait for a condition
	during := load.acknowledged() - at
	if hung {
		signalRedis(t, redis, syscall.SIGCONT)
	} else {
		redis.Start()
	}
	up := time.Now()
	t.Logf("redis-server %s for %s; %d events acknowledged meanwhile; attempts that ended meanwhile: %s",
		what, up.Sub(down).Round(time.Millisecond), during, load.outcomes(down, up))
	if n := load.refused(down, up); n == 0 {
		t.Errorf("no attempt was refused during a %s Redis outage with max-dirty-bytes 4Ki: no back-pressure", outage)
	}
	recovered := waitFor(t, "the first event acknowledged after Redis is back", 2*time.Minute, func() bool {
		return len(load.ackedBy(up, time.Now().Add(time.Hour))) > 0
	})
	t.Logf("first acknowledgement %s after Redis is back", recovered.Round(time.Millisecond))
	load.waitAcked(t, 300, 2*time.Minute)
	t.Logf("attempts after Redis is back: %s", load.outcomes(up, time.Now()))
	v := load.check(t, nil)
	var rejected int64
	for _, p := range pods {
		st := chaosStatsOf(t, ns, p)
		rejected += st.RejectedWrites
		t.Logf("pod %s after: %s", p, st)
	}
	t.Logf("Redis %s for %s: %d events acknowledged (%d during the outage), %d retries, %d lost, %d writes rejected by the fence",
		what, outage, v.acked, during, v.retries, v.lost, rejected)
}

// TestPartitionAgentFromRedis: one of two agents is cut off from Redis (an
// iptables rule in its pod's network namespace drops its packets to the
// Redis port, cutFromRedis) for 15 s, longer than the 10 s lease TTL, and
// healed. The pod stays Ready and routed, so nobody takes its slots over:
// with async durability it keeps answering warm keys from memory and
// flushes everything once healed, renewing its own epoch; with sync
// durability its writes cannot be made durable, its replies give up with
// 503 after the lease TTL and the load retries them with the same id.
// Either way no acknowledged event is lost or applied twice, the agent's
// oldest unflushed update must be older than the TTL at the heal (the cut
// held), and with sync the cut-off agent must not acknowledge anything
// later than 1 s into the partition (nothing it writes can reach Redis)
// and at least one attempt must have been refused. The agents' rejected
// (fenced) writes are reported.
func TestPartitionAgentFromRedis(t *testing.T) {
	t.Parallel()
	partitionAgentFromRedis(t, "async")
}

// TestPartitionSyncAgentFromRedis is TestPartitionAgentFromRedis with
// durability sync.
func TestPartitionSyncAgentFromRedis(t *testing.T) {
	t.Parallel()
	partitionAgentFromRedis(t, "sync")
}

func partitionAgentFromRedis(t *testing.T, durability string) {
	const hold = 15 * time.Second // > KSTATE_LEASE_TTL (10s by default)
	ns, redis := kstateNamespaceWithRedis(t)
	ann := map[string]string{}
	if durability == "sync" {
		ann["kstate.dev/durability"] = "sync"
	}
	_, load := chaosCounter(t, ns, "cut", ann)
	pods := readyPods(t, ns, "counter-00001")
	victim := pods[0]
	pid := agentPID(t, victim)
	before := map[string]chaosStats{}
	for _, p := range pods {
		before[p] = chaosStatsOf(t, ns, p)
	}
	heal := cutFromRedis(t, pid, redis.Addr)
	cut := time.Now()
	t.Logf("agent of %s (pid %d) cut off from Redis %s after %d events", victim, pid, redis.Addr, load.acknowledged())
	// The cut reaches the agent: it holds writes it cannot flush.
	waitFor(t, "unflushed writes in the cut-off agent", 10*time.Second, func() bool {
		return chaosStatsOf(t, ns, victim).DirtyEntities > 0
	})
	time.Sleep(time.Until(cut.Add(hold))) // the partition's length, past the lease TTL
	during := chaosStatsOf(t, ns, victim)
	heal()
	healed := time.Now()
	t.Logf("healed after %s; the cut-off agent then: %s", healed.Sub(cut).Round(time.Millisecond), during)
	t.Logf("attempts during the partition: %s", load.outcomes(cut, healed))
	t.Logf("acknowledged during the partition, by pod: %v", load.ackedBy(cut, healed))
	if during.FlushLagMs < (10 * time.Second).Milliseconds() {
		t.Errorf("the cut-off agent's oldest unflushed update was %d ms old at the heal: the cut did not keep it from Redis past the lease TTL", during.FlushLagMs)
	}
	if durability == "sync" {
		// Sync: a reply means the update is in Redis. Past the moment the
		// rule went in, the cut-off agent can only answer updates whose
		// flush had already reached Redis (the answer still comes back:
		// the rule drops only the agent's outgoing packets).
		acks := load.ackTimes(victim, cut, healed)
		t.Logf("sync: the cut-off agent acknowledged %d events during the partition, at %v after the cut", len(acks), acks)
		if late := load.ackTimes(victim, cut.Add(time.Second), healed); len(late) > 0 {
			t.Errorf("sync: the cut-off agent acknowledged %d events more than 1 s into the partition (%v after the cut's first second), when nothing it wrote could reach Redis", len(late), late)
		}
	}
	if durability == "sync" && load.refused(cut, healed) == 0 {
		t.Errorf("sync: no attempt was refused during the partition: replies stuck at the cut-off agent should give up with 503 after the lease TTL")
	}
	if pods := readyPods(t, ns, "counter-00001"); !contains(pods, victim) {
		t.Logf("the cut-off pod is not Ready after the partition: %v", pods)
	}
	caughtUp := waitFor(t, "the cut-off agent to flush what it buffered", 2*time.Minute, func() bool {
		return chaosStatsOf(t, ns, victim).FlushLagMs < 1000
	})
	t.Logf("the cut-off agent's flush lag was under 1 s again %s after the heal", caughtUp.Round(time.Millisecond))
	load.waitAcked(t, 300, 2*time.Minute)
	t.Logf("attempts after the heal: %s; the slowest that started after it took %s", load.outcomes(healed, time.Now()), load.slowestStarted(healed))
	v := load.check(t, nil)
	var rejected int64
	for _, p := range readyPods(t, ns, "counter-00001") {
		st := chaosStatsOf(t, ns, p)
		rejected += st.RejectedWrites - before[p].RejectedWrites
		t.Logf("pod %s after: %s", p, st)
	}
	t.Logf("partition %s (%s): %d events acknowledged, %d retries, %d lost, %d writes rejected by the fence",
		hold, durability, v.acked, v.retries, v.lost, rejected)
}

// TestAsyncKill9LossBounded: with the default (async) durability, SIGKILL
// of one of two agents under load may lose what it acknowledged but had not
// flushed yet. The test reads the agent's flush lag (age of its oldest
// unflushed update) just before the kill and fails if a key lost more
// events than it had acknowledged from then until the kill (plus 500 ms
// for answers still on their way through queue-proxy, the activator and
// the ingress), or if any count is above its acknowledged events. It
// reports the loss.
func TestAsyncKill9LossBounded(t *testing.T) {
	t.Parallel()
	ns, _ := kstateNamespace(t)
	_, load := chaosCounter(t, ns, "async", nil)

	pods := readyPods(t, ns, "counter-00001")
	victim := pods[0]
	pid := agentPID(t, victim)
	asked := time.Now()
	st := chaosStatsOf(t, ns, victim)
	at := load.acknowledged()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %d (agent of %s): %v", pid, victim, err)
	}
	killed := time.Now()
	unflushedSince := asked.Add(-time.Duration(st.FlushLagMs+1) * time.Millisecond)
	t.Logf("kill -9 of the agent of %s (pid %d) after %d events; just before: %s", victim, pid, at, st)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	waitFor(t, "the killed agent's container to restart", 2*time.Minute, func() bool {
		out, err := kubectl(ctx, "", "-n", ns, "get", "pod", victim, "-o",
			`jsonpath={.status.containerStatuses[?(@.name=="kstate-agent")].restartCount}`)
		n, _ := strconv.Atoi(strings.TrimSpace(out))
		return err == nil && n >= 1 && contains(readyPods(t, ns, "counter-00001"), victim)
	})
	t.Logf("restarted and Ready %s after the kill; attempts meanwhile: %s",
		time.Since(killed).Round(time.Millisecond), load.outcomes(killed, time.Now()))
	load.waitAcked(t, 300, 2*time.Minute)
	window := killed.Add(500 * time.Millisecond)
	var lostAges []time.Duration // how long before the kill each lost event was acknowledged
	v := load.check(t, func(key string, lost int64, acks []chaosAck) error {
		// A key's events come from one worker, one at a time, so its acks
		// are in the order applied. The restarted agent counts on from the
		// last flushed value D: the first answer after the kill whose count
		// is not above the one before it is D+1, and the lost events are
		// those answered before it with counts above D.
		var lostAcks []chaosAck
		for i := 1; i < len(acks); i++ {
			if acks[i].at.After(killed) && acks[i].count <= acks[i-1].count {
				d := acks[i].count - 1
				for _, a := range acks[:i] {
					if a.count > d {
						lostAcks = append(lostAcks, a)
					}
				}
				break
			}
		}
		if int64(len(lostAcks)) == lost {
			for _, a := range lostAcks {
				lostAges = append(lostAges, killed.Sub(a.at))
				if a.at.Before(unflushedSince) || a.at.After(window) {
					return fmt.Errorf("event %s (count %d) was acknowledged at %s, outside %s..%s (the agent's flush lag %d ms before the kill at %s, and 500 ms for answers on their way)",
						a.id, a.count, a.at.Format("15:04:05.000"), unflushedSince.Format("15:04:05.000"), window.Format("15:04:05.000"), st.FlushLagMs, killed.Format("15:04:05.000"))
				}
			}
			return nil
		}
		// The lost events could not be told apart: bound their number by
		// the events acknowledged in the window.
		t.Logf("key %s: %d lost, but %d events answered with counts the restarted agent gave again", key, lost, len(lostAcks))
		var in int64
		for _, a := range acks {
			if !a.at.Before(unflushedSince) && !a.at.After(window) {
				in++
			}
		}
		if lost > in {
			return fmt.Errorf("more than the %d acknowledged between %s and %s (flush lag %d ms before the kill)",
				in, unflushedSince.Format("15:04:05.000"), window.Format("15:04:05.000"), st.FlushLagMs)
		}
		return nil
	})
	sort.Slice(lostAges, func(i, j int) bool { return lostAges[i] < lostAges[j] })
	t.Logf("lost events were acknowledged this long before the kill (negative: after it): %v", lostAges)
	keys := make([]string, 0, len(v.lostKeys))
	for k, n := range v.lostKeys {
		keys = append(keys, fmt.Sprintf("%s:%d", k, n))
	}
	sort.Strings(keys)
	t.Logf("async kill -9: %d of %d acknowledged events lost (%.2f%%), on keys %v; %d retries; the agent's flush lag just before the kill was %d ms (flush interval 100 ms)",
		v.lost, v.acked, 100*float64(v.lost)/float64(max(v.acked, 1)), keys, v.retries, st.FlushLagMs)
}

// cutFromRedis adds an iptables rule in the network namespace of process
// pid that drops its packets to the Redis at addr (a partition between one
// pod and Redis; answers already on their way back still arrive). It
// returns the function that heals the cut; a cut not healed by the test is
// healed when it ends. The rule lives in the pod's network namespace, so it
// outlives a container restart: it is removed through a process of the pod
// that is not the agent (the pause container, queue-proxy or the function).
func cutFromRedis(t *testing.T, pid int, addr string) (heal func()) {
	t.Helper()
	for _, bin := range []string{"iptables", "nsenter"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s: %v (the cluster's kube-proxy needs iptables too)", bin, err)
		}
	}
	netns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		t.Fatalf("network namespace of pid %d: %v", pid, err)
	}
	peer := 0
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		n, _ := strconv.Atoi(filepath.Base(d))
		if l, _ := os.Readlink(d + "/ns/net"); n != pid && l == netns {
			if comm, _ := os.ReadFile(d + "/comm"); strings.TrimSpace(string(comm)) != "kstate-agent" {
				peer = n
				break
			}
		}
	}
	if peer == 0 {
		t.Fatalf("no other process in the network namespace %s of pid %d", netns, pid)
	}
	host, port, _ := strings.Cut(addr, ":")
	rule := []string{"OUTPUT", "-p", "tcp", "-d", host, "--dport", port, "-j", "DROP"}
	iptables := func(op string) error {
		args := append([]string{"-t", strconv.Itoa(peer), "-n", "iptables", op}, rule...)
		out, err := exec.Command("nsenter", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("nsenter %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := iptables("-A"); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	heal = func() {
		once.Do(func() {
			if err := iptables("-D"); err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(heal)
	return heal
}

// TestSyncPartitionedAgentKilled: with durability sync, an agent is cut off
// from Redis under load; its stuck replies give up after the lease TTL
// (503: applied in this pod, not yet durable, retry with the same id) and
// the load sends them again with the same id. The agent is killed
// (SIGKILL) once it has acknowledged an event more than 1 s into the cut,
// or 25 s after the cut; then the cut is healed and the kubelet restarts
// the agent, which reads its entities back from Redis. Sync means an
// acknowledged event is in Redis: nothing acknowledged may be lost.
func TestSyncPartitionedAgentKilled(t *testing.T) {
	t.Parallel()
	ns, redis := kstateNamespaceWithRedis(t)
	_, load := chaosCounter(t, ns, "cutkill", map[string]string{"kstate.dev/durability": "sync"})
	pods := readyPods(t, ns, "counter-00001")
	victim := pods[0]
	pid := agentPID(t, victim)
	heal := cutFromRedis(t, pid, redis.Addr)
	cut := time.Now()
	t.Logf("agent of %s (pid %d) cut off from Redis %s after %d events", victim, pid, redis.Addr, load.acknowledged())
	// Past the lease TTL the stuck replies give up with 503 and the load
	// sends them again with the same id. Kill the agent once it has
	// acknowledged an event well after the cut (which sync should not
	// allow), or 25 s after the cut, whichever comes first.
	waitFor(t, "an acknowledgement from the cut-off agent, or 25 s", time.Minute, func() bool {
		return len(load.ackTimes(victim, cut.Add(time.Second), time.Now())) > 0 || time.Since(cut) > 25*time.Second
	})
	acks := load.ackTimes(victim, cut, time.Now())
	t.Logf("the cut-off agent acknowledged %d events since the cut, at %v after it; attempts meanwhile: %s", len(acks), acks, load.outcomes(cut, time.Now()))
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %d: %v", pid, err)
	}
	killed := time.Now()
	heal()
	t.Logf("killed the cut-off agent %s after the cut, and healed", killed.Sub(cut).Round(time.Millisecond))
	waitFor(t, "the killed agent's container to restart", 2*time.Minute, func() bool {
		out := mustKubectl(t, "", "-n", ns, "get", "pod", victim, "-o",
			`jsonpath={.status.containerStatuses[?(@.name=="kstate-agent")].restartCount}`)
		n, _ := strconv.Atoi(strings.TrimSpace(out))
		return n >= 1 && contains(readyPods(t, ns, "counter-00001"), victim)
	})
	load.waitAcked(t, 300, 2*time.Minute)
	v := load.check(t, nil)
	t.Logf("sync, cut off then killed: %d events acknowledged, %d retries, %d lost on keys %v", v.acked, v.retries, v.lost, v.lostKeys)
}
