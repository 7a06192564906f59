//go:build e2e

package e2e

// Cluster versions of failure scenarios that test/chaos runs in dev mode:
// SIGTERM of a pod (async and sync), a 30 s Redis outage (killed, and
// hung), a partition between one agent and Redis past the lease TTL
// (async and sync), kill -9 of an agent with async durability, and a sync
// agent killed while cut off from Redis. They run ceLoad (counterUnderLoad),
// which records every attempt's outcome and answering pod and every
// acknowledgement's times and pod, so a scenario can say what the clients
// saw while it lasted, judge a bounded loss, and measure recovery from
// the answers rather than from when a poll noticed it.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestSigtermUnderLoad: one of two pods is deleted (the kubelet SIGTERMs its
// containers; the agent drains, flushes and releases its slots) while
// CloudEvents flow, with the default (async) durability and with sync. The
// ReplicaSet starts a replacement; no acknowledged event is lost or applied
// twice, no count is answered to two events, and no write is rejected by
// the fence (a graceful handoff: the slots' next holders wait for the
// release).
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
	_, load := counterUnderLoad(t, ns, "term", ann)
	pods := readyPods(t, ns, "counter-00001")
	victim := pods[0]
	before := statsOfPods(t, ns, pods)
	t.Logf("victim %s before SIGTERM: %s", victim, before[victim])

	at := load.acknowledged()
	deleted := time.Now()
	mustKubectl(t, "", "-n", ns, "delete", "pod", victim, "--wait=false")
	// Read the terminating pod's stats for as long as its agent answers:
	// the last reading has its rejected writes up to (almost) its end. A
	// write rejected after that reading is not seen; the pod and its
	// counters are gone then.
	last, reads := before[victim], 0
	gone := waitFor(t, "the deleted pod to be gone", 3*time.Minute, func() bool {
		if s, err := tryStatsOf(ns, victim); err == nil {
			last, reads = s, reads+1
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := kubectl(ctx, "", "-n", ns, "get", "pod", victim, "-o", "name")
		return err != nil && strings.Contains(err.Error(), "NotFound")
	})
	victimAcks := load.acked(deleted, time.Now(), func(a ceAck) bool { return a.pod == victim })
	lastAnswer := "none"
	if len(victimAcks) > 0 {
		lastAnswer = victimAcks[len(victimAcks)-1].at.Sub(deleted).Round(time.Millisecond).String()
	}
	t.Logf("pod %s deleted after %d events; it acknowledged %d events after the delete, the last %s after it; gone (to a 0.5 s poll) %s after the delete; attempts meanwhile: %s",
		victim, at, len(victimAcks), lastAnswer, gone.Round(time.Second), load.outcomes(deleted, time.Now()))
	t.Logf("the terminating pod's last stats (%d readings after the delete): %s", reads, last)
	waitFor(t, "a replacement pod to be Ready", 3*time.Minute, func() bool {
		p := readyPods(t, ns, "counter-00001")
		return len(p) == 2 && !contains(p, victim)
	})
	now := readyPods(t, ns, "counter-00001")
	for _, p := range now {
		if !contains(pods, p) {
			t.Logf("replacement %s: first acknowledgement %s after the delete", p,
				load.firstAck(deleted, func(a ceAck) bool { return a.pod == p }))
		}
	}
	load.waitAcked(t, 300, 2*time.Minute)
	end := time.Now()
	t.Logf("attempts from the delete to the end: %s", load.outcomes(deleted, end))
	t.Logf("acknowledged from the delete to the end, by pod: %v", load.ackedBy(deleted, end))
	v := load.check(t)
	after := statsOfPods(t, ns, now)
	after[victim] = last
	rejected := rejectedSince(t, before, after)
	if rejected != 0 {
		t.Errorf("SIGTERM (%s): %d writes rejected by the fence, want 0: a graceful handoff should not fence anyone", durability, rejected)
	}
	t.Logf("SIGTERM (%s): %d events acknowledged, %d retries, %d lost, %d doubled, %d 503s, %d writes rejected by the fence",
		durability, v.acked, v.retries, v.lost, v.doubled, load.refused(deleted, end), rejected)
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

func redisOutage(t *testing.T, hung bool) {
	const outage = 30 * time.Second
	ns, redis := kstateNamespaceWithRedis(t)
	_, load := counterUnderLoad(t, ns, "outage", map[string]string{"kstate.dev/max-dirty-bytes": "4Ki"})
	pods := readyPods(t, ns, "counter-00001")
	before := statsOfPods(t, ns, pods)

	what := "killed (SIGKILL)"
	if hung {
		what = "stopped (SIGSTOP)"
		// A stopped server would never handle the SIGINT that stops it
		// when the test ends; cleanups run last-in first-out.
		t.Cleanup(func() { redis.Signal(syscall.SIGCONT) })
		redis.Signal(syscall.SIGSTOP)
	} else {
		redis.Kill()
	}
	down := time.Now()
	at := load.acknowledged()
	// Show the outage reached the agents before it ends.
	waitUnflushed(t, ns, pods, outage)
	for _, p := range pods {
		t.Logf("pod %s during the outage: %s", p, statsOf(t, ns, p))
	}
	time.Sleep(time.Until(down.Add(outage))) // the outage's length, not a wait for a condition
	during := load.acknowledged() - at
	if hung {
		redis.Signal(syscall.SIGCONT)
	} else {
		redis.Start()
	}
	up := time.Now()
	t.Logf("redis-server %s for %s; %d events acknowledged meanwhile; attempts that ended meanwhile: %s; 503s by pod: %v",
		what, up.Sub(down).Round(time.Millisecond), during, load.outcomes(down, up), load.refusedBy(down, up))
	refused := load.refused(down, up)
	if refused == 0 {
		t.Errorf("no attempt was refused (503) during a %s Redis outage with max-dirty-bytes 4Ki: no back-pressure", outage)
	}
	// Recovery is when the first answer after Redis is back came, from the
	// load's records; the poll only waits for it.
	waitFor(t, "the first event acknowledged after Redis is back", 2*time.Minute, func() bool {
		return load.firstAck(up, nil) >= 0
	})
	recovered := load.firstAck(up, nil)
	t.Logf("first acknowledgement %s after Redis is back", recovered)
	load.waitAcked(t, 300, 2*time.Minute)
	t.Logf("attempts after Redis is back: %s", load.outcomes(up, time.Now()))
	v := load.check(t)
	rejected := rejectedSince(t, before, statsOfPods(t, ns, readyPods(t, ns, "counter-00001")))
	t.Logf("Redis %s for %s: %d events acknowledged (%d during the outage), %d retries, %d lost, %d doubled, %d 503s during the outage, first acknowledgement %s after it, %d writes rejected by the fence",
		what, outage, v.acked, during, v.retries, v.lost, v.doubled, refused, recovered, rejected)
}

// TestPartitionAgentFromRedis: one of two agents is cut off from Redis (an
// iptables rule in its pod's network namespace drops its packets to the
// Redis port, cutFromRedis) for 15 s, longer than the lease TTL, and
// healed. The pod must stay Ready and routed throughout, and nobody may
// take its slots over (checked while the cut lasts): with async durability
// it keeps answering warm keys from memory and flushes everything once
// healed, renewing its own epoch; with sync durability its writes cannot be
// made durable, its replies give up with 503 after the lease TTL and the
// load retries them with the same id. Either way no acknowledged event is
// lost or applied twice, no write is rejected by the fence, and the
// agent's oldest unflushed update must be older than the TTL at the heal
// (the cut held). With sync, every 503 during the cut must come from the
// cut-off pod, at least one must come, and the cut-off pod must not
// acknowledge an event that reached it after the cut was in place (its
// first attempt started after the rule went in): nothing it wrote could
// reach Redis.
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
	const hold = leaseTTL + 5*time.Second // the partition outlasts the lease
	ns, redis := kstateNamespaceWithRedis(t)
	ann := map[string]string{}
	if durability == "sync" {
		ann["kstate.dev/durability"] = "sync"
	}
	_, load := counterUnderLoad(t, ns, "cut", ann)
	pods := readyPods(t, ns, "counter-00001")
	victim, other := pods[0], pods[1]
	pid := agentPID(t, victim)
	before := statsOfPods(t, ns, pods)
	heal := cutFromRedis(t, pid, redis.Addr)
	cut := time.Now() // the rule is in place
	t.Logf("agent of %s (pid %d) cut off from Redis %s after %d events", victim, pid, redis.Addr, load.acknowledged())
	// The cut reaches the agent: it holds writes it cannot flush. It must
	// show before the partition ends.
	waitUnflushed(t, ns, []string{victim}, hold)
	// While the cut lasts, the cut-off pod stays Ready (so it stays routed)
	// and the other agent takes none of its slots.
	var takeover []string
	for time.Now().Before(cut.Add(hold)) {
		if p := readyPods(t, ns, "counter-00001"); !contains(p, victim) {
			takeover = append(takeover, fmt.Sprintf("%s into the cut: %s not Ready (ready: %v)", time.Since(cut).Round(time.Millisecond), victim, p))
		}
		if st := statsOf(t, ns, other); len(st.Slots) != len(before[other].Slots) || st.HandoffsIn != before[other].HandoffsIn {
			takeover = append(takeover, fmt.Sprintf("%s into the cut: %s holds %d slots (%d before), handoffs in %d (%d before)",
				time.Since(cut).Round(time.Millisecond), other, len(st.Slots), len(before[other].Slots), st.HandoffsIn, before[other].HandoffsIn))
		}
		time.Sleep(min(time.Second, time.Until(cut.Add(hold))))
	}
	during := statsOf(t, ns, victim)
	heal()
	healed := time.Now()
	for i, s := range takeover {
		if i < 5 {
			t.Errorf("the cut-off pod should stay Ready and keep its slots during the cut: %s", s)
		}
	}
	t.Logf("healed after %s; the cut-off agent then: %s (before: %s)", healed.Sub(cut).Round(time.Millisecond), during, before[victim])
	t.Logf("attempts during the partition: %s", load.outcomes(cut, healed))
	t.Logf("answers during the partition, by pod: %v; acknowledged: %v", load.attemptsBy(cut, healed, nil), load.ackedBy(cut, healed))
	if load.attemptsBy(cut, healed, nil)[victim] == 0 {
		t.Errorf("the cut-off pod answered nothing during the cut: it was not routed")
	}
	if during.FlushLagMs < leaseTTL.Milliseconds() {
		t.Errorf("the cut-off agent's oldest unflushed update was %d ms old at the heal: the cut did not keep it from Redis past the lease TTL", during.FlushLagMs)
	}
	refusedBy := load.refusedBy(cut, healed)
	if durability == "sync" {
		// Sync: a reply means the update is in Redis. An event whose first
		// attempt was sent after the rule went in reached the agent after
		// it, so its update could not reach Redis before the heal (the
		// answer would still come back: the rule drops only the agent's
		// packets to Redis).
		acks := load.acked(cut, healed, func(a ceAck) bool { return a.pod == victim })
		t.Logf("sync: the cut-off agent acknowledged %d events during the partition, at %v after the cut", len(acks), since(cut, acks))
		for _, a := range acks {
			if !a.first.Before(cut) {
				t.Errorf("sync: the cut-off agent acknowledged event %s (count %d, dup %v) %s into the cut, first sent %s into it: it cannot be in Redis",
					a.id, a.count, a.dup, a.at.Sub(cut).Round(time.Millisecond), a.first.Sub(cut).Round(time.Millisecond))
			}
		}
		if refusedBy[victim] == 0 {
			t.Errorf("sync: the cut-off pod refused nothing (503) during the partition: replies stuck there should give up with 503 after the lease TTL")
		}
		for p, n := range refusedBy {
			if p != victim {
				t.Errorf("sync: %d attempts during the partition were refused (503) by %q, not by the cut-off pod %s", n, p, victim)
			}
		}
	}
	// Caught up: the cut-off agent's flush lag under 1 s again. The stats
	// poll brackets when: after the last reading that still lagged, by the
	// first that did not.
	lagging := healed
	waitFor(t, "the cut-off agent to flush what it buffered", 2*time.Minute, func() bool {
		asked := time.Now()
		if statsOf(t, ns, victim).FlushLagMs < 1000 {
			return true
		}
		lagging = asked
		return false
	})
	t.Logf("the cut-off agent caught up (flush lag under 1 s) between %s and %s after the heal; its first acknowledgement after the heal came %s after it",
		lagging.Sub(healed).Round(time.Millisecond), time.Since(healed).Round(time.Millisecond),
		load.firstAck(healed, func(a ceAck) bool { return a.pod == victim }))
	load.waitAcked(t, 300, 2*time.Minute)
	t.Logf("attempts after the heal: %s; the slowest that started after it took %s", load.outcomes(healed, time.Now()), load.slowestStarted(healed))
	v := load.check(t)
	rejected := rejectedSince(t, before, statsOfPods(t, ns, readyPods(t, ns, "counter-00001")))
	if rejected != 0 {
		t.Errorf("%d writes rejected by the fence, want 0: nobody took the cut-off pod's slots", rejected)
	}
	t.Logf("partition %s (%s): %d events acknowledged, %d retries, %d lost, %d doubled, 503s during it by pod %v, %d writes rejected by the fence",
		hold, durability, v.acked, v.retries, v.lost, v.doubled, refusedBy, rejected)
}

// TestAsyncKill9LossBounded: with the default (async) durability, SIGKILL
// of one of two agents under load may lose what it acknowledged but had not
// flushed yet. The test reads the agent's flush lag (age of its oldest
// unflushed update) just before the kill and identifies the lost events;
// it fails if one of them cannot have been unflushed at the kill, or if any
// count is above its acknowledged events. A lost event was answered by the
// killed agent, so the attempt that was acknowledged (its last) was sent
// before the kill; and it was applied after the oldest update still
// unflushed when the lag was read, so its answer came after that. (The
// first attempt is not the one to bound: a retry after a refusal is the
// one applied. Nor can the start of the attempt bound it from below: an
// attempt sent earlier may be applied later.) It reports the loss.
func TestAsyncKill9LossBounded(t *testing.T) {
	t.Parallel()
	ns, _ := kstateNamespace(t)
	_, load := counterUnderLoad(t, ns, "async", nil)

	pods := readyPods(t, ns, "counter-00001")
	victim := pods[0]
	pid := agentPID(t, victim)
	restarts := agentRestarts(t, ns, victim)
	asked := time.Now()
	st := statsOf(t, ns, victim)
	at := load.acknowledged()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %d (agent of %s): %v", pid, victim, err)
	}
	killed := time.Now()
	// The lag was computed after asked: every update older than
	// asked-lag had been flushed.
	unflushedSince := asked.Add(-time.Duration(st.FlushLagMs+1) * time.Millisecond)
	t.Logf("kill -9 of the agent of %s (pid %d) after %d events; just before: %s", victim, pid, at, st)
	waitAgentRestarted(t, ns, victim, restarts, 2*time.Minute)
	load.waitAcked(t, 300, 2*time.Minute)
	t.Logf("the restarted agent's first answer (to an attempt sent after the kill) came %s after the kill; attempts from the kill to now: %s",
		load.firstAck(killed, func(a ceAck) bool { return a.pod == victim && a.last.After(killed) }), load.outcomes(killed, time.Now()))
	inWindow := func(a ceAck) bool { return !a.at.Before(unflushedSince) && a.last.Before(killed) }
	window := fmt.Sprintf("answered after %s (the agent's flush lag %d ms before the kill) from an attempt sent before the kill at %s",
		unflushedSince.Format("15:04:05.000"), st.FlushLagMs, killed.Format("15:04:05.000"))
	var lostAges []time.Duration // how long before the kill each lost event was acknowledged
	v := load.checkLoss(t, func(key string, lost int64, acks []ceAck) error {
		// A key's events come from one worker, one at a time, so its acks
		// are in the order applied. The restarted agent counts on from the
		// last flushed value D: the first answer after the kill whose count
		// is not above the one before it is D+1, and the lost events are
		// those answered before it with counts above D.
		var lostAcks []ceAck
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
				if !inWindow(a) {
					return fmt.Errorf("event %s (count %d) was answered at %s from an attempt sent at %s (first at %s), not %s",
						a.id, a.count, a.at.Format("15:04:05.000"), a.last.Format("15:04:05.000"), a.first.Format("15:04:05.000"), window)
				}
			}
			return nil
		}
		// The lost events could not be told apart: bound their number by
		// the events acknowledged in the window.
		t.Logf("key %s: %d lost, but %d events answered with counts the restarted agent gave again", key, lost, len(lostAcks))
		var in int64
		for _, a := range acks {
			if inWindow(a) {
				in++
			}
		}
		if lost > in {
			return fmt.Errorf("more than the %d acknowledged events %s", in, window)
		}
		return nil
	})
	sort.Slice(lostAges, func(i, j int) bool { return lostAges[i] < lostAges[j] })
	t.Logf("lost events were answered this long before the kill (negative: after it): %v", lostAges)
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
// returns the function that heals the cut; a cut not healed by the test
// (one that fails first) is healed when it ends. The rule lives in the
// pod's network namespace, so it outlives a container restart; the test
// holds that namespace open (from the pod's pause process, which lives as
// long as the pod) and enters it through the open file.
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
	var ns *os.File
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		if comm, _ := os.ReadFile(d + "/comm"); strings.TrimSpace(string(comm)) != "pause" {
			continue
		}
		if l, _ := os.Readlink(d + "/ns/net"); l != netns {
			continue
		}
		if ns, err = os.Open(d + "/ns/net"); err == nil {
			break
		}
	}
	if ns == nil {
		t.Fatalf("no pause process in the network namespace %s of pid %d", netns, pid)
	}
	host, port, _ := strings.Cut(addr, ":")
	rule := []string{"OUTPUT", "-p", "tcp", "-d", host, "--dport", port, "-j", "DROP"}
	iptables := func(op string) error {
		// The open namespace file is the child's fd 3.
		args := append([]string{"--net=/proc/self/fd/3", "iptables", op}, rule...)
		cmd := exec.Command("nsenter", args...)
		cmd.ExtraFiles = []*os.File{ns}
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("nsenter %s (namespace %s): %v: %s", strings.Join(args, " "), netns, err, out)
		}
		return nil
	}
	if err := iptables("-A"); err != nil {
		ns.Close()
		t.Fatal(err)
	}
	var once sync.Once
	heal = func() {
		once.Do(func() {
			if err := iptables("-D"); err != nil {
				t.Error(err)
			}
			ns.Close()
		})
	}
	t.Cleanup(heal)
	return heal
}

// TestSyncPartitionedAgentKilled: with durability sync, an agent is cut off
// from Redis under load; its stuck replies give up after the lease TTL
// (503: applied in this pod, not yet durable, retry with the same id) and
// the load sends them again with the same id. The agent is killed
// (SIGKILL) once it has acknowledged an event first sent after the cut
// (which sync must not allow: that is an error), or 15 s past the lease
// TTL; then the cut is healed and the kubelet restarts the agent, which
// reads its entities back from Redis. Sync means an acknowledged event is
// in Redis: nothing acknowledged may be lost.
func TestSyncPartitionedAgentKilled(t *testing.T) {
	t.Parallel()
	// Past the TTL the stuck replies give up; the rest lets their retries
	// (backing off to 1 s) come back to the cut-off agent a few times.
	const killAfter = leaseTTL + 15*time.Second
	ns, redis := kstateNamespaceWithRedis(t)
	_, load := counterUnderLoad(t, ns, "cutkill", map[string]string{"kstate.dev/durability": "sync"})
	pods := readyPods(t, ns, "counter-00001")
	victim := pods[0]
	pid := agentPID(t, victim)
	restarts := agentRestarts(t, ns, victim)
	heal := cutFromRedis(t, pid, redis.Addr)
	cut := time.Now() // the rule is in place
	t.Logf("agent of %s (pid %d) cut off from Redis %s after %d events", victim, pid, redis.Addr, load.acknowledged())
	early := func(a ceAck) bool { return a.pod == victim && !a.first.Before(cut) }
	// The timeout only guards the poll: the condition holds by killAfter.
	waitFor(t, fmt.Sprintf("an acknowledgement from the cut-off agent of an event sent after the cut, or %s", killAfter), killAfter+time.Minute, func() bool {
		return len(load.acked(cut, time.Now(), early)) > 0 || time.Since(cut) > killAfter
	})
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %d: %v", pid, err)
	}
	killed := time.Now()
	heal()
	healed := time.Now()
	acks := load.acked(cut, killed, func(a ceAck) bool { return a.pod == victim })
	t.Logf("killed the cut-off agent %s after the cut, and healed; it acknowledged %d events since the cut, at %v after it; attempts meanwhile: %s; 503s by pod: %v",
		killed.Sub(cut).Round(time.Millisecond), len(acks), since(cut, acks), load.outcomes(cut, killed), load.refusedBy(cut, killed))
	for _, a := range load.acked(cut, killed, early) {
		t.Errorf("sync: the cut-off agent acknowledged event %s (count %d, dup %v) %s into the cut, first sent %s into it: it cannot be in Redis",
			a.id, a.count, a.dup, a.at.Sub(cut).Round(time.Millisecond), a.first.Sub(cut).Round(time.Millisecond))
	}
	waitAgentRestarted(t, ns, victim, restarts, 2*time.Minute)
	load.waitAcked(t, 300, 2*time.Minute)
	t.Logf("the restarted agent's first answer (to an attempt sent after the kill) came %s after the heal",
		load.firstAck(healed, func(a ceAck) bool { return a.pod == victim && a.last.After(killed) }))
	v := load.check(t)
	t.Logf("sync, cut off then killed: %d events acknowledged, %d retries, %d lost on keys %v, %d doubled, %d 503s from the cut to the kill",
		v.acked, v.retries, v.lost, v.lostKeys, v.doubled, load.refused(cut, killed))
}
