package placement

import (
	"errors"
	"math/rand"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestNewErrors(t *testing.T) {
	tests := []struct {
		name    string
		members []string
		slots   int
		wantIs  error
		wantMsg string
	}{{
		name:    "zero slots",
		members: []string{"a"},
		slots:   0,
		wantIs:  ErrSlots,
		wantMsg: "slot count 0: want 1..65536",
	}, {
		name:    "negative slots",
		slots:   -4,
		wantIs:  ErrSlots,
		wantMsg: "slot count -4: want 1..65536",
	}, {
		name:    "above MaxSlots",
		members: []string{"a"},
		slots:   MaxSlots + 1,
		wantIs:  ErrSlots,
		wantMsg: "slot count 65537: want 1..65536",
	}, {
		name:    "empty member",
		members: []string{"a", "b", ""},
		slots:   DefaultSlots,
		wantIs:  ErrMember,
		wantMsg: "member 2 is empty: want a pod name",
	}, {
		name:    "duplicate member",
		members: []string{"pod-b", "pod-a", "pod-b"},
		slots:   DefaultSlots,
		wantIs:  ErrMember,
		wantMsg: `member "pod-b" listed twice: want each pod name once`,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tb, err := New(tc.members, tc.slots)
			if err == nil {
				t.Fatalf("New() = %v, want an error", tb)
			}
			if !errors.Is(err, tc.wantIs) {
				t.Errorf("New() error = %v, want one wrapping %v", err, tc.wantIs)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("New() error = %q, want it to contain %q", err, tc.wantMsg)
			}
		})
	}
}

func TestNewValidBounds(t *testing.T) {
	for _, slots := range []int{1, 2, 7, DefaultSlots, MaxSlots} {
		tb, err := New([]string{"a", "b", "c"}, slots)
		if err != nil {
			t.Fatalf("New(3 members, %d) = %v", slots, err)
		}
		total := 0
		for _, c := range tb.Counts() {
			total += c
		}
		if total != slots {
			t.Errorf("New(3 members, %d): counts add up to %d, want %d", slots, total, slots)
		}
	}
}

func TestZeroMembers(t *testing.T) {
	for _, members := range [][]string{nil, {}} {
		tb := mustNew(t, members, DefaultSlots)
		if got := tb.Len(); got != 0 {
			t.Errorf("Len() = %d, want 0", got)
		}
		for _, s := range []uint32{0, 1, DefaultSlots - 1} {
			if got := tb.Owner(s); got != "" {
				t.Errorf("Owner(%d) = %q, want \"\"", s, got)
			}
		}
		if slot, owner := tb.OwnerOfKey("cart-42"); owner != "" || slot != SlotOf("cart-42", DefaultSlots) {
			t.Errorf("OwnerOfKey(cart-42) = (%d, %q), want (%d, \"\")", slot, owner, SlotOf("cart-42", DefaultSlots))
		}
		if got := tb.SlotsOf("anyone"); got != nil {
			t.Errorf("SlotsOf(anyone) = %v, want nil", got)
		}
		if diff := cmp.Diff(map[string]int{}, tb.Counts()); diff != "" {
			t.Errorf("Counts() (-want,+got):\n%s", diff)
		}
	}
}

func TestOwnerOutOfRangePanics(t *testing.T) {
	for _, members := range [][]string{nil, {"a"}} {
		tb := mustNew(t, members, 8)
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Owner(8) on %d members and 8 slots did not panic", len(members))
				}
			}()
			tb.Owner(8)
		}()
	}
}

func TestAccessors(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	members := podNames(r, 17)
	tb := mustNew(t, members, DefaultSlots)

	want := slices.Sorted(slices.Values(members))
	if diff := cmp.Diff(want, tb.Members()); diff != "" {
		t.Errorf("Members() (-want,+got):\n%s", diff)
	}
	if got := tb.Len(); got != len(members) {
		t.Errorf("Len() = %d, want %d", got, len(members))
	}
	if got := tb.Slots(); got != DefaultSlots {
		t.Errorf("Slots() = %d, want %d", got, DefaultSlots)
	}

	// Members() is a copy: changing it must not change the table.
	tb.Members()[0] = "mutated"
	if diff := cmp.Diff(want, tb.Members()); diff != "" {
		t.Errorf("Members() after mutating a returned slice (-want,+got):\n%s", diff)
	}

	// Owner, SlotsOf and Counts describe the same map.
	fromOwner := map[string][]uint32{}
	for s := 0; s < tb.Slots(); s++ {
		o := tb.Owner(uint32(s))
		if !slices.Contains(members, o) {
			t.Fatalf("Owner(%d) = %q, not a member", s, o)
		}
		fromOwner[o] = append(fromOwner[o], uint32(s))
	}
	counts := tb.Counts()
	for _, m := range members {
		if diff := cmp.Diff(fromOwner[m], tb.SlotsOf(m)); diff != "" {
			t.Errorf("SlotsOf(%s) (-from Owner,+got):\n%s", m, diff)
		}
		if counts[m] != len(fromOwner[m]) {
			t.Errorf("Counts()[%s] = %d, want %d", m, counts[m], len(fromOwner[m]))
		}
	}
	if got := tb.SlotsOf("not-a-member"); got != nil {
		t.Errorf("SlotsOf(not-a-member) = %v, want nil", got)
	}

	for _, key := range []string{"", "cart-1", "user/42", "ключ", strings.Repeat("k", 1000)} {
		slot, owner := tb.OwnerOfKey(key)
		if want := SlotOf(key, DefaultSlots); slot != want {
			t.Errorf("OwnerOfKey(%q) slot = %d, want SlotOf = %d", key, slot, want)
		}
		if want := tb.Owner(slot); owner != want {
			t.Errorf("OwnerOfKey(%q) owner = %q, want Owner(%d) = %q", key, owner, slot, want)
		}
	}
}

// TestSlotOfVectors pins the key -> slot function to xxh64 (seed 0) values
// that any other implementation must reproduce (docs/routing.md lists them).
func TestSlotOfVectors(t *testing.T) {
	tests := []struct {
		key   string
		slots int
		want  uint32
	}{
		// xxh64("") = 0xef46db3751d8e999, xxh64("abc") = 0x44bc2cf5ad770999:
		// the published test vectors of the xxHash specification.
		{"", 1 << 16, 0xe999},
		{"abc", 1 << 16, 0x0999},
		{"", DefaultSlots, 0xef46db3751d8e999 % DefaultSlots},
		{"abc", DefaultSlots, 0x44bc2cf5ad770999 % DefaultSlots},
		{"abc", 1000, 0x44bc2cf5ad770999 % 1000},
		// Checked against xxhsum -H1 and Python's xxhash.xxh64_intdigest.
		{"cart-42", DefaultSlots, 431},
		{"user/alice", DefaultSlots, 139},
		{"ключ", DefaultSlots, 412}, // UTF-8 bytes, not UTF-16 or runes
		{"cart-42", MaxSlots, 0x520c8cc383efc1af % MaxSlots},
		{"cart-42", 1, 0},
	}
	for _, tc := range tests {
		if got := SlotOf(tc.key, tc.slots); got != tc.want {
			t.Errorf("SlotOf(%q, %d) = %d, want %d", tc.key, tc.slots, got, tc.want)
		}
	}
}

func TestMoved(t *testing.T) {
	ab := mustNew(t, []string{"a", "b"}, 64)
	abc := mustNew(t, []string{"a", "b", "c"}, 64)
	empty := mustNew(t, nil, 64)
	other := mustNew(t, []string{"a", "b"}, 32)

	var wantABC []uint32
	for s := uint32(0); s < 64; s++ {
		if ab.Owner(s) != abc.Owner(s) {
			wantABC = append(wantABC, s)
		}
	}
	all := func(n int) []uint32 {
		out := make([]uint32, n)
		for i := range out {
			out[i] = uint32(i)
		}
		return out
	}

	tests := []struct {
		name string
		a, b *Table
		want []uint32
	}{
		{name: "same table", a: ab, b: ab, want: nil},
		{name: "equal tables", a: ab, b: mustNew(t, []string{"b", "a"}, 64), want: nil},
		{name: "join", a: ab, b: abc, want: wantABC},
		{name: "leave", a: abc, b: ab, want: wantABC},
		{name: "from empty", a: empty, b: ab, want: all(64)},
		{name: "to empty", a: ab, b: empty, want: all(64)},
		{name: "nil to table", a: nil, b: ab, want: all(64)},
		{name: "table to nil", a: ab, b: nil, want: all(64)},
		{name: "nil to nil", a: nil, b: nil, want: nil},
		{name: "empty to empty", a: empty, b: mustNew(t, nil, 64), want: nil},
		{name: "slot count differs", a: ab, b: other, want: all(32)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, Moved(tc.a, tc.b)); diff != "" {
				t.Errorf("Moved() (-want,+got):\n%s", diff)
			}
		})
	}
	if len(wantABC) == 0 {
		t.Error("a join moved no slot; the join case tests nothing")
	}
}
