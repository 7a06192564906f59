package bench

import (
	"fmt"
	"strings"
	"testing"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/kstate-dev/kstate/pkg/dev"
)

// TestP5ScaleFromZero: the first response for a hot key when the service is
// at zero replicas, for
//
//   - kstate with preload: dev scales from zero when a request waits, and
//     the new replica takes the free slots that have data and preloads
//     their hot entities before the router sends it anything;
//   - kstate with lazy loading (dev Options.NoPreload): the replica loads
//     each key on its first request;
//   - the stateless baseline started cold the same way: a front that holds
//     requests, a scaler on dev's 20 ms tick, a replica that connects to
//     Redis before it is routed to.
//
// Each repetition warms the keys (the hot key most), waits for the flush,
// scales to zero, then starts an open-loop attack whose first request is
// the hot key: that request's latency is the cold start. The variants take
// turns, each on its own Redis behind the same delay. The result is the
// median over the repetitions.
func TestP5ScaleFromZero(t *testing.T) {
	m := benchMode(t)
	if m == smoke {
		t.Parallel()
	}
	var (
		nKeys = pick(m, 10, 100, 100)
		reps  = pick(m, 1, 3, 7)
		rate  = pick(m, 50, 200, 200)
		dur   = pick(m, 500*time.Millisecond, time.Second, 1500*time.Millisecond)
		delay = redisDelay(t)
		rep   = &report{id: "P5"}
		hot   = "hot"
	)
	ks := append([]string{hot}, keys("p5", nKeys-1)...)
	targets := func(url string) []vegeta.Target { return counterTargets(url, ks) } // the hot key first

	type variant struct {
		name   string
		redis  *delayedRedis
		url    string
		warm   func()
		toZero func()
		first  []time.Duration
		plot   []*vegeta.Result
		counts map[string]int64 // every key's count after the warm-up
		dev    *devCluster      // nil for the stateless baseline
		// exact: every acknowledged increment is applied once. Not so for
		// the stateless GET+SET, which loses updates to concurrent requests.
		exact bool
	}
	newKstate := func(name string, noPreload bool) *variant {
		r := startDelayedRedis(t, delay)
		dc := startDev(t, dev.Options{Redis: r.URL, Replicas: 1, NoPreload: noPreload})
		v := &variant{name: name, redis: r, url: dc.url, dev: dc, exact: true}
		v.warm = func() {
			if len(dc.status(t).Replicas) == 0 {
				if err := dc.scale(1); err != nil {
					t.Fatal(err)
				}
			}
			v.counts = warm(t, v.url, ks, hot)
			dc.waitClean(t)
		}
		v.toZero = func() {
			if err := dc.scale(0); err != nil {
				t.Fatal(err)
			}
			if st := dc.status(t); len(st.Replicas) != 0 {
				t.Fatalf("%s: replicas %v after scaling to zero", name, st.Replicas)
			}
		}
		return v
	}
	preload, lazy := newKstate("kstate, preload", false), newKstate("kstate, lazy (NoPreload)", true)
	sr := startDelayedRedis(t, delay)
	cold := startColdStateless(t, sr.URL)
	stateless := &variant{name: "stateless, cold start", redis: sr, url: cold.url}
	stateless.warm = func() { stateless.counts = warm(t, cold.url, ks, hot) }
	stateless.toZero = cold.scaleToZero

	variants := []*variant{preload, lazy, stateless}
	for r := range reps {
		for i := range variants {
			v := variants[(i+r)%len(variants)] // take turns going first
			v.warm()
			v.toZero()
			rs := attack("p5", targets(v.url), rate, dur)
			if sum := summarize(rs); sum.failed > 0 {
				logFailures(t, v.name, rs)
				t.Errorf("%s, repetition %d: %d of %d requests failed", v.name, r, sum.failed, sum.n)
			}
			if v.exact {
				checkExactlyOnce(t, v.name, rs, v.counts)
			}
			// The first request sent for the hot key (target 0, so the
			// first or nearly the first of the attack) met the cold start.
			// Requests held meanwhile are released together, so its reply
			// need not carry the next count.
			var first *vegeta.Result
			for _, x := range rs {
				if c, err := reply(x); err == nil && c.Key == hot && (first == nil || x.Timestamp.Before(first.Timestamp)) {
					first = x
				}
			}
			if first == nil {
				t.Fatalf("%s: no reply for the hot key after scaling to zero", v.name)
			}
			v.first = append(v.first, first.Latency)
			if r == 0 {
				v.plot = rs
			}
		}
	}

	med := func(v *variant) time.Duration { return quantile(append([]time.Duration{}, v.first...), 0.5) }
	p, l, s := med(preload), med(lazy), med(stateless)
	runs := fmt.Sprintf("median of %d", reps)
	rep.add(row{Measure: fmt.Sprintf("scale from zero, first response for a hot key, preload (%s; %d keys in Redis)", runs, nKeys),
		Kstate: ms(p), Baseline: ms(s) + " (stateless cold start)", Ratio: ratio(float64(p), float64(s)), Goal: "≤ 1.05", Met: met(float64(p) <= 1.05*float64(s))})
	rep.add(row{Measure: "scale from zero, first response for the hot key: preload vs lazy loading (NoPreload)",
		Kstate: ms(p), Baseline: ms(l) + " (lazy)", Ratio: ratio(float64(p), float64(l)), Goal: "—", Met: "—"})
	rep.add(row{Measure: "scale from zero, first response: lazy loading vs stateless cold start",
		Kstate: ms(l), Baseline: ms(s), Ratio: ratio(float64(l), float64(s)), Goal: "—", Met: "—"})
	for _, v := range variants {
		rep.note("%s: first responses %v; the %s attack after it (repetition 1): %s", v.name, roundAll(v.first), fmt.Sprintf("%d req/s × %s", rate, dur), summarize(v.plot))
	}
	took := preload.dev.preloads()
	if len(took) > 1 {
		took = took[1:] // the first is dev's own start, before any data
	}
	rep.note("dev's preload on each scale from zero: %s", strings.Join(took, "; "))
	rep.note("%s", preload.redis.delayNote(t))
	if m != smoke {
		var ss []series
		for _, v := range variants {
			ss = append(ss, series{name: v.name, rs: v.plot, start: v.plot[0].Timestamp})
		}
		path := plotLatency(t, "p5-scale-from-zero.png",
			fmt.Sprintf("P5: scale from zero, %d req/s open loop over %d keys, hot key first (Redis +%s each way)", rate, nKeys, us(delay)), ss, nil, false)
		rep.note("plot: %s", path)
	}
	rep.write(t, m)
}

// warm sends one increment for every key, and four more for the hot one,
// and returns every key's count.
func warm(t *testing.T, url string, ks []string, hot string) map[string]int64 {
	t.Helper()
	counts := map[string]int64{}
	for _, k := range ks {
		counts[k] = add(t, url, k).Count
	}
	for range 4 {
		counts[hot] = add(t, url, hot).Count
	}
	return counts
}

func roundAll(d []time.Duration) []string {
	out := make([]string, len(d))
	for i, x := range d {
		out[i] = ms(x)
	}
	return out
}
