package statestore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/redis/go-redis/v9"

	"github.com/kstate-dev/kstate/internal/redistest"
)

// clusterNode is a plain client of one cluster node, and the node's id.
func clusterNode(t *testing.T, addr string) (*redis.Client, string) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { c.Close() })
	id, err := c.Do(context.Background(), "CLUSTER", "MYID").Text()
	if err != nil {
		t.Fatal(err)
	}
	return c, id
}

// leaseNode is the address of the cluster node that serves ref's lease key
// (and, by the hash tag, all of the slot's keys).
func leaseNode(t *testing.T, r *Redis, ref SlotRef) string {
	t.Helper()
	node, err := r.c.(*redis.ClusterClient).MasterForKey(context.Background(), leaseKey(ref))
	if err != nil {
		t.Fatal(err)
	}
	return node.Options().Addr
}

// startMigrating puts the hash slot of key into migration from src to dst:
// IMPORTING on dst, then MIGRATING on src, as redis-cli --cluster does.
func startMigrating(t *testing.T, src *redis.Client, srcID string, dst *redis.Client, dstID, key string) {
	t.Helper()
	ctx := context.Background()
	hs, err := src.ClusterKeySlot(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	if err := dst.Do(ctx, "CLUSTER", "SETSLOT", hs, "IMPORTING", srcID).Err(); err != nil {
		t.Fatal(err)
	}
	if err := src.Do(ctx, "CLUSTER", "SETSLOT", hs, "MIGRATING", dstID).Err(); err != nil {
		t.Fatal(err)
	}
}

// clusterStore starts a three-master Redis Cluster and a store on it.
func clusterStore(t *testing.T, opts RedisOptions) ([]*redistest.Server, *Redis) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	nodes, _ := redistest.StartCluster(t, 3)
	r, err := NewRedis(context.Background(), "redis+cluster://"+nodes[0].Addr(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return nodes, r
}

// On Redis Cluster a batch script may only touch keys its node serves. A
// batch that holds keys of other nodes (as one built from a stale slot map
// would) must still give every slot the right answer: the node refuses
// those keys with status 2, untouched, and the store retries each with the
// per-slot script, which the cluster client routes by itself.
func TestRedisClusterBatchRetriesKeysOfOtherNodes(t *testing.T) {
	_, r := clusterStore(t, RedisOptions{BatchKeys: 1000})
	ctx := context.Background()
	r.mixNodes = true

	space := redistest.UniqueSpace(t)
	const n = 48
	refs := make([]SlotRef, n)
	for i := range refs {
		refs[i] = SlotRef{Space: space, Slot: uint32(i)}
	}
	seen := map[string]bool{}
	for _, ref := range refs {
		seen[leaseNode(t, r, ref)] = true
	}
	if len(seen) < 2 {
		t.Fatalf("the %d slots live on %d node(s); the test needs a batch that spans nodes", n, len(seen))
	}

	held, err := r.Acquire(ctx, refs[5], "b", "b:1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leases, errs := r.AcquireAll(ctx, refs, "a", "a:1", time.Hour)
	for i, ref := range refs {
		if i == 5 {
			var he *HeldError
			if !errors.As(errs[i], &he) || he.Lease != held {
				t.Errorf("%s held by b: %v, want a HeldError with %+v", ref, errs[i], held)
			}
			continue
		}
		if errs[i] != nil || leases[i].Epoch != 1 || leases[i].Holder != "a" {
			t.Errorf("%s: AcquireAll = %+v, %v; want a's lease at epoch 1", ref, leases[i], errs[i])
		}
	}
	leases[5] = held
	for i := 0; i < n; i += 4 {
		if _, err := r.Flush(ctx, leases[i], []*Record{{Key: fmt.Sprint("k", i), Version: 1}}); err != nil {
			t.Fatalf("Flush to %s: %v", refs[i], err)
		}
	}
	hot, err := r.HotKeysAll(ctx, refs, 10)
	if err != nil {
		t.Fatalf("HotKeysAll: %v", err)
	}
	for i, ref := range refs {
		var want []string
		if i%4 == 0 {
			want = []string{fmt.Sprint("k", i)}
		}
		if diff := cmp.Diff(want, hot[i], cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s: hot keys (-want +got):\n%s", ref, diff)
		}
	}
	stale := leases[7]
	stale.Epoch = 9
	renewing := append([]Lease{stale}, leases...)
	renewed, errs := r.RenewAll(ctx, renewing, 2*time.Hour)
	var fe *FencedError
	if !errors.As(errs[0], &fe) || fe.Current != leases[7] {
		t.Errorf("stale lease: %v, want a FencedError naming %+v", errs[0], leases[7])
	}
	for i := 1; i < len(renewing); i++ {
		if errs[i] != nil || renewed[i].Epoch != renewing[i].Epoch || !renewed[i].Expires.After(renewing[i].Expires) {
			t.Errorf("%s: RenewAll = %+v, %v; want it renewed", renewing[i].Slot, renewed[i], errs[i])
		}
	}
	for i, err := range r.ReleaseAll(ctx, leases) {
		if err != nil {
			t.Errorf("ReleaseAll of %s: %v", refs[i], err)
		}
	}
	for _, ref := range refs {
		if cur, err := r.Current(ctx, ref); err != nil || cur.Holder != "" {
			t.Errorf("%s after ReleaseAll: %+v, %v; want it free", ref, cur, err)
		}
	}
}

// When one node of a cluster is down, the batch operations answer for the
// others: a lease granted on a live node is reported granted (not lost in
// the down node's error), and only the down node's slots fail, each with
// ErrUnavailable.
func TestRedisClusterBatchOneNodeDown(t *testing.T) {
	nodes, r := clusterStore(t, RedisOptions{})
	ctx := context.Background()
	space := redistest.UniqueSpace(t)
	const n = 48
	refs := make([]SlotRef, n)
	on := make([]string, n) // the node serving each slot's lease key
	for i := range refs {
		refs[i] = SlotRef{Space: space, Slot: uint32(i)}
		on[i] = leaseNode(t, r, refs[i])
	}
	down := nodes[1].Addr()
	if !slices.Contains(on, down) || !slices.ContainsFunc(on, func(a string) bool { return a != down }) {
		t.Fatalf("the slots' nodes %v do not include both %s and another", on, down)
	}
	nodes[1].Kill()

	opCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	leases, errs := r.AcquireAll(opCtx, refs, "a", "a:1", time.Hour)
	granted := 0
	for i, ref := range refs {
		if on[i] == down {
			if !errors.Is(errs[i], ErrUnavailable) {
				t.Errorf("%s on the down node: %v, want ErrUnavailable", ref, errs[i])
			}
			continue
		}
		if errs[i] != nil || leases[i].Epoch != 1 {
			t.Errorf("%s on a live node: %+v, %v; want a's lease at epoch 1", ref, leases[i], errs[i])
			continue
		}
		granted++
	}
	renewed, errs := r.RenewAll(opCtx, leases, time.Hour)
	for i, ref := range refs {
		if on[i] != down && (errs[i] != nil || renewed[i].Epoch != 1) {
			t.Errorf("renew %s on a live node: %+v, %v", ref, renewed[i], errs[i])
		}
	}
	t.Logf("%d of %d slots granted and renewed with one of three nodes down", granted, n)
}

// While a hash slot migrates, its source answers ASK for a key it no longer
// has, and a client that follows it runs the command on the target in
// ASKING mode. A batch declares only its first key, so a batch sent
// through the cluster client whose first key is asked away would run all
// its keys on the target in ASKING mode, where a key of another slot
// importing into that node reads as absent although its lease still lives
// on the source: a second holder at epoch 1. The batch must go to its node
// as the slot map names it, and a redirect must send each of its keys
// through its per-slot script instead.
func TestRedisClusterBatchDuringMigration(t *testing.T) {
	nodes, r := clusterStore(t, RedisOptions{})
	ctx := context.Background()

	space := redistest.UniqueSpace(t)
	const n = 48
	refs := make([]SlotRef, n)
	on := make([]string, n)
	for i := range refs {
		refs[i] = SlotRef{Space: space, Slot: uint32(i)}
		on[i] = leaseNode(t, r, refs[i])
	}
	// refs[0] is the first key of its node's batch; held is another slot of
	// that node. Both hash slots migrate from source to target.
	source := on[0]
	held := slices.Index(on[1:], source) + 1
	if held == 0 {
		t.Fatalf("no second slot on %s among %v", source, on)
	}
	var target string
	for _, node := range nodes {
		if node.Addr() != source {
			target = node.Addr()
			break
		}
	}
	if !slices.Contains(on, target) {
		t.Fatalf("the slots' nodes %v do not include the target %s", on, target)
	}
	b, err := r.Acquire(ctx, refs[held], "b", "b:1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	src, srcID := clusterNode(t, source)
	dst, dstID := clusterNode(t, target)
	for _, i := range []int{0, held} {
		startMigrating(t, src, srcID, dst, dstID, leaseKey(refs[i]))
	}

	leases, errs := r.AcquireAll(ctx, refs, "a", "a:1", time.Hour)
	for i, ref := range refs {
		if i == held {
			var he *HeldError
			if !errors.As(errs[i], &he) || he.Lease != b {
				t.Errorf("%s held by b on the source: %+v, %v; want a HeldError with %+v", ref, leases[i], errs[i], b)
			}
			continue
		}
		if errs[i] != nil || leases[i].Epoch != 1 || leases[i].Holder != "a" {
			t.Errorf("%s: AcquireAll = %+v, %v; want a's lease at epoch 1", ref, leases[i], errs[i])
		}
	}
	if cur, err := r.Current(ctx, refs[held]); err != nil || cur != b {
		t.Errorf("%s after AcquireAll: %+v, %v; want b's lease %+v", refs[held], cur, err, b)
	}

	mine := append(slices.Clone(leases[:held]), leases[held+1:]...)
	renewed, errs := r.RenewAll(ctx, append(mine, b), 2*time.Hour)
	for i, l := range append(mine, b) {
		if errs[i] != nil || renewed[i].Epoch != l.Epoch || renewed[i].Holder != l.Holder || !renewed[i].Expires.After(l.Expires) {
			t.Errorf("%s: RenewAll = %+v, %v; want it renewed", l.Slot, renewed[i], errs[i])
		}
	}
	if _, err := r.HotKeysAll(ctx, refs, 10); err != nil {
		t.Errorf("HotKeysAll: %v", err)
	}
}

// AcquireWith reads its entities inside the acquire script, so on Redis
// Cluster the grant and the reads run on one node at once, also while the
// slot migrates: with the entity already on the target and the lease still
// on the source, no node has all the keys and the call fails (TRYAGAIN,
// ErrUnavailable) without granting; once the lease moved too, the call
// runs on the target (ASK) and reads the entity there.
func TestRedisClusterAcquireWithDuringMigration(t *testing.T) {
	nodes, r := clusterStore(t, RedisOptions{})
	ctx := context.Background()
	ref := SlotRef{Space: redistest.UniqueSpace(t), Slot: 3}
	source := leaseNode(t, r, ref)
	var target *redistest.Server
	for _, n := range nodes {
		if n.Addr() != source {
			target = n
			break
		}
	}
	a, err := r.Acquire(ctx, ref, "a", "a:1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	want := &Record{Key: "k", Version: 3, State: []byte("three"), LastAccess: time.UnixMilli(1_700_000_000_000)}
	if _, err := r.Flush(ctx, a, []*Record{want}); err != nil {
		t.Fatal(err)
	}
	if err := r.Release(ctx, a); err != nil {
		t.Fatal(err)
	}

	src, srcID := clusterNode(t, source)
	dst, dstID := clusterNode(t, target.Addr())
	startMigrating(t, src, srcID, dst, dstID, leaseKey(ref))
	host, port, err := net.SplitHostPort(target.Addr())
	if err != nil {
		t.Fatal(err)
	}
	migrate := func(key string) {
		t.Helper()
		if err := src.Do(ctx, "MIGRATE", host, port, "", 0, 5000, "KEYS", key).Err(); err != nil {
			t.Fatalf("MIGRATE %s: %v", key, err)
		}
	}
	opts := AcquireOptions{Load: []string{"k"}}

	migrate(entityPrefix(ref) + "k")
	l, recs, err := r.AcquireWith(ctx, ref, "b", "b:1", time.Hour, opts)
	if !errors.Is(err, ErrUnavailable) || l.Holder != "" || recs != nil {
		t.Fatalf("AcquireWith with the keys split between nodes = %+v, %v, %v; want ErrUnavailable and no lease", l, recs, err)
	}
	if cur, err := r.Current(ctx, ref); err != nil || cur.Holder != "" || cur.Epoch != a.Epoch {
		t.Fatalf("lease after the refused AcquireWith = %+v, %v; want free at epoch %d", cur, err, a.Epoch)
	}

	migrate(leaseKey(ref))
	l, recs, err = r.AcquireWith(ctx, ref, "b", "b:1", time.Hour, opts)
	if err != nil || l.Holder != "b" || l.Epoch != a.Epoch+1 {
		t.Fatalf("AcquireWith with the keys on the target = %+v, %v; want b's lease at epoch %d", l, err, a.Epoch+1)
	}
	if diff := cmp.Diff(map[string]*Record{"k": want}, recs, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("AcquireWith records (-want +got):\n%s", diff)
	}
}
