package placement

import (
	"math"
	"math/rand"
	"slices"
)

// podNames returns n distinct names shaped like the pods of a Knative
// revision (<revision>-deployment-<replicaset hash>-<pod suffix>), so the
// hash inputs look like production ones.
func podNames(r *rand.Rand, n int) []string {
	seen := make(map[string]bool, n)
	out := make([]string, 0, n)
	for len(out) < n {
		name := podName(r)
		if !seen[name] {
			seen[name] = true
			out = append(out, name)
		}
	}
	return out
}

func podName(r *rand.Rand) string {
	// Kubernetes' safe alphabet for generated suffixes.
	const alphabet = "bcdfghjklmnpqrstvwxz2456789"
	b := []byte("counter-00001-deployment-xxxxxxxxxx-xxxxx")
	for i := range b {
		if b[i] == 'x' {
			b[i] = alphabet[r.Intn(len(alphabet))]
		}
	}
	return string(b)
}

// newPodName returns a name not in members.
func newPodName(r *rand.Rand, members []string) string {
	for {
		if n := podName(r); !slices.Contains(members, n) {
			return n
		}
	}
}

func mustNew(t interface{ Fatalf(string, ...any) }, members []string, slots int) *Table {
	tb, err := New(members, slots)
	if err != nil {
		t.Fatalf("New(%d members, %d) = %v", len(members), slots, err)
	}
	return tb
}

// owners is the full slot -> owner map of a table, for comparisons.
func owners(t *Table) []string {
	out := make([]string, t.Slots())
	for s := range out {
		out[s] = t.Owner(uint32(s))
	}
	return out
}

// maxLoadRatio is max/avg slots per member.
func maxLoadRatio(t *Table) float64 {
	most := 0
	for _, c := range t.Counts() {
		most = max(most, c)
	}
	return float64(most) * float64(t.Len()) / float64(t.Slots())
}

// joinRatio is the slots moved when joiner is added to members, relative to
// the ideal S/(N+1).
func joinRatio(t interface{ Fatalf(string, ...any) }, before *Table, joiner string) float64 {
	after := mustNew(t, append(before.Members(), joiner), before.Slots())
	return float64(len(Moved(before, after))) * float64(after.Len()) / float64(before.Slots())
}

// leaveRatio is the slots moved when leaver is removed, relative to the ideal:
// the leaver's own slots.
func leaveRatio(t interface{ Fatalf(string, ...any) }, before *Table, leaver string) float64 {
	rest := slices.DeleteFunc(before.Members(), func(m string) bool { return m == leaver })
	after := mustNew(t, rest, before.Slots())
	own, moved := before.Counts()[leaver], len(Moved(before, after))
	if own == 0 {
		// Possible only with more members than slots: nothing may move.
		if moved > 0 {
			return math.Inf(1)
		}
		return 0
	}
	return float64(moved) / float64(own)
}
