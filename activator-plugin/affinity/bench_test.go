package affinity

import (
	"context"
	"fmt"
	"testing"

	"github.com/kstate-dev/kstate/pkg/placement"
)

// Run with:
//
//	go test -run '^$' -bench . -benchmem ./activator-plugin/affinity/
//
// BenchmarkPick is the routing decision the activator makes per request
// (goal: at most 200 ns at 1,000 pods); OwnerOfKey is placement's own
// lookup, the baseline measured in the same run.

var benchSink Pod

func benchRouter(b *testing.B, n int, opts Options) (*Router, []string) {
	ps := make([]Pod, n)
	for i := range ps {
		ps[i] = Pod{Name: fmt.Sprintf("counter-00001-deployment-%08x", i*2654435761), Addr: fmt.Sprintf("10.%d.%d.%d:8012", i>>16&255, i>>8&255, i&255)}
	}
	r := mustRouter(b, opts, ps)
	keys := make([]string, 4096)
	for i := range keys {
		keys[i] = fmt.Sprintf("cart-%d", i*7919)
	}
	return r, keys
}

func BenchmarkPick(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		r, keys := benchRouter(b, n, Options{})
		b.Run(fmt.Sprintf("pods=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				_, benchSink, _ = r.Pick(keys[i%len(keys)])
			}
		})
	}
	b.Run("baseline=placement.OwnerOfKey/pods=1000", func(b *testing.B) {
		r, keys := benchRouter(b, 1000, Options{})
		t := r.Table()
		var owner string
		for i := 0; i < b.N; i++ {
			_, owner = t.OwnerOfKey(keys[i%len(keys)])
		}
		benchSink.Name = owner
	})
}

// BenchmarkAcquireRelease is Pick plus taking and giving back a place in the
// owner's limit, in parallel, with and without a limit.
func BenchmarkAcquireRelease(b *testing.B) {
	for _, cc := range []int{0, 1000} {
		r, keys := benchRouter(b, 1000, Options{Concurrency: cc})
		b.Run(fmt.Sprintf("pods=1000/cc=%d", cc), func(b *testing.B) {
			b.ReportAllocs()
			ctx := context.Background()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					t, err := r.Acquire(ctx, keys[i%len(keys)])
					if err != nil {
						b.Fatal(err)
					}
					t.Release()
					i++
				}
			})
		})
	}
}

// BenchmarkUpdate is the table rebuild on an endpoints change: one pod
// joins a revision of n pods.
func BenchmarkUpdate(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		r, _ := benchRouter(b, n, Options{})
		ps := r.Pods()
		joined := append(ps[:len(ps):len(ps)], Pod{Name: "joiner", Addr: "10.255.255.255:8012"})
		b.Run(fmt.Sprintf("pods=%d/slots=%d", n, placement.DefaultSlots), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				set := ps
				if i%2 == 0 {
					set = joined
				}
				if _, err := r.Update(set); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
