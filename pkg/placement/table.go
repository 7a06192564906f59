package placement

import (
	"errors"
	"fmt"
	"slices"
)

var (
	// ErrSlots is wrapped by New's error for a slot count outside 1..MaxSlots.
	ErrSlots = errors.New("invalid slot count")
	// ErrMember is wrapped by New's error for an empty or repeated member name.
	ErrMember = errors.New("invalid member")
)

// Table maps the slots of one entity space to members (pod names). It is
// immutable once built and safe for concurrent use. Build a new Table when the
// member set changes; Moved says which slots changed hands.
type Table struct {
	slots   int
	members []string // sorted, unique
	owner   []uint32 // slot -> index into members; nil when there are no members
	counts  []int    // member index -> number of slots owned
}

// New builds the table of the given member set over slots slots. The result
// depends only on the set of names and on slots: the order of members does
// not matter, and members is not retained. An empty set gives a table whose
// Owner is "" for every slot.
func New(members []string, slots int) (*Table, error) {
	if slots < 1 || slots > MaxSlots {
		return nil, fmt.Errorf("slot count %d: want 1..%d: %w", slots, MaxSlots, ErrSlots)
	}
	sorted := slices.Clone(members)
	slices.Sort(sorted)
	for i, m := range sorted {
		if m == "" {
			return nil, fmt.Errorf("member %d is empty: want a pod name: %w", slices.Index(members, ""), ErrMember)
		}
		if i > 0 && sorted[i-1] == m {
			return nil, fmt.Errorf("member %q listed twice: want each pod name once: %w", m, ErrMember)
		}
	}
	t := &Table{slots: slots, members: sorted}
	if len(sorted) == 0 {
		return t, nil
	}
	hashes := make([]uint64, len(sorted))
	for i, m := range sorted {
		hashes[i] = memberHash(m)
	}
	t.owner = assign(hashes, slots, capacity(slots, len(sorted), loadBoundPercent))
	t.counts = make([]int, len(sorted))
	for _, o := range t.owner {
		t.counts[o]++
	}
	return t, nil
}

// Slots is the slot count of the table's entity space.
func (t *Table) Slots() int { return t.slots }

// Len is the number of members.
func (t *Table) Len() int { return len(t.members) }

// Members returns the member names in sorted order.
func (t *Table) Members() []string { return slices.Clone(t.members) }

// Owner returns the member that owns slot, or "" when the table has no
// members. slot must be below Slots().
func (t *Table) Owner(slot uint32) string {
	if t.owner == nil {
		if int(slot) >= t.slots {
			panic(fmt.Sprintf("placement: slot %d out of range [0, %d)", slot, t.slots))
		}
		return ""
	}
	return t.members[t.owner[slot]]
}

// OwnerOfKey is the routing decision for an entity key: its slot (SlotOf) and
// the slot's owner ("" when the table has no members).
func (t *Table) OwnerOfKey(key string) (slot uint32, owner string) {
	slot = SlotOf(key, t.slots)
	return slot, t.Owner(slot)
}

// SlotsOf returns the slots owned by member in increasing order, or nil if it
// is not a member.
func (t *Table) SlotsOf(member string) []uint32 {
	i, ok := slices.BinarySearch(t.members, member)
	if !ok {
		return nil
	}
	out := make([]uint32, 0, t.counts[i])
	for s, o := range t.owner {
		if o == uint32(i) {
			out = append(out, uint32(s))
		}
	}
	return out
}

// Counts returns the number of slots each member owns.
func (t *Table) Counts() map[string]int {
	out := make(map[string]int, len(t.members))
	for i, m := range t.members {
		out[m] = t.counts[i]
	}
	return out
}

// Moved returns, in increasing order, the slots whose owner differs between a
// and b: what a new owner has to take over (preload, lease) when the
// placement goes from a to b. A nil table counts as one without members. When
// the slot counts differ every key maps to a new slot, so every slot of b is
// reported.
func Moved(a, b *Table) []uint32 {
	switch {
	case b == nil && a == nil:
		return nil
	case b == nil:
		b = &Table{slots: a.slots}
	case a == nil:
		a = &Table{slots: b.slots}
	}
	var out []uint32
	if a.slots != b.slots {
		out = make([]uint32, b.slots)
		for s := range out {
			out[s] = uint32(s)
		}
		return out
	}
	for s := 0; s < a.slots; s++ {
		if a.Owner(uint32(s)) != b.Owner(uint32(s)) {
			out = append(out, uint32(s))
		}
	}
	return out
}
