package bench

import (
	"context"
	"fmt"
	"testing"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/kstate-dev/kstate/pkg/dev"
	benchdelay "github.com/kstate-dev/kstate/test/bench/delay"
	"github.com/kstate-dev/kstate/test/bench/stateless"
)

// TestP2WarmCounter: one warm counter key served by kstate (dev, one
// replica, the counter example) against the stateless baseline (an HTTP
// handler doing a Redis GET and SET per request), each on its own Redis
// behind the same delay. Both get the same open-loop attack in alternating
// rounds; then the same closed-loop saturation. Redis commands per request
// are the commands each side's clients sent through its proxy (an EVALSHA
// is one), counted until the last write-behind flush landed; INFO
// commandstats, which also counts the commands scripts run inside Redis, is
// reported beside them. In benchmark runs the same is repeated, for
// information, over 100 keys.
func TestP2WarmCounter(t *testing.T) {
	m := benchMode(t)
	if m == smoke {
		t.Parallel()
	}
	var (
		rate      = pick(m, 50, 300, 500)
		dur       = pick(m, 400*time.Millisecond, 4*time.Second, 10*time.Second)
		rounds    = pick(m, 1, 1, 2)
		workers   = pick(m, 4, 16, 16)
		satDur    = pick(m, 300*time.Millisecond, 2*time.Second, 4*time.Second)
		satRounds = pick(m, 1, 1, 2)
		manyKeys  = pick(m, 0, 100, 100)
		manyDur   = pick(m, 0, 3*time.Second, 5*time.Second)
		warmups   = pick(m, 10, 100, 100)
		delay     = redisDelay(t)
		hot       = "hot"
		rep       = &report{id: "P2"}
		kRedis    = startDelayedRedis(t, delay)
		baseRedis = startDelayedRedis(t, delay)
	)
	dc := startDev(t, dev.Options{Redis: kRedis.URL, Replicas: 1})
	base, err := startStateless(baseRedis.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer base.close()

	var kCount int64
	for range warmups {
		kCount = add(t, dc.url, hot).Count
		add(t, base.url, hot)
	}
	dc.waitClean(t)
	benchdelay.LineFor(delay).Delivered() // count what the measured runs get

	type side struct {
		name    string
		url     string
		redis   *delayedRedis
		stats   *redisCounter
		clean   func() // waits until every update is in Redis
		latency []*vegeta.Result
		sat     []*vegeta.Result
		satTput float64
		sent    commandsByKind // commands sent to Redis in the open-loop runs
		ran     int64          // commands Redis ran, inside scripts too
	}
	k := &side{name: "kstate", url: dc.url, redis: kRedis, stats: newRedisCounter(t, kRedis.Addr()), clean: func() { dc.waitClean(t) }}
	s := &side{name: "stateless", url: base.url, redis: baseRedis, stats: newRedisCounter(t, baseRedis.Addr()), clean: func() {}}
	for round := range rounds {
		order := []*side{k, s}
		if round%2 == 1 {
			order = []*side{s, k}
		}
		for _, x := range order {
			ran, sent := x.stats.calls(t), x.redis.sent.snapshot()
			x.latency = append(x.latency, attack("p2-"+x.name, counterTargets(x.url, []string{hot}), rate, dur)...)
			x.clean()
			x.ran += x.stats.calls(t) - ran
			x.sent = x.sent.plus(x.redis.sent.snapshot().minus(sent))
		}
	}
	lostBefore := storedCount(t, s.stats, hot)
	for round := range satRounds {
		order := []*side{s, k}
		if round%2 == 1 {
			order = []*side{k, s}
		}
		for _, x := range order {
			rs := saturate("p2-sat-"+x.name, counterTargets(x.url, []string{hot}), workers, satDur)
			x.sat = append(x.sat, rs...)
			x.satTput += summarize(rs).throughput / float64(satRounds)
		}
	}
	satSum := summarize(s.sat)
	lost := int64(satSum.n-satSum.failed) - (storedCount(t, s.stats, hot) - lostBefore)
	for _, x := range []*side{k, s} {
		for what, rs := range map[string][]*vegeta.Result{"open-loop": x.latency, "saturation": x.sat} {
			if sum := summarize(rs); sum.failed > 0 {
				logFailures(t, x.name+" "+what, rs)
				t.Errorf("%s, %s: %d of %d requests failed", x.name, what, sum.failed, sum.n)
			}
		}
	}
	// Every acknowledged increment of the warm key counted exactly once.
	checkExactlyOnce(t, "kstate", append(append([]*vegeta.Result{}, k.latency...), k.sat...), map[string]int64{hot: kCount})

	kSum, sSum := summarize(k.latency), summarize(s.latency)
	kOps, sOps := float64(k.sent.total())/float64(kSum.n), float64(s.sent.total())/float64(sSum.n)
	kFlush := float64(k.sent[kindFlush]) / float64(kSum.n)
	kRan, sRan := float64(k.ran)/float64(kSum.n), float64(s.ran)/float64(sSum.n)
	load := fmt.Sprintf("1 key, %d req/s open loop, %d×%s per side", rate, rounds, dur)
	rep.add(row{Measure: "warm counter p50 latency (" + load + ")", Kstate: ms(kSum.p50), Baseline: ms(sSum.p50) + " (stateless GET+SET)",
		Ratio: ratio(float64(kSum.p50), float64(sSum.p50)), Goal: "≤ 0.5", Met: met(float64(kSum.p50) <= 0.5*float64(sSum.p50))})
	rep.add(row{Measure: "warm counter p99 latency (same run)", Kstate: ms(kSum.p99), Baseline: ms(sSum.p99),
		Ratio: ratio(float64(kSum.p99), float64(sSum.p99)), Goal: "—", Met: "—"})
	rep.add(row{Measure: "warm counter p999 latency (same run)", Kstate: ms(kSum.p999), Baseline: ms(sSum.p999),
		Ratio: ratio(float64(kSum.p999), float64(sSum.p999)), Goal: "—", Met: "—"})
	rep.add(row{Measure: fmt.Sprintf("warm counter throughput at saturation (1 key, %d closed-loop workers, %d×%s per side)", workers, satRounds, satDur),
		Kstate: fmt.Sprintf("%.0f req/s", k.satTput), Baseline: fmt.Sprintf("%.0f req/s", s.satTput),
		Ratio: ratio(k.satTput, s.satTput), Goal: "≥ 2", Met: met(k.satTput >= 2*s.satTput)})
	rep.add(row{Measure: "Redis commands sent per request (open-loop run, 1 key; all commands, lease renewals included)", Kstate: fmt.Sprintf("%.4f", kOps), Baseline: fmt.Sprintf("%.2f", sOps),
		Ratio: ratio(kOps, sOps), Goal: "≤ 0.05", Met: met(kOps <= 0.05)})
	rep.add(row{Measure: "… of which write-behind flushes (informative)", Kstate: fmt.Sprintf("%.4f", kFlush), Baseline: fmt.Sprintf("%.2f", sOps),
		Ratio: ratio(kFlush, sOps), Goal: "—", Met: "—"})
	rep.add(row{Measure: "Redis commands run per request, commands inside scripts included (INFO commandstats; informative)", Kstate: fmt.Sprintf("%.4f", kRan), Baseline: fmt.Sprintf("%.2f", sRan),
		Ratio: ratio(kRan, sRan), Goal: "—", Met: "—"})
	if manyKeys > 0 {
		ks := keys("many", manyKeys)
		from := map[string]int64{}
		for _, key := range ks {
			from[key] = add(t, dc.url, key).Count
		}
		dc.waitClean(t)
		before := kRedis.sent.snapshot()
		rs := attack("p2-many", counterTargets(dc.url, ks), rate, manyDur)
		dc.waitClean(t)
		sent := kRedis.sent.snapshot().minus(before)
		sSat := saturate("p2-many-sat-stateless", counterTargets(base.url, ks), workers, satDur)
		kSat := saturate("p2-many-sat-kstate", counterTargets(dc.url, ks), workers, satDur)
		for what, rs := range map[string][]*vegeta.Result{"kstate, many keys": rs, "kstate, many keys, saturation": kSat, "stateless, many keys, saturation": sSat} {
			if sum := summarize(rs); sum.failed > 0 {
				logFailures(t, what, rs)
				t.Errorf("%s: %d of %d requests failed", what, sum.failed, sum.n)
			}
		}
		checkExactlyOnce(t, "kstate, many keys", append(append([]*vegeta.Result{}, rs...), kSat...), from)
		perReq, flushes := float64(sent.total())/float64(len(rs)), float64(sent[kindFlush])/float64(len(rs))
		rep.add(row{Measure: fmt.Sprintf("Redis commands sent per request, %d keys (%d req/s, %s; informative): all / flushes only", manyKeys, rate, manyDur),
			Kstate: fmt.Sprintf("%.4f / %.4f", perReq, flushes), Baseline: fmt.Sprintf("%.2f", sOps), Ratio: ratio(perReq, sOps) + " / " + ratio(flushes, sOps), Goal: "—", Met: "—"})
		kt, st := summarize(kSat).throughput, summarize(sSat).throughput
		rep.add(row{Measure: fmt.Sprintf("throughput at saturation, %d keys (%d closed-loop workers, %s per side; informative)", manyKeys, workers, satDur),
			Kstate: fmt.Sprintf("%.0f req/s", kt), Baseline: fmt.Sprintf("%.0f req/s", st), Ratio: ratio(kt, st), Goal: "—", Met: "—"})
		rep.note("kstate, %d keys, commands sent to Redis by kind: %s", manyKeys, sent.per(len(rs)))
	}
	rep.note("kstate, 1 key, commands sent to Redis by kind: %s", k.sent.per(kSum.n))
	rep.note("stateless, commands sent to Redis by kind: %s", s.sent.per(sSum.n))
	rep.note("%s", kRedis.delayNote(t))
	rep.note("kstate open loop: %s; stateless: %s", kSum, sSum)
	rep.note("kstate saturation: %s; stateless: %s", summarize(k.sat), satSum)
	rep.note("the stateless GET+SET lost %d of the %d increments it acknowledged at saturation (concurrent requests for one key overwrite each other); kstate applied every one exactly once", lost, satSum.n-satSum.failed)
	rep.note("the stateless baseline is hit directly (no proxy in front); kstate goes through dev's key-affine proxy, the agent and the gRPC function")
	rep.write(t, m)
}

// storedCount reads the stateless baseline's count of key from Redis.
func storedCount(t *testing.T, r *redisCounter, key string) int64 {
	t.Helper()
	n, err := r.c.Get(context.Background(), stateless.KeyPrefix+key).Int64()
	if err != nil {
		t.Fatalf("reading %s%s: %v", stateless.KeyPrefix, key, err)
	}
	return n
}
