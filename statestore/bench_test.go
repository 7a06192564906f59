package statestore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kstate-dev/kstate/internal/redistest"
)

// The benchmarks compare Flush with the floor it is built on: the same
// flush script, with the same arguments, sent by a bare EVALSHA in a
// pipeline. Their records/s ratio is Flush's overhead (goal: >= 0.7). Each
// runs with appendfsync always (production) and everysec (so fsync does not
// hide the client's own cost).
//
//	go test -run '^$' -bench 'Flush|BareEvalsha|Load' -benchtime 3s ./statestore/

const (
	benchBatch = 256
	benchState = 100
)

var fsyncModes = []string{"always", "everysec"}

func benchRecords() []*Record {
	recs := make([]*Record, benchBatch)
	for i := range recs {
		recs[i] = &Record{
			Key:        fmt.Sprintf("entity-%04d", i),
			Version:    1,
			State:      make([]byte, benchState),
			LastAccess: time.UnixMilli(1_700_000_000_000 + int64(i)),
		}
	}
	return recs
}

func benchStore(b *testing.B, fsync string) (*Redis, Lease) {
	b.Helper()
	srv := redistest.Start(b, redistest.WithArgs("--appendfsync", fsync))
	ctx := context.Background()
	r, err := NewRedis(ctx, srv.URL(), RedisOptions{})
	if err != nil {
		b.Fatalf("NewRedis: %v", err)
	}
	b.Cleanup(func() { r.Close() })
	l, err := r.Acquire(ctx, SlotRef{Space: "bench/svc", Slot: 1}, "bench", "", time.Hour)
	if err != nil {
		b.Fatalf("Acquire: %v", err)
	}
	return r, l
}

func reportRecords(b *testing.B, perOp int) {
	b.ReportMetric(float64(perOp*b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkFlush: Flush of 256 records of 100 bytes to one slot. The same
// records every time: an equal version is rewritten, so each op does the
// full write.
func BenchmarkFlush(b *testing.B) {
	for _, fsync := range fsyncModes {
		b.Run("fsync="+fsync, func(b *testing.B) {
			r, l := benchStore(b, fsync)
			recs := benchRecords()
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := r.Flush(ctx, l, recs); err != nil {
					b.Fatal(err)
				}
			}
			reportRecords(b, benchBatch)
		})
	}
}

// BenchmarkBareEvalsha: the flush script run with arguments built once,
// through the same go-redis pipeline Flush uses, with no decoding of the
// reply. The floor for BenchmarkFlush.
func BenchmarkBareEvalsha(b *testing.B) {
	for _, fsync := range fsyncModes {
		b.Run("fsync="+fsync, func(b *testing.B) {
			r, l := benchStore(b, fsync)
			fc := r.flushCall(l, benchRecords())
			sha := flushScript.Hash()
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				cmds, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
					p.EvalSha(ctx, sha, fc.keys, fc.args...)
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
				if v, _ := cmds[0].(*redis.Cmd).Slice(); len(v) != 1 {
					b.Fatalf("script reply %v, want {1} (accepted, nothing rejected)", v)
				}
			}
			reportRecords(b, benchBatch)
		})
	}
}

// BenchmarkLoad: Load of 256 stored records of 100 bytes, one pipeline.
func BenchmarkLoad(b *testing.B) {
	r, l := benchStore(b, "always")
	recs := benchRecords()
	ctx := context.Background()
	if _, err := r.Flush(ctx, l, recs); err != nil {
		b.Fatal(err)
	}
	keys := make([]string, len(recs))
	for i, rec := range recs {
		keys[i] = rec.Key
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		got, err := r.Load(ctx, l.Slot, keys)
		if err != nil {
			b.Fatal(err)
		}
		if len(got) != len(keys) {
			b.Fatalf("loaded %d of %d", len(got), len(keys))
		}
	}
	reportRecords(b, benchBatch)
}

// BenchmarkFlushVsBare alternates one Flush and one bare EVALSHA of the same
// records against the same Redis in every iteration, so load from other
// processes hits both alike, and reports both rates and their ratio.
func BenchmarkFlushVsBare(b *testing.B) {
	for _, fsync := range fsyncModes {
		b.Run("fsync="+fsync, func(b *testing.B) {
			r, l := benchStore(b, fsync)
			recs := benchRecords()
			fc := r.flushCall(l, recs)
			sha := flushScript.Hash()
			ctx := context.Background()
			var flush, bare time.Duration
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				if _, err := r.Flush(ctx, l, recs); err != nil {
					b.Fatal(err)
				}
				mid := time.Now()
				if _, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
					p.EvalSha(ctx, sha, fc.keys, fc.args...)
					return nil
				}); err != nil {
					b.Fatal(err)
				}
				flush += mid.Sub(start)
				bare += time.Since(mid)
			}
			n := float64(benchBatch * b.N)
			b.ReportMetric(n/flush.Seconds(), "flush-records/s")
			b.ReportMetric(n/bare.Seconds(), "bare-records/s")
			b.ReportMetric(bare.Seconds()/flush.Seconds(), "flush/bare")
		})
	}
}

// BenchmarkRenewAll measures what an entity space's slot count costs Redis
// while nothing happens: every slot's lease is renewed once per renew
// interval (a third of the lease TTL) by whichever pod holds it, so a space
// costs S renewals per interval however many pods share it. Each op is one
// renewal round of all S leases (RenewAll, 512 to a script call). It reports
// Redis's own CPU time per round (INFO cpu, user + sys, so the client's cost
// is left out) and what that is as a share of one Redis core at the default
// renew interval of 10s/3. docs/routing.md ("Why 4096 slots") quotes it.
//
//	go test -run '^$' -bench RenewAll -benchtime 20x ./statestore/
func BenchmarkRenewAll(b *testing.B) {
	const ttl = 10 * time.Second
	renewEvery := (ttl / 3).Seconds()
	for _, slots := range []int{4096, 16384, 65536} {
		b.Run(fmt.Sprintf("slots=%d", slots), func(b *testing.B) {
			srv := redistest.Start(b, redistest.WithArgs("--appendfsync", "always"))
			ctx := context.Background()
			r, err := NewRedis(ctx, srv.URL(), RedisOptions{})
			if err != nil {
				b.Fatalf("NewRedis: %v", err)
			}
			b.Cleanup(func() { r.Close() })
			refs := make([]SlotRef, slots)
			for i := range refs {
				refs[i] = SlotRef{Space: "bench/svc", Slot: uint32(i)}
			}
			leases, errs := r.AcquireAll(ctx, refs, "bench-pod", "", ttl)
			if err := errors.Join(errs...); err != nil {
				b.Fatalf("AcquireAll: %v", err)
			}
			cpu0 := redisCPU(b, r)
			b.ResetTimer()
			for range b.N {
				if _, errs := r.RenewAll(ctx, leases, ttl); errors.Join(errs...) != nil {
					b.Fatalf("RenewAll: %v", errors.Join(errs...))
				}
			}
			b.StopTimer()
			perRound := (redisCPU(b, r) - cpu0) / float64(b.N)
			b.ReportMetric(perRound*1000, "redis-cpu-ms/round")
			b.ReportMetric(100*perRound/renewEvery, "redis-core-%")
		})
	}
}

// redisCPU is the seconds of CPU the Redis server has used, user and system.
func redisCPU(b *testing.B, r *Redis) float64 {
	b.Helper()
	info, err := r.c.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatalf("INFO cpu: %v", err)
	}
	var total float64
	for _, line := range strings.Split(info, "\r\n") {
		name, value, ok := strings.Cut(line, ":")
		if !ok || (name != "used_cpu_user" && name != "used_cpu_sys") {
			continue
		}
		f, err := strconv.ParseFloat(value, 64)
		if err != nil {
			b.Fatalf("INFO cpu %s=%q: %v", name, value, err)
		}
		total += f
	}
	return total
}
