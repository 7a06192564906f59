package placement

import (
	"fmt"
	"math/rand"
	"testing"
)

// Run with hack/bench-placement.sh, or:
//
//	go test -run '^$' -bench . -benchmem ./pkg/placement/
//
// Compare within one run only: the ratios between algorithms at the same N
// mean something, the absolute numbers depend on the machine.

var benchSizes = []int{3, 10, 100, 1000}

// benchKeys are entity keys shaped like the ones kstate routes.
func benchKeys() []string {
	keys := make([]string, 4096)
	for i := range keys {
		keys[i] = fmt.Sprintf("cart-%d", i*7919)
	}
	return keys
}

var sink string

// BenchmarkOwnerOfKey is the full routing decision: key -> slot -> pod.
func BenchmarkOwnerOfKey(b *testing.B) {
	keys := benchKeys()
	for _, n := range benchSizes {
		tb := mustNew(b, podNames(rand.New(rand.NewSource(1)), n), DefaultSlots)
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				_, sink = tb.OwnerOfKey(keys[i%len(keys)])
			}
		})
	}
}

// BenchmarkOwner is the slot -> pod half alone.
func BenchmarkOwner(b *testing.B) {
	tb := mustNew(b, podNames(rand.New(rand.NewSource(1)), 1000), DefaultSlots)
	for i := 0; i < b.N; i++ {
		sink = tb.Owner(uint32(i) % DefaultSlots)
	}
}

// BenchmarkNew is the rebuild an activator does on every endpoints change.
func BenchmarkNew(b *testing.B) {
	for _, slots := range []int{DefaultSlots, MaxSlots} {
		for _, n := range benchSizes {
			members := podNames(rand.New(rand.NewSource(1)), n)
			b.Run(fmt.Sprintf("slots=%d/N=%d", slots, n), func(b *testing.B) {
				b.ReportAllocs()
				for i := 0; i < b.N; i++ {
					mustNew(b, members, slots)
				}
			})
		}
	}
}

// BenchmarkLookup compares key -> pod across libraries in their native form.
func BenchmarkLookup(b *testing.B) {
	keys := benchKeys()
	for _, r := range routers() {
		for _, n := range benchSizes {
			lookup := r.build(podNames(rand.New(rand.NewSource(1)), n))
			b.Run(fmt.Sprintf("%s/N=%d", r.id, n), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					sink = lookup(keys[i%len(keys)])
				}
			})
		}
	}
}

// BenchmarkRebuild compares building the lookup structure from a member set.
func BenchmarkRebuild(b *testing.B) {
	for _, r := range routers() {
		for _, n := range benchSizes {
			members := podNames(rand.New(rand.NewSource(1)), n)
			b.Run(fmt.Sprintf("%s/N=%d", r.id, n), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					r.build(members)
				}
			})
		}
	}
	// The slot-table forms: what each library costs when, like kstate, it
	// has to produce an owner for every slot.
	for _, a := range slotAlgorithms() {
		for _, n := range benchSizes {
			members := podNames(rand.New(rand.NewSource(1)), n)
			b.Run(fmt.Sprintf("%s-slots/N=%d", a.id, n), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					a.slotTable(members, DefaultSlots)
				}
			})
		}
	}
}
