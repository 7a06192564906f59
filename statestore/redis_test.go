package statestore_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/redis/go-redis/v9"

	"github.com/kstate-dev/kstate/internal/redistest"
	"github.com/kstate-dev/kstate/statestore"
	"github.com/kstate-dev/kstate/statestore/storetest"
)

// redisHarness connects each test to one redis-server. Expiry is judged by
// Redis TIME, so Advance really waits.
type redisHarness struct{ url string }

func (h redisHarness) New(t *testing.T) statestore.Store {
	return newRedis(t, h.url, statestore.RedisOptions{HotSetSize: storetest.HotSetSize, BatchKeys: storetest.BatchKeys})
}

func (redisHarness) Advance(_ *testing.T, d time.Duration) { time.Sleep(d) }

func newRedis(t testing.TB, url string, opts statestore.RedisOptions) *statestore.Redis {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := statestore.NewRedis(ctx, url, opts)
	if err != nil {
		t.Fatalf("NewRedis(%s): %v", statestore.Redacted(url), err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func TestRedisContract(t *testing.T) {
	storetest.Run(t, redisHarness{url: redistest.Shared(t)})
}

// TestRedisClusterContract runs the suite on a three-master Redis Cluster:
// every per-slot script must keep to one hash tag, and pipelines, scripts
// and pub/sub must work through the cluster client.
func TestRedisClusterContract(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	nodes, _ := redistest.StartCluster(t, 3)
	// One seed node: the client must still be a cluster client (the
	// scheme says so; redis.NewUniversalClient would pick a single node).
	storetest.Run(t, redisHarness{url: "redis+cluster://" + nodes[0].Addr()})
}

var bg = context.Background()

// within runs op and fails the test if it has not returned after limit: a
// guard against hanging, not a performance check.
func within(t *testing.T, limit time.Duration, name string, op func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- op() }()
	select {
	case err := <-done:
		return err
	case <-time.After(limit):
		t.Fatalf("%s did not return within %v", name, limit)
		return nil
	}
}

// waitUp polls Ping until the store answers again after a restart.
func waitUp(t *testing.T, s statestore.Store) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := s.Ping(bg)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("store did not answer within 20s after restart: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRedisKeyLayout(t *testing.T) {
	ctx := bg
	r := newRedis(t, redistest.Shared(t), statestore.RedisOptions{})
	space := redistest.UniqueSpace(t)
	slot := statestore.SlotRef{Space: space, Slot: 7}
	l, err := r.Acquire(ctx, slot, "pod-a", "10.0.0.1:8080", time.Hour)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	at := time.UnixMilli(1_700_000_000_123)
	dedup := []statestore.DedupEntry{{Source: "/s", ID: "1"}}
	if _, err := r.Flush(ctx, l, []*statestore.Record{{Key: "cart:42", Version: 9, State: []byte("st"), Dedup: dedup, LastAccess: at}}); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if _, _, err := r.EnsureMarker(ctx, space); err != nil {
		t.Fatalf("EnsureMarker: %v", err)
	}

	c := r.Client()
	tag := "{" + space + "/7}"
	entity, err := c.HGetAll(ctx, "kstate:"+tag+":e:cart:42").Result()
	if err != nil {
		t.Fatalf("HGETALL entity: %v", err)
	}
	want := map[string]string{"s": "st", "v": "9", "d": `[{"s":"/s","i":"1"}]`, "a": "1700000000123"}
	if diff := cmp.Diff(want, entity); diff != "" {
		t.Errorf("entity hash (-want +got):\n%s", diff)
	}
	lease, err := c.HGetAll(ctx, "kstate:"+tag+":lease").Result()
	if err != nil {
		t.Fatalf("HGETALL lease: %v", err)
	}
	wantLease := map[string]string{
		"holder": "pod-a", "addr": "10.0.0.1:8080", "epoch": "1",
		"acq": strconv.FormatInt(l.Acquired.UnixMilli(), 10), "exp": strconv.FormatInt(l.Expires.UnixMilli(), 10),
	}
	if diff := cmp.Diff(wantLease, lease); diff != "" {
		t.Errorf("lease hash (-want +got):\n%s", diff)
	}
	if score, err := c.ZScore(ctx, "kstate:"+tag+":hot", "cart:42").Result(); err != nil || score != 1700000000123 {
		t.Errorf("ZSCORE hot cart:42 = %v, %v; want the last access in ms", score, err)
	}
	if err := c.Get(ctx, "kstate:{"+space+"}:marker").Err(); err != nil {
		t.Errorf("GET marker: %v", err)
	}
	keys, err := c.Keys(ctx, "kstate:{"+space+"*").Result()
	if err != nil {
		t.Fatalf("KEYS: %v", err)
	}
	sort.Strings(keys)
	wantKeys := []string{"kstate:" + tag + ":e:cart:42", "kstate:" + tag + ":hot", "kstate:" + tag + ":lease", "kstate:{" + space + "}:marker"}
	if diff := cmp.Diff(wantKeys, keys); diff != "" {
		t.Errorf("keys of the space (-want +got):\n%s", diff)
	}
}

// evalCalls returns how many EVALSHA and EVAL calls the server has run.
func evalCalls(t *testing.T, c redis.UniversalClient) (evalsha, eval int) {
	t.Helper()
	info, err := c.Info(bg, "commandstats").Result()
	if err != nil {
		t.Fatalf("INFO commandstats: %v", err)
	}
	for _, line := range strings.Split(info, "\n") {
		for name, dst := range map[string]*int{"cmdstat_evalsha:": &evalsha, "cmdstat_eval:": &eval} {
			if rest, ok := strings.CutPrefix(line, name+"calls="); ok {
				n, _ := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
				*dst = n
			}
		}
	}
	return evalsha, eval
}

func TestRedisFlushChunks(t *testing.T) {
	srv := redistest.Start(t)
	r := newRedis(t, srv.URL(), statestore.RedisOptions{ChunkRecords: 3, ChunkBytes: 4000})
	slot := statestore.SlotRef{Space: redistest.UniqueSpace(t), Slot: 1}
	l, err := r.Acquire(bg, slot, "a", "", time.Hour)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	if _, err := r.Flush(bg, l, []*statestore.Record{{Key: "k8", Version: 100}}); err != nil {
		t.Fatalf("Flush: %v", err)
	}

	tests := []struct {
		name      string
		records   func() []*statestore.Record
		wantCalls int
	}{{
		name: "by record count",
		records: func() []*statestore.Record {
			var recs []*statestore.Record
			for i := range 10 {
				recs = append(recs, &statestore.Record{Key: fmt.Sprintf("k%d", i), Version: 1, State: []byte("x")})
			}
			return recs
		},
		wantCalls: 4, // 3+3+3+1
	}, {
		name: "by bytes",
		records: func() []*statestore.Record {
			var recs []*statestore.Record
			for i := range 5 {
				recs = append(recs, &statestore.Record{Key: fmt.Sprintf("k%d", i), Version: 2, State: make([]byte, 1500)})
			}
			return recs
		},
		wantCalls: 3, // 2+2+1
	}, {
		name: "a record larger than ChunkBytes goes alone",
		records: func() []*statestore.Record {
			return []*statestore.Record{{Key: "small", Version: 1}, {Key: "huge", Version: 1, State: make([]byte, 10000)}, {Key: "small2", Version: 1}}
		},
		wantCalls: 3,
	}}
	for _, tc := range tests {
		recs := tc.records()
		before, _ := evalCalls(t, r.Client())
		res, err := r.Flush(bg, l, recs)
		if err != nil {
			t.Fatalf("%s: Flush: %v", tc.name, err)
		}
		after, _ := evalCalls(t, r.Client())
		if got := after - before; got != tc.wantCalls {
			t.Errorf("%s: %d script calls, want %d", tc.name, got, tc.wantCalls)
		}
		// k8 (stored at version 100) sits in a later chunk of the first case.
		var wantRejected []string
		if tc.name == "by record count" {
			wantRejected = []string{"k8"}
		}
		if diff := cmp.Diff(wantRejected, res.Rejected); diff != "" {
			t.Errorf("%s: Rejected (-want +got):\n%s", tc.name, diff)
		}
		keys := make([]string, len(recs))
		for i, rec := range recs {
			keys[i] = rec.Key
		}
		got, err := r.Load(bg, slot, keys)
		if err != nil {
			t.Fatalf("%s: Load: %v", tc.name, err)
		}
		if len(got) != len(recs) {
			t.Errorf("%s: loaded %d of %d records", tc.name, len(got), len(recs))
		}
	}
}

// The *All methods cost one script call per BatchKeys slots, whatever the
// slot count: a renewal round of 1,000 leases is 2 commands, not 1,000.
// On Redis Cluster they cost one call per node and BatchKeys slots.
func TestRedisBatchCalls(t *testing.T) {
	const slots = 1000
	tests := []struct {
		name      string
		cluster   bool
		wantCalls int
	}{
		{name: "single node", wantCalls: 2}, // 512 + 488
		{name: "three-node cluster", cluster: true, wantCalls: 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var servers []*redistest.Server
			url := ""
			if tc.cluster {
				if testing.Short() {
					t.Skip("starts a three-node cluster")
				}
				servers, _ = redistest.StartCluster(t, 3)
				url = "redis+cluster://" + servers[0].Addr()
			} else {
				servers = []*redistest.Server{redistest.Start(t)}
				url = servers[0].URL()
			}
			r := newRedis(t, url, statestore.RedisOptions{BatchKeys: 512})
			calls := func() int {
				n := 0
				for _, s := range servers {
					c := redis.NewClient(&redis.Options{Addr: s.Addr()})
					evalsha, eval := evalCalls(t, c)
					c.Close()
					n += evalsha + eval
				}
				return n
			}
			space := redistest.UniqueSpace(t)
			refs := make([]statestore.SlotRef, slots)
			for i := range refs {
				refs[i] = statestore.SlotRef{Space: space, Slot: uint32(i)}
			}
			var leases []statestore.Lease
			ops := []struct {
				name string
				run  func() error
			}{
				{"AcquireAll", func() error {
					var errs []error
					leases, errs = r.AcquireAll(bg, refs, "a", "a:1", time.Hour)
					return errors.Join(errs...)
				}},
				{"RenewAll", func() error { _, errs := r.RenewAll(bg, leases, time.Hour); return errors.Join(errs...) }},
				{"HotKeysAll", func() error { _, err := r.HotKeysAll(bg, refs, 10); return err }},
				{"ReleaseAll", func() error { return errors.Join(r.ReleaseAll(bg, leases)...) }},
			}
			for _, op := range ops {
				before := calls()
				if err := op.run(); err != nil {
					t.Fatalf("%s: %v", op.name, err)
				}
				if got := calls() - before; got != tc.wantCalls {
					t.Errorf("%s of %d slots: %d script calls, want %d", op.name, slots, got, tc.wantCalls)
				}
			}
		})
	}
}

func TestRedisScriptCacheFlushed(t *testing.T) {
	srv := redistest.Start(t)
	r := newRedis(t, srv.URL(), statestore.RedisOptions{ChunkRecords: 2})
	slot := statestore.SlotRef{Space: redistest.UniqueSpace(t), Slot: 1}
	// As after a restart or failover: the scripts loaded by NewRedis are gone.
	if err := r.Client().ScriptFlush(bg).Err(); err != nil {
		t.Fatalf("SCRIPT FLUSH: %v", err)
	}
	l, err := r.Acquire(bg, slot, "a", "", time.Hour)
	if err != nil {
		t.Fatalf("Acquire after SCRIPT FLUSH: %v", err)
	}
	if err := r.Client().ScriptFlush(bg).Err(); err != nil {
		t.Fatalf("SCRIPT FLUSH: %v", err)
	}
	recs := []*statestore.Record{{Key: "a", Version: 1}, {Key: "b", Version: 1}, {Key: "c", Version: 1}}
	if _, err := r.Flush(bg, l, recs); err != nil {
		t.Fatalf("Flush after SCRIPT FLUSH: %v", err)
	}
	if got, err := r.Load(bg, slot, []string{"a", "b", "c"}); err != nil || len(got) != 3 {
		t.Fatalf("Load = %d records, %v; want 3", len(got), err)
	}
	if err := r.Client().ScriptFlush(bg).Err(); err != nil {
		t.Fatalf("SCRIPT FLUSH: %v", err)
	}
	// Our own lease again, with the records read inside the script.
	if _, got, err := r.AcquireWith(bg, slot, "a", "", time.Hour, statestore.AcquireOptions{Load: []string{"a", "b", "c"}}); err != nil || len(got) != 3 {
		t.Fatalf("AcquireWith after SCRIPT FLUSH = %d records, %v; want 3", len(got), err)
	}
	if _, eval := evalCalls(t, r.Client()); eval == 0 {
		t.Error("no EVAL fallback was run, so NOSCRIPT was not exercised")
	}
}

func TestRedisKillRestart(t *testing.T) {
	srv := redistest.Start(t)
	// Short timeouts, so the operations below fail fast while Redis is down.
	r := newRedis(t, srv.URL()+"?dial_timeout=500ms&read_timeout=1s", statestore.RedisOptions{})
	space := redistest.UniqueSpace(t)
	slot := statestore.SlotRef{Space: space, Slot: 3}
	l, err := r.Acquire(bg, slot, "a", "a:1", time.Hour)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	l, err = r.Acquire(bg, slot, "a", "a:1", time.Hour) // epoch 2
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	want := map[string]*statestore.Record{}
	var recs []*statestore.Record
	for i := range 100 {
		rec := &statestore.Record{Key: fmt.Sprintf("k%d", i), Version: uint64(i + 1), State: []byte(fmt.Sprint(i)), LastAccess: time.UnixMilli(1_700_000_000_000 + int64(i))}
		recs = append(recs, rec)
		want[rec.Key] = rec
	}
	if _, err := r.Flush(bg, l, recs); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	id, _, err := r.EnsureMarker(bg, space)
	if err != nil {
		t.Fatalf("EnsureMarker: %v", err)
	}

	srv.Kill()
	ops := map[string]func(context.Context) error{
		"Ping":    func(ctx context.Context) error { return r.Ping(ctx) },
		"Load":    func(ctx context.Context) error { _, err := r.Load(ctx, slot, []string{"k1"}); return err },
		"Flush":   func(ctx context.Context) error { _, err := r.Flush(ctx, l, recs[:1]); return err },
		"HotKeys": func(ctx context.Context) error { _, err := r.HotKeys(ctx, slot, 1); return err },
		"Acquire": func(ctx context.Context) error { _, err := r.Acquire(ctx, slot, "a", "", time.Hour); return err },
		"Renew":   func(ctx context.Context) error { _, err := r.Renew(ctx, l, time.Hour); return err },
		"Release": func(ctx context.Context) error { return r.Release(ctx, l) },
		"Current": func(ctx context.Context) error { _, err := r.Current(ctx, slot); return err },
		"RequestHandoff": func(ctx context.Context) error {
			return r.RequestHandoff(ctx, statestore.HandoffRequest{Slot: slot}, "a")
		},
		"WatchHandoffs": func(ctx context.Context) error { _, err := r.WatchHandoffs(ctx, "a"); return err },
		"EnsureMarker":  func(ctx context.Context) error { _, _, err := r.EnsureMarker(ctx, space); return err },
		"CheckMarker":   func(ctx context.Context) error { return r.CheckMarker(ctx, space, id) },
	}
	for name, op := range ops {
		// Without a deadline: bounded by the dial timeout and retries.
		start := time.Now()
		err := within(t, 30*time.Second, name, func() error { return op(bg) })
		t.Logf("%s failed after %v: %v", name, time.Since(start).Round(time.Millisecond), err)
		if !errors.Is(err, statestore.ErrUnavailable) {
			t.Errorf("%s while Redis is down: err = %v, want ErrUnavailable", name, err)
		}
		// With a deadline: bounded by it, and the cause is kept.
		ctx, cancel := context.WithTimeout(bg, 50*time.Millisecond)
		err = within(t, 30*time.Second, name, func() error { return op(ctx) })
		cancel()
		if !errors.Is(err, statestore.ErrUnavailable) {
			t.Errorf("%s with a deadline while Redis is down: err = %v, want ErrUnavailable", name, err)
		}
	}

	srv.Restart()
	waitUp(t, r)
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	got, err := r.Load(bg, slot, keys)
	if err != nil {
		t.Fatalf("Load after restart: %v", err)
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("records after Kill+Restart (-want +got):\n%s", diff)
	}
	cur, err := r.Current(bg, slot)
	if err != nil {
		t.Fatalf("Current after restart: %v", err)
	}
	if diff := cmp.Diff(l, cur); diff != "" {
		t.Errorf("lease after Kill+Restart (-want +got):\n%s", diff)
	}
	if err := r.CheckMarker(bg, space, id); err != nil {
		t.Errorf("CheckMarker after Kill+Restart: %v", err)
	}
	// The scripts are gone from the restarted server; the store reloads them.
	next, err := r.Acquire(bg, slot, "a", "a:1", time.Hour)
	if err != nil || next.Epoch != 3 {
		t.Fatalf("Acquire after restart = epoch %d, %v; want epoch 3", next.Epoch, err)
	}
	if _, err := r.Flush(bg, l, recs[:1]); !errors.Is(err, statestore.ErrFenced) {
		t.Errorf("Flush with the pre-restart epoch: %v, want ErrFenced", err)
	}
	if _, err := r.Flush(bg, next, recs[:1]); err != nil {
		t.Errorf("Flush after restart: %v", err)
	}
}

func TestRedisWipeIsDetected(t *testing.T) {
	srv := redistest.Start(t)
	r := newRedis(t, srv.URL(), statestore.RedisOptions{})
	space := redistest.UniqueSpace(t)
	id, created, err := r.EnsureMarker(bg, space)
	if err != nil || !created {
		t.Fatalf("EnsureMarker = %v, %v", created, err)
	}
	srv.Wipe()
	waitUp(t, r)
	if err := r.CheckMarker(bg, space, id); !errors.Is(err, statestore.ErrStoreReset) {
		t.Fatalf("CheckMarker after Wipe: %v, want ErrStoreReset", err)
	}
}

func TestRedisHandoffWatchSurvivesRestart(t *testing.T) {
	srv := redistest.Start(t)
	r := newRedis(t, srv.URL(), statestore.RedisOptions{})
	holder := redistest.UniqueSpace(t)
	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	ch, err := r.WatchHandoffs(ctx, holder)
	if err != nil {
		t.Fatalf("WatchHandoffs: %v", err)
	}
	srv.Kill()
	srv.Restart()
	waitUp(t, r)
	want := statestore.HandoffRequest{Slot: statestore.SlotRef{Space: "ns/svc", Slot: 4}, Asker: "b"}
	deadline := time.After(20 * time.Second)
	for {
		// The asker repeats: requests sent before the watch resubscribed are lost.
		if err := r.RequestHandoff(bg, want, holder); err != nil {
			t.Logf("RequestHandoff: %v", err)
		}
		select {
		case got, ok := <-ch:
			if !ok {
				t.Fatal("watch channel closed by a restart")
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("handoff (-want +got):\n%s", diff)
			}
			return
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatal("no handoff delivered within 20s of the restart")
		}
	}
}

func TestNewRedisErrors(t *testing.T) {
	// A listener that accepts and never answers: only the deadline ends it.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := closed.Addr().String()
	closed.Close()

	tests := []struct {
		name            string
		url             string
		wantUnavailable bool
		want            string
	}{
		{"bad URL", "http://h", false, "scheme must be one of"},
		{"connection refused", "redis://:hunter2@" + refused + "?dial_timeout=500ms", true, "connect to redis://:xxxxx@" + refused},
		{"server never answers", "redis://" + silent.Addr().String(), true, "context deadline exceeded"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(bg, 300*time.Millisecond)
			defer cancel()
			err := within(t, 30*time.Second, "NewRedis", func() error {
				r, err := statestore.NewRedis(ctx, tc.url, statestore.RedisOptions{})
				if err == nil {
					r.Close()
				}
				return err
			})
			if err == nil {
				t.Fatal("NewRedis succeeded")
			}
			if got := errors.Is(err, statestore.ErrUnavailable); got != tc.wantUnavailable {
				t.Errorf("errors.Is(%v, ErrUnavailable) = %v, want %v", err, got, tc.wantUnavailable)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
}
