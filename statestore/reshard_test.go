package statestore

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kstate-dev/kstate/internal/redistest"
)

// While redis-cli --cluster reshard moves hash slots of one node to
// another, writers keep flushing new versions through the store and a
// renewer renews their leases in batches. A migration may make them wait (ErrUnavailable) but must not
// take a lease from its holder, re-grant it, fence a write of the holder's
// or lose an acknowledged version: when the reshard is done every writer
// still holds its lease at the epoch it was granted, and Redis has the last
// version each writer was told was written.
func TestRedisClusterLiveReshardUnderLoad(t *testing.T) {
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Skip("redis-cli is not on PATH")
	}
	nodes, r := clusterStore(t, RedisOptions{})
	ctx := context.Background()
	cc := r.c.(*redis.ClusterClient)
	space := redistest.UniqueSpace(t)

	// Writers on the first hash slots of one node (node 0 serves 0-5460):
	// redis-cli moves a node's slots from the lowest up, so moving 1,500
	// of them moves all the writers'.
	const writers, moving = 12, 1500
	source := nodes[0].Addr()
	var refs []SlotRef
	for i := uint32(0); len(refs) < writers; i++ {
		ref := SlotRef{Space: space, Slot: i}
		hs, err := cc.ClusterKeySlot(ctx, leaseKey(ref)).Result()
		if err != nil {
			t.Fatal(err)
		}
		if hs < moving-100 {
			refs = append(refs, ref)
		}
	}
	_, srcID := clusterNode(t, source)
	_, dstID := clusterNode(t, nodes[1].Addr())

	type writer struct {
		lease       Lease
		acked       uint64 // last version Flush acknowledged
		unavailable int
		err         error
	}
	ws := make([]*writer, writers)
	for i, ref := range refs {
		l, err := r.Acquire(ctx, ref, fmt.Sprintf("w%d", i), "", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		ws[i] = &writer{lease: l}
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("entity-%d", i)
			for v := uint64(1); ; {
				select {
				case <-stop:
					return
				default:
				}
				rec := &Record{Key: key, Version: v, State: []byte(strconv.FormatUint(v, 10)), LastAccess: time.Now()}
				_, err := r.Flush(ctx, w.lease, []*Record{rec})
				if err == nil {
					w.acked = v
					v++
					continue
				}
				if !errors.Is(err, ErrUnavailable) {
					w.err = fmt.Errorf("flush of version %d: %w", v, err)
					return
				}
				w.unavailable++
				time.Sleep(5 * time.Millisecond) // a migration in progress: try again
			}
		}()
	}

	// One renewer renews every lease in batches (a batch script per node,
	// a per-slot retry for a slot that moved), as an agent's renew loop
	// does; renewal keeps the epoch, so the writers' leases stay valid.
	leases := make([]Lease, writers)
	for i, w := range ws {
		leases[i] = w.lease
	}
	var renewErr error
	renewals, renewUnavailable := 0, 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			_, errs := r.RenewAll(ctx, leases, time.Minute)
			renewals++
			for i, err := range errs {
				switch {
				case err == nil:
				case errors.Is(err, ErrUnavailable):
					renewUnavailable++
				default:
					renewErr = fmt.Errorf("renewal %d of %s: %w", renewals, leases[i].Slot, err)
					return
				}
			}
		}
	}()

	start := time.Now()
	out, err := exec.Command("redis-cli", "--cluster", "reshard", source,
		"--cluster-from", srcID, "--cluster-to", dstID, "--cluster-slots", strconv.Itoa(moving),
		"--cluster-yes", "--cluster-pipeline", "10").CombinedOutput()
	took := time.Since(start)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("redis-cli --cluster reshard: %v\n%s", err, tail(out, 2000))
	}

	moved := 0
	for _, ref := range refs {
		if leaseNode(t, r, ref) != source {
			moved++
		}
	}
	if moved != writers {
		t.Fatalf("%d of %d writers' slots moved off %s; the reshard did not move them", moved, writers, source)
	}
	if renewErr != nil {
		t.Error(renewErr)
	}
	var unavailable, versions int
	for i, w := range ws {
		unavailable += w.unavailable
		versions += int(w.acked)
		if w.err != nil {
			t.Errorf("writer %d: %v", i, w.err)
			continue
		}
		cur, err := r.Current(ctx, refs[i])
		if err != nil || cur.Holder != w.lease.Holder || cur.Epoch != w.lease.Epoch {
			t.Errorf("writer %d: lease after the reshard %+v, %v; want still %s at epoch %d", i, cur, err, w.lease.Holder, w.lease.Epoch)
		}
		key := fmt.Sprintf("entity-%d", i)
		got, err := r.Load(ctx, refs[i], []string{key})
		if err != nil || got[key] == nil || got[key].Version != w.acked {
			t.Errorf("writer %d: %s after the reshard = %+v, %v; want the acknowledged version %d", i, key, got[key], err, w.acked)
		}
	}
	t.Logf("reshard of %d hash slots %s -> %s took %v; meanwhile %d writers flushed %d versions (%d flushes answered unavailable) and %d batch renewals ran (%d leases answered unavailable)",
		moving, source, nodes[1].Addr(), took.Round(time.Millisecond), writers, versions, unavailable, renewals, renewUnavailable)
	if versions == 0 {
		t.Error("no version was written during the reshard: it did not run under load")
	}
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
