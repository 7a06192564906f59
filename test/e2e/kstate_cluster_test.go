//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestWebhookInjectsAndValidates: installing kstate and annotating a Service
// is all a user does. The webhook injects the agent once, however often the
// Service is applied; bad values are rejected with their field path; the
// entity space cannot change or claim another namespace.
func TestWebhookInjectsAndValidates(t *testing.T) {
	t.Parallel()
	ns, _ := kstateNamespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	for _, tc := range []struct {
		name, annotation, value, want string
	}{
		{"bad durability", "kstate.dev/durability", "never", `"never" is not a durability: want "async" or "sync": spec.template.metadata.annotations.kstate.dev/durability`},
		{"bad key spec", "kstate.dev/key", "cookie:id", "spec.template.metadata.annotations.kstate.dev/key"},
		{"space of another namespace", "kstate.dev/space", "other/counter", "spec.template.metadata.annotations.kstate.dev/space"},
		{"typo", "kstate.dev/durabilty", "sync", "spec.template.metadata.annotations.kstate.dev/durabilty"},
	} {
		yaml := counterService(t, "bad", map[string]string{"kstate.dev/enabled": "true", tc.annotation: tc.value})
		_, err := kubectl(ctx, yaml, "-n", ns, "apply", "-f", "-")
		if err == nil {
			t.Errorf("%s: applied, want a denial", tc.name)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, "validation.webhook.kstate.dev") || !strings.Contains(msg, tc.want) {
			t.Errorf("%s: denial %q does not come from kstate's webhook with %q", tc.name, msg, tc.want)
		}
	}

	yaml := counterService(t, "counter", map[string]string{"kstate.dev/enabled": "true"})
	host, took := applyKsvc(t, ns, "counter", yaml)
	t.Logf("annotated Service Ready in %s", took.Round(time.Millisecond))

	var svc struct {
		Metadata struct {
			Generation int64 `json:"generation"`
		} `json:"metadata"`
		Spec struct {
			Template struct {
				Metadata struct {
					Annotations map[string]string `json:"annotations"`
				} `json:"metadata"`
				Spec struct {
					Containers []struct {
						Name  string `json:"name"`
						Image string `json:"image"`
					} `json:"containers"`
				} `json:"spec"`
			} `json:"template"`
		} `json:"spec"`
		Status struct {
			LatestCreatedRevisionName string `json:"latestCreatedRevisionName"`
		} `json:"status"`
	}
	read := func() string {
		out := mustKubectl(t, "", "-n", ns, "get", "ksvc", "counter", "-o", "json")
		if err := json.Unmarshal([]byte(out), &svc); err != nil {
			t.Fatal(err)
		}
		return out
	}
	read()
	agents := 0
	for _, c := range svc.Spec.Template.Spec.Containers {
		if c.Name == "kstate-agent" {
			agents++
			if want := imageRef(t, "kstate-agent"); c.Image != want {
				t.Errorf("agent image %q, want config-kstate's %q", c.Image, want)
			}
		}
	}
	if agents != 1 || len(svc.Spec.Template.Spec.Containers) != 2 {
		t.Fatalf("containers %+v: want the user's and one kstate-agent", svc.Spec.Template.Spec.Containers)
	}
	ann := svc.Spec.Template.Metadata.Annotations
	for k, want := range map[string]string{
		"autoscaling.knative.dev/target-burst-capacity": "-1",
		"kstate.dev/slots": "4096",
		"kstate.dev/space": ns + "/counter",
	} {
		if ann[k] != want {
			t.Errorf("annotation %s = %q, want %q", k, ann[k], want)
		}
	}

	// Idempotent: the user's YAML again, and the stored object replaced as
	// is, change nothing and make no new revision.
	gen, rev := svc.Metadata.Generation, svc.Status.LatestCreatedRevisionName
	mustKubectl(t, yaml, "-n", ns, "apply", "-f", "-")
	stored := read()
	mustKubectl(t, stored, "-n", ns, "replace", "-f", "-")
	read()
	if svc.Metadata.Generation != gen || svc.Status.LatestCreatedRevisionName != rev || len(svc.Spec.Template.Spec.Containers) != 2 {
		t.Errorf("applying again: generation %d -> %d, revision %s -> %s, %d containers: want no change",
			gen, svc.Metadata.Generation, rev, svc.Status.LatestCreatedRevisionName, len(svc.Spec.Template.Spec.Containers))
	}

	// slots cannot change under a Service that has state.
	count(t, host, "POST", "alice", `{"by": 2}`)
	_, err := kubectl(ctx, "", "-n", ns, "patch", "ksvc", "counter", "--type", "merge",
		"-p", `{"spec":{"template":{"metadata":{"annotations":{"kstate.dev/slots":"1024"}}}}}`)
	if err == nil || !strings.Contains(err.Error(), "kstate.dev/slots") {
		t.Errorf("changing kstate.dev/slots: %v, want a denial naming the field", err)
	} else {
		t.Logf("slots change denied: %v", err)
	}
	if got := count(t, host, "GET", "alice", ""); got.Count != 2 {
		t.Errorf("alice: count %d, want 2", got.Count)
	}
}

// TestAffinityPreloadAndCLI: a revision scaled from one pod to three. The
// two joining pods preload the entities of the slots they are about to own
// before they turn Ready; then every key is answered by one pod, the one
// placement and kn kstate owner name; counts are exact; kn kstate describe,
// get and send work against the cluster. Scaling back to two removes the pod
// with the lowest deletion cost (the least state) and loses nothing.
func TestAffinityPreloadAndCLI(t *testing.T) {
	t.Parallel()
	ns, redisAddr := kstateNamespace(t)
	host, _ := applyKsvc(t, ns, "counter", counterService(t, "counter", map[string]string{
		"kstate.dev/enabled":                "true",
		"autoscaling.knative.dev/min-scale": "1",
	}))
	const rev = "counter-00001"
	keys := entityKeys("user", 300)
	want := map[string]int64{}
	for _, k := range keys {
		want[k] = count(t, host, "POST", k, "").Count
	}
	first := readyPods(t, ns, rev)
	if len(first) != 1 {
		t.Fatalf("ready pods %v, want one", first)
	}
	// Wait until the writes are in Redis (a joining pod preloads from there).
	waitFor(t, "the first pod's flush", time.Minute, func() bool { return statsOf(t, ns, first[0]).DirtyEntities == 0 })

	// Scale to three within the revision: the PodAutoscaler's min-scale.
	mustKubectl(t, "", "-n", ns, "annotate", "pa", rev, "autoscaling.knative.dev/min-scale=3", "--overwrite")
	took := waitFor(t, "three ready pods", 3*time.Minute, func() bool { return len(readyPods(t, ns, rev)) == 3 })
	pods := readyPods(t, ns, rev)
	t.Logf("scaled 1 -> 3 in %s: %v (Redis %s)", took.Round(time.Millisecond), pods, redisAddr)
	for _, p := range pods {
		if p == first[0] {
			continue
		}
		st := statsOf(t, ns, p)
		t.Logf("joining pod %s at Ready: %d entities preloaded, %d requests", p, st.Entities, st.Requests)
		if st.Entities == 0 {
			t.Errorf("joining pod %s turned Ready with nothing preloaded", p)
		}
	}

	// Affinity: three rounds over every key; each key stays on one pod.
	owner := map[string]string{}
	used := map[string]int{}
	for round := range 3 {
		for _, k := range keys {
			out := mustRequest(t, "POST", host, "/", "", map[string]string{"Kstate-Key": k, "Content-Type": "application/json"})
			var r countReply
			if err := json.Unmarshal([]byte(out), &r); err != nil || r.Key != k {
				t.Fatalf("POST %s: %q", k, out)
			}
			want[k]++
			if r.Count != want[k] {
				t.Errorf("round %d key %s: count %d, want %d", round, k, r.Count, want[k])
			}
		}
		// The pod comes from the answer's Kstate-Pod header.
		for _, k := range keys {
			code, _, pod, err := requestPod("GET", host, k)
			if err != nil || code != 200 {
				t.Fatalf("GET %s: %d %v", k, code, err)
			}
			if prev, ok := owner[k]; ok && prev != pod {
				t.Errorf("round %d: key %s answered by %s, before by %s", round, k, pod, prev)
			}
			owner[k] = pod
			if round == 0 {
				used[pod]++
			}
		}
	}
	t.Logf("keys per pod: %v", used)
	if len(used) != 3 {
		t.Errorf("keys were answered by %d pods (%v), want all 3", len(used), used)
	}
	var hits, misses int64
	for _, p := range pods {
		if p == first[0] {
			continue
		}
		st := statsOf(t, ns, p)
		hits, misses = hits+st.CacheHits, misses+st.CacheMisses
	}
	ratio := float64(hits) / float64(max(hits+misses, 1))
	t.Logf("joining pods' first-hit ratio: %d hits, %d misses (%.3f)", hits, misses, ratio)
	if ratio < 0.95 {
		t.Errorf("joining pods' cache hit ratio %.3f < 0.95: preload on scale-up did not warm them", ratio)
	}

	// kn kstate owner computes the same owner, with the placement code.
	for _, k := range keys[:20] {
		var o struct {
			Pod  string `json:"pod"`
			Slot uint32 `json:"slot"`
		}
		if err := json.Unmarshal([]byte(mustKnKstate(t, "owner", "counter", k, "-n", ns, "-o", "json")), &o); err != nil {
			t.Fatal(err)
		}
		if o.Pod != owner[k] {
			t.Errorf("kn kstate owner %s: %s, but %s answered", k, o.Pod, owner[k])
		}
	}
	// describe: three pods, every slot placed once.
	desc := mustKnKstate(t, "describe", "counter", "-n", ns, "-o", "json")
	var d struct {
		Revisions []struct {
			Pods []struct {
				Name       string `json:"name"`
				SlotsOwned int    `json:"slotsOwned"`
			} `json:"pods"`
		} `json:"revisions"`
	}
	if err := json.Unmarshal([]byte(desc), &d); err != nil {
		t.Fatalf("describe -o json: %v: %s", err, desc)
	}
	placed, described := 0, 0
	for _, r := range d.Revisions {
		for _, p := range r.Pods {
			placed += p.SlotsOwned
			described++
		}
	}
	if described != 3 || placed != 4096 {
		t.Errorf("describe: %d pods with %d slots placed, want 3 and 4096:\n%s", described, placed, desc)
	}
	t.Logf("kn kstate describe counter:\n%s", mustKnKstate(t, "describe", "counter", "-n", ns))

	// get reads the entity from Redis; send goes through the ingress.
	k := keys[7]
	waitFor(t, "kn kstate get "+k+" to show the flushed count", time.Minute, func() bool {
		out := mustKnKstate(t, "get", "counter", k, "-n", ns, "-o", "json", "--redis", "redis://"+redisAddr)
		return hasCount(out, want[k])
	})
	out := mustKnKstate(t, "send", "counter", "-n", ns, "--key", k, "--type", "counter.add", "--data", `{"by": 5}`,
		"--ingress", ingressAddr, "-o", "json")
	if !hasCount(out, want[k]+5) || !strings.Contains(out, owner[k]) {
		t.Errorf("kn kstate send %s: %s, want count %d from %s", k, out, want[k]+5, owner[k])
	}

	// State-aware scale-down: the autoscaler plugin sets each pod's
	// deletion cost from the state it holds (refreshed at most every 30s),
	// and the ReplicaSet removes the pod with the lowest cost. The pod that
	// goes flushes and releases its slots: nothing is lost.
	costs := map[string]int{}
	waitFor(t, "a deletion cost from state on every pod", 2*time.Minute, func() bool {
		out := mustKubectl(t, "", "-n", ns, "get", "pods", "-l", "serving.knative.dev/revision="+rev, "-o",
			`jsonpath={range .items[*]}{.metadata.name}={.metadata.annotations.controller\.kubernetes\.io/pod-deletion-cost}{" "}{end}`)
		clear(costs)
		for _, f := range strings.Fields(out) {
			name, v, _ := strings.Cut(f, "=")
			if n, err := strconv.Atoi(v); err == nil && n > 0 {
				costs[name] = n
			}
		}
		return len(costs) == 3
	})
	cheapest, tie := "", false
	for p, c := range costs {
		switch {
		case cheapest == "" || c < costs[cheapest]:
			cheapest, tie = p, false
		case c == costs[cheapest]:
			tie = true
		}
	}
	t.Logf("pod-deletion-cost: %v", costs)
	mustKubectl(t, "", "-n", ns, "annotate", "pa", rev, "autoscaling.knative.dev/min-scale=2", "--overwrite")
	waitFor(t, "two ready pods", 3*time.Minute, func() bool { return len(readyPods(t, ns, rev)) == 2 })
	left := readyPods(t, ns, rev)
	switch {
	case tie:
		t.Logf("scale-down 3 -> 2 kept %v (lowest cost tied, so either could go)", left)
	case contains(left, cheapest):
		t.Errorf("scale-down 3 -> 2 kept %v, including %s, the pod with the lowest deletion cost %d (%v)", left, cheapest, costs[cheapest], costs)
	default:
		t.Logf("scale-down 3 -> 2 removed %s, the pod with the lowest deletion cost", cheapest)
	}
	want[k] += 5
	for _, k := range keys {
		if got := count(t, host, "GET", k, ""); got.Count != want[k] {
			t.Errorf("after scale-down: key %s count %d, want %d", k, got.Count, want[k])
		}
	}
}

// hasCount: a JSON document has "count": n in it.
func hasCount(doc string, n int64) bool {
	return regexp.MustCompile(fmt.Sprintf(`"count":\s*%d\b`, n)).MatchString(doc)
}

// requestPod sends a plain GET for a key and returns the pod that answered.
func requestPod(method, host, key string) (int, string, string, error) {
	code, body, hdr, err := requestHeaders(method, host, "/", "", map[string]string{"Kstate-Key": key})
	return code, body, hdr.Get("Kstate-Pod"), err
}

// TestRolloutUnderCloudEventLoad: revision 2 takes over from revision 1 while
// CloudEvents (broker-style, each retried with its id until acknowledged)
// flow. Slots move by lease handoff; no acknowledged event is lost or
// applied twice.
func TestRolloutUnderCloudEventLoad(t *testing.T) {
	t.Parallel()
	ns, _ := kstateNamespace(t)
	_, load := counterUnderLoad(t, ns, "device", nil)

	mustKubectl(t, "", "-n", ns, "patch", "ksvc", "counter", "--type", "merge",
		"-p", `{"spec":{"template":{"metadata":{"annotations":{"e2e.kstate.dev/rollout":"2"}}}}}`)
	took := waitFor(t, "revision 2 serving and revision 1 gone", 5*time.Minute, func() bool {
		ready := strings.TrimSpace(mustKubectl(t, "", "-n", ns, "get", "ksvc", "counter", "-o", "jsonpath={.status.latestReadyRevisionName}"))
		return ready == "counter-00002" && len(readyPods(t, ns, "counter-00001")) == 0 && len(readyPods(t, ns, "counter-00002")) == 2
	})
	t.Logf("rollout done in %s with %d events acknowledged so far", took.Round(time.Millisecond), load.acknowledged())
	before := load.acknowledged()
	waitFor(t, "load on revision 2", time.Minute, func() bool { return load.acknowledged() > before+200 })
	load.check(t)
	for _, p := range readyPods(t, ns, "counter-00002") {
		if st := statsOf(t, ns, p); st.RejectedWrites != 0 {
			t.Errorf("pod %s: %d writes rejected by the fence", p, st.RejectedWrites)
		}
	}
}

// TestSyncKill9LosesNothing: with durability sync, SIGKILL of an agent under
// CloudEvent load loses no acknowledged event; the kubelet restarts the
// container and the slots are taken over after the lease TTL.
func TestSyncKill9LosesNothing(t *testing.T) {
	t.Parallel()
	ns, _ := kstateNamespace(t)
	_, load := counterUnderLoad(t, ns, "order", map[string]string{"kstate.dev/durability": "sync"})

	pods := readyPods(t, ns, "counter-00001")
	if len(pods) != 2 {
		t.Fatalf("ready pods %v, want two", pods)
	}
	victim := pods[0]
	pid := agentPID(t, victim)
	restarts := agentRestarts(t, ns, victim)
	at := load.acknowledged()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %d (agent of %s): %v", pid, victim, err)
	}
	killed := time.Now()
	t.Logf("kill -9 of the agent of %s (pid %d) after %d events", victim, pid, at)
	waitAgentRestarted(t, ns, victim, restarts, 2*time.Minute)
	load.waitAcked(t, 300, time.Minute)
	// An attempt sent after the kill and answered by the victim pod was
	// answered by the restarted agent.
	t.Logf("first answer of the restarted agent %s after the kill; attempts meanwhile: %s",
		load.firstAck(killed, func(a ceAck) bool { return a.pod == victim && a.last.After(killed) }), load.outcomes(killed, time.Now()))
	load.check(t)
}

// agentPID finds the host PID of a pod's kstate-agent process (containers
// are host processes on this single-node cluster).
func agentPID(t *testing.T, pod string) int {
	t.Helper()
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		if comm, _ := os.ReadFile(d + "/comm"); strings.TrimSpace(string(comm)) != "kstate-agent" {
			continue
		}
		env, _ := os.ReadFile(d + "/environ")
		for _, kv := range strings.Split(string(env), "\x00") {
			if kv == "KSTATE_POD_NAME="+pod {
				pid, _ := strconv.Atoi(filepath.Base(d))
				return pid
			}
		}
	}
	t.Fatalf("no kstate-agent process of pod %s on this host", pod)
	return 0
}

// TestRedisKilledUnderLoad: Redis is SIGKILLed under CloudEvent load (async
// durability) and restarted from its append-only file once the agents have
// writes they cannot flush. Warm keys keep being answered from memory
// meanwhile; when Redis is back the agents flush what they buffered, and no
// acknowledged event is lost or applied twice.
func TestRedisKilledUnderLoad(t *testing.T) {
	t.Parallel()
	ns, redis := kstateNamespaceWithRedis(t)
	_, load := counterUnderLoad(t, ns, "sensor", nil)
	pods := readyPods(t, ns, "counter-00001")

	redis.Kill()
	at := load.acknowledged()
	t.Logf("redis-server killed after %d events", at)
	waitUnflushed(t, ns, pods, time.Minute)
	during := load.acknowledged() - at
	redis.Start()
	t.Logf("redis-server restarted from its append-only file; %d events acknowledged while it was down", during)
	waitFor(t, "load after the restart", 2*time.Minute, func() bool { return load.acknowledged() > at+during+300 })
	load.check(t)
}

// TestCLIEnableDisable: kn kstate enable turns a running plain Service into a
// kstate Service (the webhook injects the agent in the new revision, which
// goes Ready and answers with counts), disable turns it back; wrong input
// gets a clear error and a non-zero exit against the real API server.
func TestCLIEnableDisable(t *testing.T) {
	t.Parallel()
	ns, redisAddr := kstateNamespace(t)
	// The counter function needs the agent; as a plain Service its
	// container would never be Ready, so start from a plain hello Service
	// whose image is then swapped for the counter in the same update.
	host, _ := applyKsvc(t, ns, "hello", helloKsvc("hello"))
	if out := mustRequest(t, "GET", host, "/", "", nil); !strings.Contains(out, "hello") {
		t.Fatalf("plain Service: %q", out)
	}
	mustKubectl(t, "", "-n", ns, "patch", "ksvc", "hello", "--type", "json", "-p",
		fmt.Sprintf(`[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":%q}]`, imageRef(t, "counter")))
	out := mustKnKstate(t, "enable", "hello", "-n", ns, "--durability", "sync", "--key", "header:Counter-Id")
	t.Logf("kn kstate enable:\n%s", out)
	for _, want := range []string{"kstate.dev/enabled", "kstate.dev/durability", "kstate.dev/key"} {
		if !strings.Contains(out, want) {
			t.Errorf("enable output does not say it set %s:\n%s", want, out)
		}
	}
	// The image swap made revision 2 (a function without its agent, never
	// Ready); enable makes revision 3, which the webhook completes.
	waitFor(t, "the kstate revision to be Ready", 3*time.Minute, func() bool {
		return strings.TrimSpace(mustKubectl(t, "", "-n", ns, "get", "ksvc", "hello", "-o", "jsonpath={.status.latestReadyRevisionName}")) == "hello-00003"
	})
	for i := 1; i <= 3; i++ {
		out := mustRequest(t, "POST", host, "/", "", map[string]string{"Counter-Id": "c1"})
		if !hasCount(out, int64(i)) {
			t.Fatalf("POST %d after enable: %q", i, out)
		}
	}
	desc := mustKnKstate(t, "describe", "hello", "-n", ns)
	if !strings.Contains(desc, "sync") || !strings.Contains(desc, "header:Counter-Id") {
		t.Errorf("describe after enable does not show the settings:\n%s", desc)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"describe", "nosuch", "-n", ns}, fmt.Sprintf(`service "nosuch" not found in namespace %q`, ns)},
		{[]string{"enable", "hello", "-n", ns, "--key", "cookie:x"}, `--key: key spec "cookie:x"`},
		{[]string{"get", "hello", "c1", "-n", ns, "--redis", "redis://" + nodeIP + ":1"}, "connection refused"},
		{[]string{"describe", "hello", "-n", ns, "--kubeconfig", "/nonexistent"}, "nonexistent"},
	} {
		out, err := knKstate(t, tc.args...)
		if err == nil {
			t.Errorf("kn kstate %v: succeeded (%q), want an error", tc.args, out)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("kn kstate %v: %v, want it to say %q", tc.args, err, tc.want)
		}
	}
	_ = redisAddr

	out = mustKnKstate(t, "disable", "hello", "-n", ns)
	t.Logf("kn kstate disable:\n%s", out)
	got := mustKubectl(t, "", "-n", ns, "get", "ksvc", "hello", "-o", `jsonpath={.spec.template.metadata.annotations.kstate\.dev/enabled}`)
	if strings.EqualFold(strings.TrimSpace(got), "true") {
		t.Errorf("after disable kstate.dev/enabled is %q", got)
	}
}
