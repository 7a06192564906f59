package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"k8s.io/utils/clock"

	functionv1 "github.com/kstate-dev/kstate/proto/function/v1"
	"github.com/kstate-dev/kstate/statestore"
)

// counterFn is a minimal counter function: every event adds data.by
// (default 1) and replies {"count": N}; type "get" only reads.
type counterFn struct {
	calls atomic.Int64
}

type count struct {
	Count int64 `json:"count"`
}

func (c *counterFn) Handle(_ context.Context, req *functionv1.HandleRequest) (*functionv1.HandleResponse, error) {
	c.calls.Add(1)
	var st count
	if req.GetExists() {
		if err := json.Unmarshal(req.GetState(), &st); err != nil {
			return nil, fmt.Errorf("state: %w", err)
		}
	}
	action := functionv1.HandleResponse_KEEP
	if req.GetEvent().GetType() != "get" {
		by := int64(1)
		if d := req.GetEvent().GetData(); len(d) > 0 {
			var in struct{ By int64 }
			if err := json.Unmarshal(d, &in); err != nil {
				return nil, err
			}
			by = in.By
		}
		st.Count += by
		action = functionv1.HandleResponse_SET
	}
	b, _ := json.Marshal(st)
	return &functionv1.HandleResponse{
		Action: action, State: b,
		Reply: &functionv1.HandleResponse_ReplyHttp{ReplyHttp: &functionv1.HttpReply{Status: 200, ContentType: "application/json", Body: b}},
	}, nil
}

// testConfig is a config for in-process agents: explicit flushes only,
// short handoff bounds.
func testConfig(pod, space string) Config {
	c := DefaultConfig()
	c.Pod = pod
	c.AdvertiseAddr = pod + ":8080"
	c.Space = space
	c.Slots = 64
	c.FlushInterval = time.Hour // tests flush explicitly unless they say otherwise
	c.MinHold = 0
	c.HandoffTimeout = 2 * time.Second
	c.LeaseTTL = 2 * time.Second
	c.FlushTimeout = 2 * time.Second
	return c
}

func startAgent(t *testing.T, cfg Config, store statestore.Store, fn Function, opts ...Option) *Agent {
	t.Helper()
	a, err := New(cfg, store, fn, append([]Option{WithLogger(zaptest.NewLogger(t).Sugar().Named(cfg.Pod))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	a.Start(context.Background())
	t.Cleanup(a.Stop)
	waitFor(t, a.Ready)
	return a
}

func event(key, id, typ string, by int) *Invocation {
	return &Invocation{
		Key:   key,
		Event: &functionv1.CloudEvent{Id: id, Source: "test", SpecVersion: "1.0", Type: typ, Data: []byte(fmt.Sprintf(`{"by":%d}`, by))},
		Dedup: id != "",
	}
}

// replyCount reads the count out of a counter reply.
func replyCount(t testing.TB, r *Result) int64 {
	t.Helper()
	var c count
	if err := json.Unmarshal(r.Reply.GetReplyHttp().GetBody(), &c); err != nil {
		t.Fatalf("reply %q: %v", r.Reply.GetReplyHttp().GetBody(), err)
	}
	return c.Count
}

// storedCount reads a key's count from the store.
func storedCount(t testing.TB, s statestore.Store, space string, slots int, key string) int64 {
	t.Helper()
	ref := statestore.SlotRef{Space: space, Slot: slotOf(key, slots)}
	recs, err := s.Load(context.Background(), ref, []string{key})
	if err != nil {
		t.Fatal(err)
	}
	r := recs[key]
	if r == nil {
		return 0
	}
	var c count
	if err := json.Unmarshal(r.State, &c); err != nil {
		t.Fatal(err)
	}
	return c.Count
}

// flakyStore fails chosen operations with ErrUnavailable while down is set,
// as an unreachable Redis does.
type flakyStore struct {
	statestore.Store
	down atomic.Bool
}

var errDown = fmt.Errorf("injected outage: %w", statestore.ErrUnavailable)

func (f *flakyStore) Flush(ctx context.Context, l statestore.Lease, r []*statestore.Record) (statestore.FlushResult, error) {
	if f.down.Load() {
		return statestore.FlushResult{}, errDown
	}
	return f.Store.Flush(ctx, l, r)
}

func (f *flakyStore) Renew(ctx context.Context, l statestore.Lease, ttl time.Duration) (statestore.Lease, error) {
	if f.down.Load() {
		return statestore.Lease{}, errDown
	}
	return f.Store.Renew(ctx, l, ttl)
}

func (f *flakyStore) Load(ctx context.Context, s statestore.SlotRef, keys []string) (map[string]*statestore.Record, error) {
	if f.down.Load() {
		return nil, errDown
	}
	return f.Store.Load(ctx, s, keys)
}

func (f *flakyStore) LoadAll(ctx context.Context, s []statestore.SlotRef, keys [][]string) ([]map[string]*statestore.Record, error) {
	if f.down.Load() {
		return nil, errDown
	}
	return f.Store.LoadAll(ctx, s, keys)
}

func (f *flakyStore) AcquireWith(ctx context.Context, s statestore.SlotRef, holder, addr string, ttl time.Duration, opts statestore.AcquireOptions) (statestore.Lease, map[string]*statestore.Record, error) {
	if f.down.Load() {
		return statestore.Lease{}, nil, errDown
	}
	return f.Store.AcquireWith(ctx, s, holder, addr, ttl, opts)
}

func (f *flakyStore) RenewAll(ctx context.Context, leases []statestore.Lease, ttl time.Duration) ([]statestore.Lease, []error) {
	if f.down.Load() {
		errs := make([]error, len(leases))
		for i := range errs {
			errs[i] = errDown
		}
		return make([]statestore.Lease, len(leases)), errs
	}
	return f.Store.RenewAll(ctx, leases, ttl)
}

// invokeFollowing invokes on agents[i], following 421 answers to the named
// holder as the activator does, a bounded number of times.
func invokeFollowing(ctx context.Context, agents map[string]*Agent, pod string, inv *Invocation) (*Result, string, error) {
	for hop := 0; hop < 5; hop++ {
		res, err := agents[pod].Invoke(ctx, inv)
		var notOwner *NotOwnerError
		if errors.As(err, &notOwner) && notOwner.Holder != "" && agents[notOwner.Holder] != nil {
			pod = notOwner.Holder
			continue
		}
		return res, pod, err
	}
	return nil, pod, errors.New("too many 421 hops")
}

// startAgentF is startAgent for fuzz targets.
func startAgentF(f *testing.F, cfg Config) *Agent {
	s := statestore.NewMemory(clock.RealClock{})
	a, err := New(cfg, s, &counterFn{})
	if err != nil {
		f.Fatal(err)
	}
	a.Start(context.Background())
	f.Cleanup(a.Stop)
	for !a.Ready() {
		time.Sleep(time.Millisecond)
	}
	return a
}
