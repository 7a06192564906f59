package placement

import (
	"fmt"
	"math/big"
	"slices"
	"strconv"

	"github.com/buraksezer/consistent"
	"github.com/cespare/xxhash/v2"
	maglev "github.com/dgryski/go-maglev"
	rendezvous "github.com/dgryski/go-rendezvous"
)

// This file adapts existing placement libraries to the two shapes the
// benchmarks and the comparison compare:
//   - a slot table: owner of each of S slots, built from the member set, so a
//     key lookup is SlotOf + index as in kstate;
//   - a native router: the library's own key -> member lookup.
// Member lists are sorted before they reach a library whose result depends on
// input order (Maglev), since kstate requires order independence.

// algorithm is one placement scheme under comparison.
type algorithm struct {
	id   string // benchmark name
	name string
	// slotTable builds the owner of each slot.
	slotTable func(members []string, slots int) []string
}

// router is a key -> member function built from a member set.
type router struct {
	id   string // benchmark name
	name string
	// build returns the lookup; its cost is the rebuild cost.
	build func(members []string) func(key string) string
}

func kstateTable(percent int) func([]string, int) []string {
	return func(members []string, slots int) []string {
		sorted := slices.Sorted(slices.Values(members))
		hashes := make([]uint64, len(sorted))
		for i, m := range sorted {
			hashes[i] = memberHash(m)
		}
		owner := assign(hashes, slots, capacity(slots, len(sorted), percent))
		out := make([]string, slots)
		for s, o := range owner {
			out[s] = sorted[o]
		}
		return out
	}
}

// rendezvousTable is plain rendezvous (HRW) hashing of each slot number with
// github.com/dgryski/go-rendezvous: minimal movement, no load bound.
func rendezvousTable(members []string, slots int) []string {
	r := rendezvous.New(members, xxhash.Sum64String)
	out := make([]string, slots)
	for s := range out {
		out[s] = r.Lookup(strconv.Itoa(s))
	}
	return out
}

// maglevTable uses github.com/dgryski/go-maglev. Maglev needs a prime table
// size, so the table has nextPrime(slots) entries and slot s is entry s.
func maglevTable(members []string, slots int) []string {
	sorted := slices.Sorted(slices.Values(members))
	tb := maglev.New(sorted, nextPrime(uint64(slots)))
	out := make([]string, slots)
	for s := range out {
		out[s] = sorted[tb.Lookup(uint64(s))]
	}
	return out
}

// consistentTable uses github.com/buraksezer/consistent: a hash ring
// (20 points per member) with "consistent hashing with bounded loads" over
// partitions, here one partition per slot.
func consistentTable(load float64) func([]string, int) []string {
	return func(members []string, slots int) []string {
		c := newConsistent(members, slots, load)
		out := make([]string, slots)
		for s := range out {
			out[s] = c.GetPartitionOwner(s).String()
		}
		return out
	}
}

func newConsistent(members []string, partitions int, load float64) *consistent.Consistent {
	ms := make([]consistent.Member, len(members))
	for i, m := range members {
		ms[i] = member(m)
	}
	return consistent.New(ms, consistent.Config{
		Hasher:            xxh{},
		PartitionCount:    partitions,
		ReplicationFactor: 20,
		Load:              load,
	})
}

type member string

func (m member) String() string { return string(m) }

type xxh struct{}

func (xxh) Sum64(b []byte) uint64 { return xxhash.Sum64(b) }

func nextPrime(n uint64) uint64 {
	for p := n; ; p++ {
		if big.NewInt(int64(p)).ProbablyPrime(0) {
			return p
		}
	}
}

// slotAlgorithms are the slot-table schemes compared over the same slots.
func slotAlgorithms() []algorithm {
	return []algorithm{
		{id: "kstate", name: "kstate (bounded-load rendezvous, 1.05)", slotTable: kstateTable(loadBoundPercent)},
		{id: "rendezvous", name: "go-rendezvous (plain HRW per slot)", slotTable: rendezvousTable},
		{id: "maglev", name: "go-maglev (M = next prime)", slotTable: maglevTable},
		{id: "consistent-1.05", name: "buraksezer/consistent (bounded loads, 1.05)", slotTable: consistentTable(1.05)},
		{id: "consistent-1.25", name: "buraksezer/consistent (bounded loads, 1.25)", slotTable: consistentTable(1.25)},
	}
}

// routers are the key -> member lookups, each library in its native form.
func routers() []router {
	return []router{{
		id:   "kstate",
		name: "kstate Table.OwnerOfKey (4096 slots)",
		build: func(members []string) func(string) string {
			tb, err := New(members, DefaultSlots)
			if err != nil {
				panic(fmt.Sprintf("New: %v", err))
			}
			return func(key string) string {
				_, owner := tb.OwnerOfKey(key)
				return owner
			}
		},
	}, {
		id:   "rendezvous",
		name: "go-rendezvous Lookup (O(N) per key)",
		build: func(members []string) func(string) string {
			return rendezvous.New(members, xxhash.Sum64String).Lookup
		},
	}, {
		id:   "maglev",
		name: "go-maglev Lookup (M = 65537)",
		build: func(members []string) func(string) string {
			sorted := slices.Sorted(slices.Values(members))
			tb := maglev.New(sorted, maglev.SmallM)
			return func(key string) string {
				return sorted[tb.Lookup(xxhash.Sum64String(key))]
			}
		},
	}, {
		id:   "consistent-1.25",
		name: "buraksezer/consistent LocateKey (4096 partitions, 1.25)",
		build: func(members []string) func(string) string {
			c := newConsistent(members, DefaultSlots, 1.25)
			return func(key string) string {
				return c.LocateKey([]byte(key)).String()
			}
		},
	}}
}
