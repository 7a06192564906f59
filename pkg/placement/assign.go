package placement

import (
	"slices"

	"github.com/cespare/xxhash/v2"
)

// loadBoundPercent is the per-member slot cap as a percentage of the average,
// S/N. It is the "1.05" of doc.go; the cap is never below ceil(S/N), so a
// table always has room for every slot.
const loadBoundPercent = 105

// topK is how many best members are kept per slot in the first pass. Almost
// every slot lands on one of its first few choices; a slot that exhausts its
// topK candidates gets its full ranking computed on demand, so topK changes
// speed only, never the result.
const topK = 8

// capacity is the most slots one of n members may own in a table of s slots
// under a load bound of percent% of the average: max(ceil(s/n),
// floor(percent*s/(100*n))), never above s, in integers so every platform
// agrees.
func capacity(s, n, percent int) int {
	c := (s + n - 1) / n
	if b := s * percent / (100 * n); b > c {
		c = b
	}
	return min(c, s)
}

// memberHash is the identity of a member in scores. Two names that collide
// here still get a total order, by name, through better().
func memberHash(name string) uint64 {
	return xxhash.Sum64String(name)
}

// slotSalt spreads slot numbers over 64 bits so that score() of neighbouring
// slots is unrelated.
func slotSalt(slot int) uint64 {
	return fmix64(uint64(slot) + 0x9e3779b97f4a7c15)
}

// score is the rendezvous weight of (slot, member): a 64-bit mix of the
// member's hash and the slot's salt. It is part of the placement contract:
// changing it moves almost every slot, so every kstate component of a fleet
// must run the same definition.
func score(salt, member uint64) uint64 {
	return fmix64(member ^ salt)
}

// fmix64 is MurmurHash3's 64-bit finalizer: a bijection whose output bits each
// depend on every input bit.
func fmix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// cand is one (member, score) pair of a slot's ranking.
type cand struct {
	score  uint64
	member uint32 // index into the sorted member list
}

// better is the total order of a slot's candidates: higher score first, then
// the member that sorts first by name. Ties only happen between members whose
// names collide in memberHash, and then the order still depends only on the
// set.
func better(a, b cand) bool {
	if a.score != b.score {
		return a.score > b.score
	}
	return a.member < b.member
}

// assign computes the owner (index into hashes) of every slot: the stable
// assignment of slots to members under rendezvous scores with a per-member
// cap of limit slots. Because both sides rank pairs by the same score, that
// stable assignment is unique and equals the global greedy: walk all
// (slot, member) pairs from the best score down and give the slot to the
// member when the slot is still free and the member below the cap.
//
// It is computed by deferred acceptance: every slot proposes to its members
// best first; a full member keeps its best limit slots and rejects the worst,
// which then proposes to its next choice. The outcome does not depend on the
// order of proposals, and only the first few choices of a slot are looked at.
//
// hashes must be the memberHash of the members in name order; the result then
// depends only on the member set, slots and limit. limit times the member
// count must be at least slots.
func assign(hashes []uint64, slots, limit int) []uint32 {
	n := len(hashes)
	k := min(topK, n)

	// First pass: the k best members of every slot, one scan of the members
	// per slot.
	cands := make([]cand, slots*k)
	for s := 0; s < slots; s++ {
		salt := slotSalt(s)
		top := cands[s*k : (s+1)*k]
		for i := 0; i < k; i++ {
			insertTop(top[:i+1], cand{score: score(salt, hashes[i]), member: uint32(i)})
		}
		worst := top[k-1]
		for i := k; i < n; i++ {
			if sc := score(salt, hashes[i]); sc >= worst.score {
				if c := (cand{score: sc, member: uint32(i)}); better(c, worst) {
					insertTop(top, c)
					worst = top[k-1]
				}
			}
		}
	}

	// deep holds the full ranking of the few slots that ran out of their k
	// candidates.
	var deep map[uint32][]cand
	choice := func(s uint32, i int) cand {
		if i < k {
			return cands[int(s)*k+i]
		}
		r, ok := deep[s]
		if !ok {
			r = ranking(hashes, int(s))
			if deep == nil {
				deep = make(map[uint32][]cand)
			}
			deep[s] = r
		}
		return r[i]
	}

	next := make([]int, slots) // index of the slot's next choice to propose to
	held := make([]heldSlots, n)
	buf := make([]heldSlot, n*limit)
	for m := range held {
		held[m] = buf[m*limit : m*limit : (m+1)*limit]
	}
	for s0 := 0; s0 < slots; s0++ {
		// Propose s, and whatever it displaces, until someone settles. A
		// rejected slot always has a next choice: limit times n is at least
		// slots, so some member has room before a ranking runs out.
		s := uint32(s0)
		for {
			c := choice(s, next[s])
			next[s]++
			h := &held[c.member]
			p := heldSlot{score: c.score, slot: s}
			if len(*h) < limit {
				h.push(p)
				break
			}
			if !(*h)[0].less(p) {
				continue // rejected: propose to the next choice
			}
			s = h.replaceMin(p).slot
		}
	}

	owner := make([]uint32, slots)
	for m, h := range held {
		for _, p := range h {
			owner[p.slot] = uint32(m)
		}
	}
	return owner
}

// heldSlot is a slot a member currently holds, with the pair's score.
type heldSlot struct {
	score uint64
	slot  uint32
}

// less orders a member's slots worst first: lower score, then higher slot
// number, the reverse of the walk order of the global greedy.
func (a heldSlot) less(b heldSlot) bool {
	if a.score != b.score {
		return a.score < b.score
	}
	return a.slot > b.slot
}

// heldSlots is a min-heap of a member's slots by less, so the slot it gives
// up first is at index 0.
type heldSlots []heldSlot

func (h *heldSlots) push(p heldSlot) {
	*h = append(*h, p)
	s := *h
	for i := len(s) - 1; i > 0; {
		parent := (i - 1) / 2
		if !s[i].less(s[parent]) {
			break
		}
		s[i], s[parent] = s[parent], s[i]
		i = parent
	}
}

// replaceMin puts p in place of the worst slot and returns that slot.
func (h heldSlots) replaceMin(p heldSlot) heldSlot {
	out := h[0]
	h[0] = p
	for i := 0; ; {
		l := 2*i + 1
		if l >= len(h) {
			break
		}
		least := l
		if r := l + 1; r < len(h) && h[r].less(h[l]) {
			least = r
		}
		if !h[least].less(h[i]) {
			break
		}
		h[i], h[least] = h[least], h[i]
		i = least
	}
	return out
}

// insertTop puts c into top, which is sorted by better(), shifting the rest
// down; the last element falls off. The caller guarantees that c beats the
// last element, or that the last element is a free place.
func insertTop(top []cand, c cand) {
	i := len(top) - 1
	for i > 0 && better(c, top[i-1]) {
		top[i] = top[i-1]
		i--
	}
	top[i] = c
}

// ranking is the full candidate list of one slot, best first.
func ranking(hashes []uint64, slot int) []cand {
	salt := slotSalt(slot)
	r := make([]cand, len(hashes))
	for i, mh := range hashes {
		r[i] = cand{score: score(salt, mh), member: uint32(i)}
	}
	slices.SortFunc(r, func(a, b cand) int {
		if better(a, b) {
			return -1
		}
		return 1
	})
	return r
}
