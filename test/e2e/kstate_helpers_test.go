//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
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
	fmt.Fprintf(&b, "    spec:\n      containers:\n      - image: %s\n", imageRef(t, "counter"))
	return b.String()
}

// agentStats is what an agent's /.kstate/stats says (protojson: 64-bit
// integers are strings).
type agentStats struct {
	Pod   string `json:"pod"`
	Slots []struct {
		Slot  uint32 `json:"slot"`
		Epoch string `json:"epoch"`
	} `json:"slots"`
	Entities       int64 `json:"entities,string"`
	DirtyEntities  int64 `json:"dirtyEntities,string"`
	Requests       int64 `json:"requests,string"`
	CacheHits      int64 `json:"cacheHits,string"`
	CacheMisses    int64 `json:"cacheMisses,string"`
	RejectedWrites int64 `json:"rejectedWrites,string"`
	Ready          bool  `json:"ready"`
}

// statsOf reads a pod's agent stats through the API server's pod proxy.
func statsOf(t *testing.T, ns, pod string) agentStats {
	t.Helper()
	out := mustKubectl(t, "", "get", "--raw", fmt.Sprintf("/api/v1/namespaces/%s/pods/%s:8080/proxy/.kstate/stats", ns, pod))
	var s agentStats
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("stats of %s: %v: %s", pod, err, out)
	}
	return s
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

// counterUnderLoad applies the counter with two pods (min-scale 2) and the
// given extra annotations, and starts a CloudEvent load of 4 workers over 40
// keys named PREFIX-NNNN; it returns once 200 events were acknowledged.
func counterUnderLoad(t *testing.T, ns, prefix string, annotations map[string]string) (string, *ceLoad) {
	t.Helper()
	ann := map[string]string{"kstate.dev/enabled": "true", "autoscaling.knative.dev/min-scale": "2"}
	for k, v := range annotations {
		ann[k] = v
	}
	host, _ := applyKsvc(t, ns, "counter", counterService(t, "counter", ann))
	keys := entityKeys(prefix, 40)
	load := startCELoad(t, host, keys, 4)
	waitFor(t, "load to start", time.Minute, func() bool { return load.acknowledged() > 200 })
	return host, load
}

// ceLoad sends counter.add CloudEvents in binary and structured mode, with the headers a
// Knative Eventing broker's dispatcher adds, for a fixed set of keys. Every
// event is retried with its id until it is acknowledged (2xx), as a broker
// redelivers, so the Service's deduplication must make each event count
// once.
type ceLoad struct {
	host string
	keys []string

	stop chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	acked   map[string]int64            // key -> acknowledged events
	counts  map[string]map[int64]string // key -> count in the reply -> event id
	doubled []string                    // one count answered to two events
	retries int
	errs    []string // the last few failures, for the log
	sent    int
}

func startCELoad(t *testing.T, host string, keys []string, workers int) *ceLoad {
	l := &ceLoad{host: host, keys: keys, stop: make(chan struct{}),
		acked: map[string]int64{}, counts: map[string]map[int64]string{}}
	for w := range workers {
		l.wg.Add(1)
		go l.worker(t, w, workers)
	}
	t.Cleanup(l.halt)
	return l
}

func (l *ceLoad) halt() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

func (l *ceLoad) worker(t *testing.T, w, workers int) {
	defer l.wg.Done()
	for n := 0; ; n++ {
		select {
		case <-l.stop:
			return
		default:
		}
		key := l.keys[(n*workers+w)%len(l.keys)]
		id := fmt.Sprintf("e2e-%d-%d", w, n)
		count, ok := l.deliver(key, id, w%2 == 1)
		if !ok {
			t.Errorf("event %s for key %s was never acknowledged", id, key)
			return
		}
		l.mu.Lock()
		l.sent++
		l.acked[key]++
		if l.counts[key] == nil {
			l.counts[key] = map[int64]string{}
		}
		if other, dup := l.counts[key][count]; dup {
			l.doubled = append(l.doubled, fmt.Sprintf("key %s count %d answered to %s and %s", key, count, other, id))
		}
		l.counts[key][count] = id
		l.mu.Unlock()
	}
}

// deliver sends one event until a 2xx comes (for at most 2 minutes) and
// returns the count in the reply. Odd workers use structured mode, even ones
// binary mode, as brokers may.
func (l *ceLoad) deliver(key, id string, structured bool) (int64, bool) {
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
		code, out, rh, err := requestHeaders("POST", l.host, "/", body, hdr)
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
				return r.Count, true
			}
			err = fmt.Errorf("reply %q (%s) is not a count of %s", out, rh.Get("Content-Type"), key)
		}
		l.mu.Lock()
		l.retries++
		if len(l.errs) < 20 {
			l.errs = append(l.errs, fmt.Sprintf("%s %s: code %d err %v body %.120q", key, id, code, err, out))
		}
		l.mu.Unlock()
		time.Sleep(backoff)
		backoff = min(2*backoff, time.Second)
	}
	return 0, false
}

// check stops the load and compares every key's count, read back through
// the Service, with the events acknowledged for it.
func (l *ceLoad) check(t *testing.T) {
	t.Helper()
	l.halt()
	l.mu.Lock()
	defer l.mu.Unlock()
	t.Logf("load: %d events acknowledged, %d retries", l.sent, l.retries)
	for _, e := range l.errs {
		t.Logf("  retried: %s", e)
	}
	for _, d := range l.doubled {
		t.Errorf("doubled: %s", d)
	}
	if l.sent == 0 {
		t.Fatal("load: no event was acknowledged")
	}
	for _, key := range l.keys {
		got := count(t, l.host, "GET", key, "")
		if got.Count != l.acked[key] {
			t.Errorf("key %s: count %d, but %d events were acknowledged (%+d)", key, got.Count, l.acked[key], got.Count-l.acked[key])
		}
		for c := int64(1); c <= l.acked[key]; c++ {
			if _, ok := l.counts[key][c]; !ok {
				t.Errorf("key %s: no acknowledged event was answered with count %d of 1..%d", key, c, l.acked[key])
				break
			}
		}
	}
}

func (l *ceLoad) acknowledged() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sent
}
