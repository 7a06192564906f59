//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// imageRef is the reference hack/cluster/build.sh gave an image (kstate's
// images are tagged with their binary's hash).
func imageRef(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(clusterDir, "images", name+".ref"))
	if err != nil {
		t.Fatalf("image %s: %v (run hack/cluster/build.sh)", name, err)
	}
	return strings.TrimSpace(string(b))
}

// knKstate runs the kn-kstate binary build.sh built, against the cluster
// unless the arguments name another --kubeconfig.
func knKstate(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if !contains(args, "--kubeconfig") {
		args = append(args, "--kubeconfig", kubeconfig)
	}
	cmd := exec.CommandContext(ctx, filepath.Join(clusterDir, "bin", "kstate", "kn-kstate"), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kn kstate %s: %v: %s (stdout: %q)", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()), stdout.String())
	}
	return stdout.String(), nil
}

func mustKnKstate(t *testing.T, args ...string) string {
	t.Helper()
	out, err := knKstate(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// requireKstateInstalled fails the test unless install-kstate.sh has run.
func requireKstateInstalled(t *testing.T) {
	t.Helper()
	out := mustKubectl(t, "", "-n", "knative-serving", "get", "deployment", "activator", "-o", "jsonpath={.spec.template.spec.containers[0].image}")
	if want := imageRef(t, "kstate-activator"); out != want {
		t.Fatalf("knative-serving/activator runs %q, not kstate's activator %q: run hack/cluster/install-kstate.sh", out, want)
	}
}

// kstateNamespace is a test namespace with its own redis-server (on the node
// address) and the kstate-store Secret the webhook points agents at.
func kstateNamespace(t *testing.T) (ns, redisAddr string) {
	ns, r := kstateNamespaceWithRedis(t)
	return ns, r.Addr
}

// kstateNamespaceWithRedis is kstateNamespace for tests that stop Redis.
func kstateNamespaceWithRedis(t *testing.T) (string, *redisServer) {
	t.Helper()
	requireKstateInstalled(t)
	r := startRedis(t)
	ns := namespace(t)
	mustKubectl(t, "", "-n", ns, "create", "secret", "generic", "kstate-store", "--from-literal=url=redis://"+r.Addr)
	return ns, r
}

// counterService is the counter example as a user writes it: their container
// and kstate annotations, nothing else. The webhook does the rest.
func counterService(t *testing.T, name string, annotations map[string]string) string {
	t.Helper()
	return serviceYAML(name, annotations, "image: "+imageRef(t, "counter")+"\n")
}

// serviceYAML is a Knative Service with the revision annotations (sorted,
// so the YAML is stable) and one container, whose lines follow "- ".
func serviceYAML(name string, annotations map[string]string, container string) string {
	keys := make([]string, 0, len(annotations))
	for k := range annotations {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: %s\nspec:\n  template:\n    metadata:\n      annotations:\n", name)
	for _, k := range keys {
		fmt.Fprintf(&b, "        %s: %q\n", k, annotations[k])
	}
	fmt.Fprintf(&b, "    spec:\n      containers:\n      - %s", container)
	return b.String()
}

// agentStats is the part of an agent's /.kstate/stats the tests read
// (protojson of proto/admin/v1 StatsResponse: 64-bit integers are strings,
// zero fields are left out).
type agentStats struct {
	Slots []struct {
		Slot uint32 `json:"slot"`
	} `json:"slots"`
	Entities      int64 `json:"entities,string"`
	DirtyEntities int64 `json:"dirtyEntities,string"`
	DirtyBytes    int64 `json:"dirtyBytes,string"`
	// FlushLagMs is the age of the oldest unflushed update.
	FlushLagMs     int64 `json:"flushLagMs,string"`
	Requests       int64 `json:"requests,string"`
	CacheHits      int64 `json:"cacheHits,string"`
	CacheMisses    int64 `json:"cacheMisses,string"`
	Flushes        int64 `json:"flushes,string"`
	RejectedWrites int64 `json:"rejectedWrites,string"`
	HandoffsIn     int64 `json:"handoffsIn,string"`
	HandoffsOut    int64 `json:"handoffsOut,string"`
	Ready          bool  `json:"ready"`
}

func (s agentStats) String() string {
	return fmt.Sprintf("%d slots, %d entities (%d dirty, %d B, flush lag %d ms), %d requests, %d flushes, %d rejected writes, handoffs in/out %d/%d, ready %v",
		len(s.Slots), s.Entities, s.DirtyEntities, s.DirtyBytes, s.FlushLagMs, s.Requests, s.Flushes, s.RejectedWrites, s.HandoffsIn, s.HandoffsOut, s.Ready)
}

// statsOf reads a pod's agent stats through the API server's pod proxy.
func statsOf(t *testing.T, ns, pod string) agentStats {
	t.Helper()
	s, err := tryStatsOf(ns, pod)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// tryStatsOf is statsOf for a pod that may be gone.
func tryStatsOf(ns, pod string) (agentStats, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := kubectl(ctx, "", "get", "--raw", fmt.Sprintf("/api/v1/namespaces/%s/pods/%s:8080/proxy/.kstate/stats", ns, pod))
	if err != nil {
		return agentStats{}, fmt.Errorf("stats of %s: %v", pod, err)
	}
	var s agentStats
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		return agentStats{}, fmt.Errorf("stats of %s: %v: %s", pod, err, out)
	}
	return s, nil
}

// statsOfPods reads the stats of each pod.
func statsOfPods(t *testing.T, ns string, pods []string) map[string]agentStats {
	t.Helper()
	m := map[string]agentStats{}
	for _, p := range pods {
		m[p] = statsOf(t, ns, p)
	}
	return m
}

// rejectedSince sums the writes rejected by the fence between two readings
// of pods' stats: for each pod in after, its count less the one in before
// (0 for a pod that was not there yet), logging each pod's stats.
func rejectedSince(t *testing.T, before, after map[string]agentStats) int64 {
	t.Helper()
	pods := make([]string, 0, len(after))
	for p := range after {
		pods = append(pods, p)
	}
	sort.Strings(pods)
	var n int64
	for _, p := range pods {
		d := after[p].RejectedWrites - before[p].RejectedWrites
		n += d
		t.Logf("pod %s: %s (%d writes rejected since the first reading)", p, after[p], d)
	}
	return n
}

// waitUnflushed waits until the agent of one of pods holds writes it has
// not flushed, and returns that pod.
func waitUnflushed(t *testing.T, ns string, pods []string, timeout time.Duration) string {
	t.Helper()
	var dirty string
	waitFor(t, fmt.Sprintf("unflushed writes in the agent of one of %v", pods), timeout, func() bool {
		for _, p := range pods {
			if statsOf(t, ns, p).DirtyEntities > 0 {
				dirty = p
				return true
			}
		}
		return false
	})
	return dirty
}

// agentRestarts is how often the kubelet restarted a pod's kstate-agent
// container.
func agentRestarts(t *testing.T, ns, pod string) int {
	t.Helper()
	out := mustKubectl(t, "", "-n", ns, "get", "pod", pod, "-o",
		`jsonpath={.status.containerStatuses[?(@.name=="kstate-agent")].restartCount}`)
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("restart count of the agent of %s: %q", pod, out)
	}
	return n
}

// waitAgentRestarted waits until the kubelet has restarted a pod's
// kstate-agent container more than restarts times (agentRestarts before
// it was killed) and the pod is Ready again.
func waitAgentRestarted(t *testing.T, ns, pod string, restarts int, timeout time.Duration) {
	t.Helper()
	waitFor(t, fmt.Sprintf("the agent container of %s to restart and the pod to be Ready", pod), timeout, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := kubectl(ctx, "", "-n", ns, "get", "pod", pod, "-o",
			`jsonpath={.status.containerStatuses[?(@.name=="kstate-agent")].restartCount} {.status.conditions[?(@.type=="Ready")].status} {.metadata.deletionTimestamp}`)
		f := strings.Fields(out)
		if err != nil || len(f) != 2 {
			return false
		}
		n, _ := strconv.Atoi(f[0])
		return n > restarts && f[1] == "True"
	})
}

// readyPods lists the Ready, not terminating pods of a revision.
func readyPods(t *testing.T, ns, revision string) []string {
	t.Helper()
	out := mustKubectl(t, "", "-n", ns, "get", "pods", "-l", "serving.knative.dev/revision="+revision, "-o",
		`jsonpath={range .items[?(@.metadata.deletionTimestamp)]}-{.metadata.name} {end}{range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status} {end}`)
	var terminating []string
	var ready []string
	for _, f := range strings.Fields(out) {
		if strings.HasPrefix(f, "-") {
			terminating = append(terminating, f[1:])
			continue
		}
		if name, ok := strings.CutSuffix(f, "=True"); ok {
			ready = append(ready, name)
		}
	}
	var live []string
	for _, p := range ready {
		if !contains(terminating, p) {
			live = append(live, p)
		}
	}
	sort.Strings(live)
	return live
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// waitFor polls cond every 500ms until it holds or the timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(500 * time.Millisecond)
	}
	return time.Since(start)
}

// entityKeys is n entity keys named PREFIX-0000, PREFIX-0001, ...
func entityKeys(prefix string, n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("%s-%04d", prefix, i)
	}
	return keys
}

// leaseTTL is the agents' slot lease TTL (KSTATE_LEASE_TTL; the tests run
// with its default). Past it a sync reply gives up with 503, and another
// agent may take over the slots of one that did not renew.
const leaseTTL = 10 * time.Second

// counterUnderLoad applies the counter with two pods (min-scale 2) and the
// given extra annotations, waits until both are Ready, and starts a
// CloudEvent load of 4 workers over 40 keys named PREFIX-NNNN; it returns
// once 200 events were acknowledged.
func counterUnderLoad(t *testing.T, ns, prefix string, annotations map[string]string) (string, *ceLoad) {
	t.Helper()
	ann := map[string]string{"kstate.dev/enabled": "true", "autoscaling.knative.dev/min-scale": "2"}
	for k, v := range annotations {
		ann[k] = v
	}
	host, _ := applyKsvc(t, ns, "counter", counterService(t, "counter", ann))
	waitFor(t, "two ready pods", 3*time.Minute, func() bool { return len(readyPods(t, ns, "counter-00001")) == 2 })
	load := startCELoad(t, host, entityKeys(prefix, 40), 4)
	waitFor(t, "load to start", time.Minute, func() bool { return load.acknowledged() > 200 })
	return host, load
}

// ceLoad sends counter.add CloudEvents in binary and structured mode, with
// the headers a Knative Eventing broker's dispatcher adds, for a fixed set
// of keys. Every event is retried with its id until it is acknowledged
// (2xx), as a broker redelivers, so the Service's deduplication must make
// each event count once. It records every attempt (when it was sent and
// ended, its status code, the pod that answered) and every
// acknowledgement, so a test can say what the clients saw while a failure
// lasted and judge a bounded loss.
type ceLoad struct {
	host string
	keys []string

	stop  chan struct{} // no new events; events under way are retried until acknowledged
	abort chan struct{} // events under way are given up (the test is ending anyway)
	wg    sync.WaitGroup

	mu       sync.Mutex
	acks     map[string][]ceAck // key -> acknowledged events, in the order answered
	attempts []ceAttempt
	samples  map[int][]string // status code -> a few failed attempts, for the log
	sent     int
	retries  int
	errs     []string // events never acknowledged (the workers do not call t)
}

// ceAck is one acknowledged event.
type ceAck struct {
	id    string
	count int64     // the count in the reply
	at    time.Time // when the client had the answer
	first time.Time // when the event's first attempt was sent
	last  time.Time // when the acknowledged (last) attempt was sent
	pod   string    // Kstate-Pod of the answer
	dup   bool      // Kstate-Duplicate: answered with the outcome of an earlier delivery
}

// ceAttempt is one HTTP attempt of an event.
type ceAttempt struct {
	start, end time.Time
	code       int    // 0: no answer (transport error); -1: a 2xx that is not a count
	pod        string // Kstate-Pod of the answer, if any
}

func startCELoad(t *testing.T, host string, keys []string, workers int) *ceLoad {
	l := &ceLoad{host: host, keys: keys, stop: make(chan struct{}), abort: make(chan struct{}),
		acks: map[string][]ceAck{}, samples: map[int][]string{}}
	for w := range workers {
		l.wg.Add(1)
		go l.worker(w, workers)
	}
	// A test that ends before its check (a failure) does not wait for the
	// events under way.
	t.Cleanup(func() { closeOnce(l.abort); l.halt() })
	return l
}

func closeOnce(c chan struct{}) {
	select {
	case <-c:
	default:
		close(c)
	}
}

// halt stops the load once the events under way are acknowledged.
func (l *ceLoad) halt() {
	closeOnce(l.stop)
	l.wg.Wait()
}

func (l *ceLoad) acknowledged() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sent
}

// waitAcked waits until n more events than now are acknowledged.
func (l *ceLoad) waitAcked(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	from := l.acknowledged()
	waitFor(t, fmt.Sprintf("%d more acknowledged events", n), timeout, func() bool { return l.acknowledged() >= from+n })
}

func (l *ceLoad) worker(w, workers int) {
	defer l.wg.Done()
	for n := 0; ; n++ {
		select {
		case <-l.stop:
			return
		default:
		}
		key := l.keys[(n*workers+w)%len(l.keys)]
		id := fmt.Sprintf("e2e-%d-%d", w, n)
		a, err := l.deliver(key, id, w%2 == 1)
		if err == errAborted {
			return
		}
		l.mu.Lock()
		if err != nil {
			l.errs = append(l.errs, fmt.Sprintf("event %s for key %s: %v", id, key, err))
			l.mu.Unlock()
			return
		}
		l.sent++
		l.acks[key] = append(l.acks[key], a)
		l.mu.Unlock()
	}
}

var errAborted = errors.New("aborted")

// deliver sends one event until a 2xx with the key's count comes, for at
// most 2 minutes, or until the load is aborted (errAborted). Odd workers
// use structured mode, even ones binary mode, as brokers may.
func (l *ceLoad) deliver(key, id string, structured bool) (ceAck, error) {
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
	first := time.Now()
	deadline := first.Add(2 * time.Minute)
	for backoff := 50 * time.Millisecond; time.Now().Before(deadline); {
		start := time.Now()
		code, out, rh, err := requestHeaders("POST", l.host, "/", body, hdr)
		end := time.Now()
		pod := rh.Get("Kstate-Pod") // a nil Header has no values
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
				l.attempts = append(l.attempts, ceAttempt{start, end, code, pod})
				l.mu.Unlock()
				return ceAck{id: id, count: r.Count, at: end, first: first, last: start, pod: pod, dup: rh.Get("Kstate-Duplicate") == "true"}, nil
			}
			err = fmt.Errorf("reply %q (%s) is not a count of %s", out, rh.Get("Content-Type"), key)
			code = -1
		}
		l.mu.Lock()
		l.attempts = append(l.attempts, ceAttempt{start, end, code, pod})
		l.retries++
		if len(l.samples[code]) < 3 {
			l.samples[code] = append(l.samples[code], fmt.Sprintf("%s %s at %s after %s from %q: err %v body %.160q",
				key, id, start.Format("15:04:05.000"), end.Sub(start).Round(time.Millisecond), pod, err, out))
		}
		l.mu.Unlock()
		select {
		case <-l.abort:
			return ceAck{}, errAborted
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
	return ceAck{}, fmt.Errorf("not acknowledged within 2 minutes of its first attempt at %s", first.Format("15:04:05.000"))
}

// codeName names an attempt's status code.
func codeName(c int) string {
	switch c {
	case 0:
		return "no answer"
	case -1:
		return "bad reply"
	}
	return strconv.Itoa(c)
}

// outcomes counts the attempts that ended in [from, to) by status code,
// and says how long the slowest took.
func (l *ceLoad) outcomes(from, to time.Time) string {
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
		parts = append(parts, fmt.Sprintf("%s: %d", codeName(c), byCode[c]))
	}
	if len(parts) == 0 {
		return "no attempt"
	}
	return fmt.Sprintf("%s (slowest %s)", strings.Join(parts, ", "), slowest.Round(time.Millisecond))
}

// slowestStarted is how long the slowest attempt sent after from took.
func (l *ceLoad) slowestStarted(from time.Time) time.Duration {
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

// attemptsBy counts the attempts that ended in [from, to) and match (nil:
// all), by the pod that answered ("" if the answer named none).
func (l *ceLoad) attemptsBy(from, to time.Time, match func(ceAttempt) bool) map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	by := map[string]int{}
	for _, a := range l.attempts {
		if !a.end.Before(from) && a.end.Before(to) && (match == nil || match(a)) {
			by[a.pod]++
		}
	}
	return by
}

// refusedBy counts the attempts that ended in [from, to) with a 503 (a
// refusal: back-pressure, or a sync write that could not be made durable),
// by the pod that answered.
func (l *ceLoad) refusedBy(from, to time.Time) map[string]int {
	return l.attemptsBy(from, to, func(a ceAttempt) bool { return a.code == 503 })
}

// refused counts the attempts that ended in [from, to) with a 503.
func (l *ceLoad) refused(from, to time.Time) int {
	n := 0
	for _, c := range l.refusedBy(from, to) {
		n += c
	}
	return n
}

// acked is the events acknowledged in [from, to) that match (nil: all),
// in the order answered.
func (l *ceLoad) acked(from, to time.Time, match func(ceAck) bool) []ceAck {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []ceAck
	for _, acks := range l.acks {
		for _, a := range acks {
			if !a.at.Before(from) && a.at.Before(to) && (match == nil || match(a)) {
				out = append(out, a)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].at.Before(out[j].at) })
	return out
}

// ackedBy counts the events acknowledged in [from, to), by answering pod.
func (l *ceLoad) ackedBy(from, to time.Time) map[string]int {
	by := map[string]int{}
	for _, a := range l.acked(from, to, nil) {
		by[a.pod]++
	}
	return by
}

// firstAck is how long after t0 the first event matching (nil: any) was
// acknowledged, or -1 if none was yet.
func (l *ceLoad) firstAck(t0 time.Time, match func(ceAck) bool) time.Duration {
	acks := l.acked(t0, t0.Add(24*time.Hour), match)
	if len(acks) == 0 {
		return -1
	}
	return acks[0].at.Sub(t0).Round(time.Millisecond)
}

// since lists acknowledgements as their answer times after t0 ("dup": an
// answer with the outcome of an earlier delivery), for the log.
func since(t0 time.Time, acks []ceAck) []string {
	out := make([]string, len(acks))
	for i, a := range acks {
		out[i] = a.at.Sub(t0).Round(time.Millisecond).String()
		if a.dup {
			out[i] += " dup"
		}
	}
	return out
}

// ceVerdict is what a check found.
type ceVerdict struct {
	acked, lost, doubled, retries int
	lostKeys                      map[string]int64
}

// check stops the load and compares every key's count, read back through
// the Service, with the events acknowledged for it: they must be equal, and
// the counts the acknowledged events of a key were answered with must be
// exactly 1..n (no count answered to two events: one writer).
func (l *ceLoad) check(t *testing.T) ceVerdict {
	t.Helper()
	return l.checkLoss(t, nil)
}

// checkLoss is check for a scenario that may lose acknowledged events. A
// count above the acknowledged events is still an error (an event applied
// twice); a count below is an error unless allowed accepts it (allowed nil:
// never, and the answered counts must be 1..n as in check). allowed gets
// the key's acknowledged events in the order answered.
func (l *ceLoad) checkLoss(t *testing.T, allowed func(key string, lost int64, acks []ceAck) error) ceVerdict {
	t.Helper()
	l.halt()
	l.mu.Lock()
	defer l.mu.Unlock()
	v := ceVerdict{acked: l.sent, retries: l.retries, lostKeys: map[string]int64{}}
	t.Logf("load: %d events acknowledged, %d retries", l.sent, l.retries)
	codes := make([]int, 0, len(l.samples))
	for c := range l.samples {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	for _, c := range codes {
		for _, s := range l.samples[c] {
			t.Logf("  retried (%s): %s", codeName(c), s)
		}
	}
	for _, e := range l.errs {
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
			if allowed == nil {
				t.Errorf("key %s: count %d, but %d events were acknowledged (%d lost)", key, got, acked, acked-got)
			} else if err := allowed(key, acked-got, acks); err != nil {
				t.Errorf("key %s: %d acknowledged events lost: %v", key, acked-got, err)
			}
		}
		if allowed != nil {
			continue
		}
		seen := map[int64]string{}
		for _, a := range acks {
			if other, dup := seen[a.count]; dup {
				v.doubled++
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
