package bench

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kstate-dev/kstate/pkg/dev"
	benchdelay "github.com/kstate-dev/kstate/test/bench/delay"
)

// TestP4ScaleUpUnderLoad: a fixed open-loop rate over warm keys on 2
// replicas; partway through, dev scales to 4 (new replicas preload the
// slots they gain from Redis, then the router moves traffic, and each moved
// slot is handed over on its first request). Compared with the steady state
// before the scale, in the same run:
//
//   - p99 in the rebalance window: from the scale request until every key
//     that moved has been answered by its new replica;
//   - failed requests, over the whole run;
//   - the first-hit ratio on moved keys: the share of moved keys whose first
//     request on the new replica was a cache hit (preloaded) rather than a
//     load from Redis. The agent counts hits and misses per replica, not per
//     key; every key is warm before the scale and nothing is evicted, so
//     every miss after the scale is a moved key's first request, and the
//     ratio is 1 - misses/moved keys. A moved key is one whose replica
//     (the Kstate-Pod reply header) changed.
func TestP4ScaleUpUnderLoad(t *testing.T) {
	m := benchMode(t)
	if m == smoke {
		t.Parallel()
	}
	var (
		nKeys   = pick(m, 20, 100, 200)
		rate    = pick(m, 100, 300, 400)
		dur     = pick(m, 2*time.Second, 8*time.Second, 20*time.Second)
		scaleAt = pick(m, 700*time.Millisecond, 4*time.Second, 8*time.Second)
		warmup  = pick(m, 200*time.Millisecond, time.Second, 2*time.Second) // excluded from the steady window
		delay   = redisDelay(t)
		rep     = &report{id: "P4"}
	)
	redis := startDelayedRedis(t, delay)
	dc := startDev(t, dev.Options{Redis: redis.URL, Replicas: 2})
	ks := keys("p4", nKeys)
	from := map[string]int64{}
	for _, k := range ks {
		from[k] = add(t, dc.url, k).Count
	}
	dc.waitClean(t) // hot sets are written by flushes: preload reads them
	initial := len(dc.preloads())
	benchdelay.LineFor(delay).Delivered()

	var (
		scaleStart, scaleEnd time.Time
		before               dev.Status
		scaleErr             = make(chan error, 1)
	)
	start := time.Now()
	timer := time.AfterFunc(scaleAt, func() {
		var err error
		if before, err = dc.statusErr(); err != nil {
			scaleErr <- err
			return
		}
		scaleStart = time.Now()
		err = dc.scale(4)
		scaleEnd = time.Now()
		scaleErr <- err
	})
	defer timer.Stop()
	rs := attack("p4", counterTargets(dc.url, ks), rate, dur)
	if err := <-scaleErr; err != nil {
		t.Fatal(err)
	}
	after := dc.status(t)
	if len(rs) > 0 {
		start = rs[0].Timestamp
	}

	// Which keys moved, and when each was first answered by its new
	// replica.
	type keyTrack struct{ oldPod, newPod string }
	track := map[string]*keyTrack{}
	firstNew := map[string]time.Time{}
	for _, r := range rs {
		if failed(r) {
			continue
		}
		c, err := reply(r)
		if err != nil {
			t.Errorf("request %d: reply %q: %v", r.Seq, r.Body, err)
			continue
		}
		pod := r.Headers.Get("Kstate-Pod")
		kt := track[c.Key]
		if kt == nil {
			kt = &keyTrack{}
			track[c.Key] = kt
		}
		if r.Timestamp.Before(scaleStart) {
			kt.oldPod = pod
		} else if kt.newPod == "" && pod != kt.oldPod && kt.oldPod != "" {
			kt.newPod = pod
			firstNew[c.Key] = r.End()
		}
	}
	moved := len(firstNew)
	rebalanceEnd := scaleEnd
	for _, at := range firstNew {
		if at.After(rebalanceEnd) {
			rebalanceEnd = at
		}
	}
	steady := summarize(between(rs, start.Add(warmup), scaleStart))
	rebal := summarize(between(rs, scaleStart, rebalanceEnd))
	post := summarize(between(rs, rebalanceEnd, start.Add(dur+time.Hour)))
	all := summarize(rs)
	misses := after.CacheMisses - before.CacheMisses
	if all.failed > 0 {
		logFailures(t, "scale-up", rs)
		t.Errorf("%d of %d requests failed during the scale-up", all.failed, all.n)
	}
	checkExactlyOnce(t, "scale-up", rs, from)
	if len(after.Replicas) != 4 {
		t.Errorf("replicas after the scale: %v, want 4", after.Replicas)
	}
	if m != smoke && moved == 0 {
		t.Errorf("no key moved to a new replica while the load ran (scale took %s)", scaleEnd.Sub(scaleStart))
	}

	hitRatio := 0.0
	if moved > 0 {
		hitRatio = max(0, 1-float64(misses)/float64(moved))
	}
	rep.add(row{Measure: fmt.Sprintf("scale-up 2→4 replicas under %d req/s over %d warm keys: first-hit ratio on moved keys", rate, nKeys),
		Kstate: fmt.Sprintf("%.1f%% (%d moved, %d missed)", 100*hitRatio, moved, misses), Baseline: "—", Ratio: "—", Goal: "≥ 95%", Met: met(moved > 0 && hitRatio >= 0.95)})
	rep.add(row{Measure: fmt.Sprintf("p99 in the rebalance window (%s, %d requests) vs steady state before it (%d requests)", rebalanceEnd.Sub(scaleStart).Round(time.Millisecond), rebal.n, steady.n),
		Kstate: ms(rebal.p99), Baseline: ms(steady.p99) + " (steady)", Ratio: ratio(float64(rebal.p99), float64(steady.p99)), Goal: "≤ 3×", Met: met(float64(rebal.p99) <= 3*float64(steady.p99))})
	rep.add(row{Measure: "p50 / p999 in the rebalance window vs steady (same run)", Kstate: ms(rebal.p50) + " / " + ms(rebal.p999),
		Baseline: ms(steady.p50) + " / " + ms(steady.p999), Ratio: ratio(float64(rebal.p50), float64(steady.p50)) + " / " + ratio(float64(rebal.p999), float64(steady.p999)), Goal: "—", Met: "—"})
	rep.add(row{Measure: fmt.Sprintf("failed requests over the whole run (%d requests)", all.n), Kstate: fmt.Sprint(all.failed), Baseline: "0", Ratio: "—", Goal: "0", Met: met(all.failed == 0)})
	rep.note("%s", redis.delayNote(t))
	rep.note("the scale request took %s (2 replicas started and preloaded, router updated): %s; slot handoffs during the run: %d",
		scaleEnd.Sub(scaleStart).Round(time.Millisecond), strings.Join(dc.preloads()[initial:], "; "), after.Handoffs-before.Handoffs)
	rep.note("steady: %s; rebalance: %s; after: %s", steady, rebal, post)
	if m != smoke {
		path := plotLatency(t, "p4-scale-up.png", fmt.Sprintf("P4: scale-up 2→4 under %d req/s open loop, %d keys (Redis +%s each way)", rate, nKeys, us(delay)),
			[]series{{name: "request", rs: rs, start: start}},
			[]marker{{"scale requested", scaleStart.Sub(start)}, {"new replicas routed", scaleEnd.Sub(start)}, {"every moved key served", rebalanceEnd.Sub(start)}}, true)
		rep.note("plot: %s", path)
	}
	rep.write(t, m)
	logMovedKeys(t, firstNew, scaleStart)
}

// logMovedKeys logs how long after the scale each moved key was first
// answered by its new replica.
func logMovedKeys(t *testing.T, firstNew map[string]time.Time, since time.Time) {
	var d []time.Duration
	for _, at := range firstNew {
		d = append(d, at.Sub(since))
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	if len(d) > 0 {
		t.Logf("moved keys first served by their new replica after the scale request: first %s, median %s, last %s",
			d[0].Round(time.Millisecond), d[len(d)/2].Round(time.Millisecond), d[len(d)-1].Round(time.Millisecond))
	}
}
