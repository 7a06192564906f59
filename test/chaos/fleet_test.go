package chaos

import (
	"fmt"
	"maps"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kstate-dev/kstate/activator-plugin/affinity"
	"github.com/kstate-dev/kstate/internal/proctest"
	"github.com/kstate-dev/kstate/internal/redistest"
)

// slots is the slot count of every fleet: small, so slots move between a
// few agents often.
const slots = 64

// fleet is a set of agent processes of one entity space behind a router
// in the test process, as the activator plugin routes a revision.
type fleet struct {
	t      *testing.T
	redis  *redistest.Server
	space  string
	fn     *proctest.Counter
	env    map[string]string
	router *affinity.Router
	front  *httptest.Server

	mu       sync.Mutex
	members  map[string]*member // live agents
	rejected int64              // rejected writes of agents that were stopped
}

// member is one agent and the proxy it reaches Redis through.
type member struct {
	*proctest.Agent
	link   *proctest.TCPProxy
	routed bool // in the router's ready set
}

// newFleet starts n agents named <prefix>-<i> with env on top of the
// suite's defaults, and the router in front of them.
func newFleet(t *testing.T, redis *redistest.Server, n int, env map[string]string) *fleet {
	t.Helper()
	router, err := affinity.NewRouter(affinity.Options{Slots: slots})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(router.Close)
	f := &fleet{
		t:     t,
		redis: redis,
		space: redistest.UniqueSpace(t),
		fn:    proctest.StartCounter(t),
		env: map[string]string{
			"KSTATE_SLOTS":           fmt.Sprint(slots),
			"KSTATE_LEASE_TTL":       "2s",
			"KSTATE_MIN_HOLD":        "200ms",
			"KSTATE_HANDOFF_TIMEOUT": "500ms",
			"KSTATE_FLUSH_INTERVAL":  "100ms",
			"KSTATE_FLUSH_TIMEOUT":   "1s",
			"KSTATE_KEY":             "ce:partitionkey",
		},
		router:  router,
		members: map[string]*member{},
	}
	maps.Copy(f.env, env)
	f.front = httptest.NewServer(&affinity.Proxy{Router: router, ErrorLog: t.Logf})
	t.Cleanup(f.front.Close)
	for i := 0; i < n; i++ {
		f.start(fmt.Sprintf("a%d", i))
	}
	return f
}

// start starts an agent and adds it to the router once it is ready.
func (f *fleet) start(name string) *member { return f.startAgent(name, true) }

// startAgent starts an agent, routed or not (a revision without traffic).
func (f *fleet) startAgent(name string, routed bool) *member {
	f.t.Helper()
	link := proctest.StartTCPProxy(f.t, f.redis.Addr())
	a := proctest.StartAgent(f.t, proctest.AgentConfig{Pod: name, Space: f.space, StoreURL: "redis://" + link.Addr(), Function: f.fn.Addr, Env: f.env})
	m := &member{Agent: a, link: link, routed: routed}
	f.mu.Lock()
	f.members[name] = m
	f.mu.Unlock()
	f.route()
	return m
}

// route gives the router the live agents, as an endpoints update would.
func (f *fleet) route() {
	f.t.Helper()
	f.mu.Lock()
	pods := make([]affinity.Pod, 0, len(f.members))
	for name, m := range f.members {
		if m.routed {
			pods = append(pods, affinity.Pod{Name: name, Addr: m.Addr})
		}
	}
	f.mu.Unlock()
	if _, err := f.router.Update(pods); err != nil {
		f.t.Fatalf("router update: %v", err)
	}
}

func (f *fleet) member(name string) *member {
	f.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.members[name]
	if !ok {
		f.t.Fatalf("no live agent %q", name)
	}
	return m
}

func (f *fleet) names() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(maps.Keys(f.members))
}

// routeOnly sends traffic to the named agents only, as a route switching
// all traffic to a new revision does.
func (f *fleet) routeOnly(names ...string) {
	f.mu.Lock()
	for name, m := range f.members {
		m.routed = slices.Contains(names, name)
	}
	f.mu.Unlock()
	f.route()
}

// forget drops an agent from the fleet and the router.
func (f *fleet) forget(name string) *member {
	m := f.member(name)
	f.mu.Lock()
	delete(f.members, name)
	f.mu.Unlock()
	f.route()
	return m
}

// terminate is a pod deletion: the endpoint goes, SIGTERM follows, the
// agent drains. It must exit 0 within its drain timeout.
func (f *fleet) terminate(name string) {
	f.t.Helper()
	m := f.forget(name)
	rejected := m.Stats(f.t).GetRejectedWrites()
	if code, took := m.Terminate(30 * time.Second); code != 0 {
		f.t.Fatalf("agent %s exited %d after SIGTERM (%v)", name, code, took)
	}
	f.mu.Lock()
	f.rejected += rejected
	f.mu.Unlock()
}

// kill is a crash: SIGKILL, and the router learns of it afterwards, as
// endpoints lag a dead pod. It returns the oldest moment whose updates the
// agent may not have written: its flush lag, read just before the kill.
func (f *fleet) kill(name string) time.Time {
	f.t.Helper()
	m := f.member(name)
	asked := time.Now()
	st := m.Stats(f.t)
	f.mu.Lock()
	f.rejected += st.GetRejectedWrites()
	f.mu.Unlock()
	m.Kill()
	f.forget(name)
	return asked.Add(-time.Duration(st.GetFlushLagMs()+1) * time.Millisecond)
}

// flushAll makes every live agent write what it holds and reports the
// rejected writes of the fleet's whole life.
func (f *fleet) flushAll() int64 {
	f.t.Helper()
	f.mu.Lock()
	rejected, live := f.rejected, slices.Collect(maps.Values(f.members))
	f.mu.Unlock()
	for _, m := range live {
		m.Flush(f.t)
		rejected += m.Stats(f.t).GetRejectedWrites()
	}
	return rejected
}
