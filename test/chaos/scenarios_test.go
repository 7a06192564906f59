package chaos

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/kstate-dev/kstate/internal/proctest"
	"github.com/kstate-dev/kstate/internal/redistest"
)

// long reports whether the long versions run (KSTATE_CHAOS_LONG=1).
func long() bool { return os.Getenv("KSTATE_CHAOS_LONG") == "1" }

// steps is how many acknowledged increments make one step of a scenario:
// the load makes this much progress before and after each disruption.
func steps() int64 {
	if long() {
		return 5000
	}
	return 150
}

// run is one scenario in progress.
type run struct {
	t     *testing.T
	redis *redistest.Server
	f     *fleet
	l     *load
	w     *writers
}

type scenario struct {
	name    string
	agents  int
	env     map[string]string
	workers int
	keys    int
	pace    time.Duration // between a worker's events: a trickle
	// redeliverEvery sends every n-th event twice (0: never).
	redeliverEvery int
	disrupt        func(r *run)
	// loss judges the loss of a key (nil: nothing acknowledged may be
	// lost); it is built after disrupt ran.
	loss func(r *run) func(string, int64, []ack) error
	// after runs once the checker passed.
	after func(r *run, v verdict)
}

var (
	asyncDurability = map[string]string{"KSTATE_DURABILITY": "async"}
	syncDurability  = map[string]string{"KSTATE_DURABILITY": "sync"}
)

func TestChaos(t *testing.T) {
	var unflushedSince, killedAt, cutAt time.Time
	const leaseTTL = 2 * time.Second // KSTATE_LEASE_TTL
	outage := 3 * time.Second
	if long() {
		outage = 30 * time.Second
	}
	scenarios := []scenario{{
		name:   "kill -9 of an agent, sync durability: nothing lost",
		agents: 3, env: syncDurability,
		disrupt: func(r *run) { r.f.kill("a1") },
	}, {
		name:   "kill -9 of an agent, async durability: loss bounded by the flush lag",
		agents: 3, env: asyncDurability,
		disrupt: func(r *run) {
			unflushedSince = r.f.kill("a1")
			killedAt = time.Now()
		},
		// Lost may be only what a1 acknowledged after its oldest unflushed
		// update (its flush lag, read just before the kill).
		loss: func(r *run) func(string, int64, []ack) error { return lostBetween(unflushedSince, killedAt) },
		after: func(r *run, v verdict) {
			r.t.Logf("async kill -9: %d of %d acknowledged increments lost (%.3f%%); the agent's flush lag at the kill was %v (KSTATE_FLUSH_INTERVAL 100ms)",
				v.lost, v.acked, 100*float64(v.lost)/float64(max(v.acked, 1)), killedAt.Sub(unflushedSince).Round(time.Millisecond))
		},
	}, {
		name:    "SIGTERM of an agent",
		agents:  3,
		disrupt: func(r *run) { r.f.terminate("a1") },
	}, {
		name:   "Redis killed and restarted from its AOF",
		agents: 2,
		disrupt: func(r *run) {
			r.redis.Kill()
			r.redis.Restart()
		},
	}, {
		name:   fmt.Sprintf("Redis down for %v: back-pressure, then nothing lost", outage),
		agents: 2,
		env:    map[string]string{"KSTATE_MAX_DIRTY_BYTES": "4096"},
		disrupt: func(r *run) {
			r.redis.Stop()
			before := r.l.retries.Load()
			time.Sleep(outage) // the outage's length, not a wait for a condition
			r.redis.Restart()
			if r.l.retries.Load() == before {
				r.t.Errorf("no attempt was refused during a %v outage with KSTATE_MAX_DIRTY_BYTES=4096: no back-pressure", outage)
			}
		},
	}, {
		name:   "slots moved under load: scale 2 → 3 → 2",
		agents: 2,
		disrupt: func(r *run) {
			r.f.start("a2")
			r.l.waitAcked(steps())
			r.f.terminate("a0")
		},
	}, {
		name:   "rollout to a new revision",
		agents: 2,
		disrupt: func(r *run) {
			r.f.startAgent("b0", false)
			r.f.startAgent("b1", false)
			r.f.routeOnly("b0", "b1")
			r.l.waitAcked(steps())
			r.f.terminate("a0")
			r.f.terminate("a1")
		},
	}, {
		name:    "scale to zero under a trickle, and back",
		agents:  2,
		workers: 2, pace: 5 * time.Millisecond,
		disrupt: func(r *run) {
			r.f.terminate("a0")
			r.f.terminate("a1")
			proctest.WaitFor(r.t, giveUp, "a request waiting for a pod", func() bool { return r.f.router.Waiting() > 0 })
			r.f.start("z0")
		},
	}, {
		name:   "CloudEvents redelivered with the same source and id, while a slot moves",
		agents: 2, redeliverEvery: 3,
		disrupt: func(r *run) {
			r.f.start("a2")
		},
		after: func(r *run, v verdict) {
			if r.l.redelivered.Load() == 0 {
				r.t.Error("no event was redelivered")
			}
			r.t.Logf("%d events redelivered, none applied twice", r.l.redelivered.Load())
		},
	}, {
		name:   "partition between an agent and Redis, longer than the lease",
		agents: 2, env: asyncDurability,
		disrupt: func(r *run) {
			m := r.f.member("a0")
			m.link.Partition()
			time.Sleep(3 * time.Second) // the partition's length (lease TTL 2s)
			m.link.Heal()
		},
	}, {
		name:   "partition, and the slots move to another agent meanwhile (async): loss bounded, stale writes fenced",
		agents: 2, env: asyncDurability,
		disrupt: func(r *run) {
			m := r.f.member("a0")
			cutAt = time.Now()
			unflushedSince = cutAt.Add(-time.Duration(m.Stats(r.t).GetFlushLagMs()+1) * time.Millisecond)
			m.link.Partition()
			r.f.routeOnly("a1")
			r.l.waitAcked(steps())
			m.link.Heal()
			// a0's next flush meets the fence: its dirty entities are
			// dropped, counted as rejected writes.
			proctest.WaitFor(r.t, giveUp, "a0 to have nothing dirty", func() bool { return m.Stats(r.t).GetDirtyEntities() == 0 })
			r.f.terminate("a0")
		},
		// a0 acknowledges what it had unflushed at the cut, and what a1
		// sends it (421) until a0's lease expires and a1 takes the slot.
		loss: func(r *run) func(string, int64, []ack) error {
			return lostBetween(unflushedSince, cutAt.Add(leaseTTL+time.Second))
		},
		after: func(r *run, v verdict) {
			r.t.Logf("async partition with takeover: %d of %d acknowledged increments lost, %d stale writes rejected by the fence", v.lost, v.acked, v.rejected)
			if v.lost > 0 && v.rejected == 0 {
				r.t.Errorf("%d increments lost but no write was rejected: the loss did not come from the fence", v.lost)
			}
		},
	}, {
		name:   "partition, and the slots move to another agent meanwhile (sync)",
		agents: 2, env: syncDurability,
		disrupt: func(r *run) {
			m := r.f.member("a0")
			m.link.Partition()
			r.f.routeOnly("a1") // a1 takes a0's slots once their leases expire
			r.l.waitAcked(steps())
			m.link.Heal()
			r.f.terminate("a0")
		},
	}}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			redis := redistest.Start(t)
			r := &run{t: t, redis: redis, w: watchWriters(t, redis.Addr())}
			r.f = newFleet(t, redis, sc.agents, sc.env)
			workers, keys := sc.workers, sc.keys
			if workers == 0 {
				workers = 8
			}
			if keys == 0 {
				keys = 40
			}
			r.l = startLoad(t, r.f.front.URL, workers, keys, sc.pace, sc.redeliverEvery)
			r.l.waitAcked(steps())
			sc.disrupt(r)
			r.l.waitAcked(steps())
			var loss func(string, int64, []ack) error
			if sc.loss != nil {
				loss = sc.loss(r)
			}
			v := check(t, r.f, r.l, r.w, loss)
			if sc.after != nil && !t.Failed() {
				sc.after(r, v)
			}
		})
	}
}
