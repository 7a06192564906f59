package chaos

import (
	"bufio"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The writers check on MONITOR lines written by hand: it must flag an epoch
// with two holders and a write under an older epoch, and nothing else.
func TestWritersCheck(t *testing.T) {
	const (
		lease = `"kstate:{s/1}:lease" "kstate:{s/1}:hot"`
		write = `1.2 [0 lua] "HSET" "kstate:{s/1}:e:k" "s" "{\"count\":1}" "v" "1"`
	)
	flush := func(holder, epoch string) string {
		return `1.1 [0 127.0.0.1:5] "evalsha" "abc" "3" ` + lease + ` "kstate:{s/1}:e:k" "` + holder + `" "` + epoch + `" "64" "kstate:{s/1}:e:"`
	}
	tests := []struct {
		name             string
		lines            []string
		wantWrites       int
		wantUnattributed int
		wantViolations   []string
	}{{
		name:       "epochs rise, one holder each",
		lines:      []string{flush("a", "1"), write, flush("a", "1"), write, flush("b", "2"), write},
		wantWrites: 3,
	}, {
		name:           "an epoch with two holders",
		lines:          []string{flush("a", "3"), write, flush("b", "3"), write},
		wantWrites:     2,
		wantViolations: []string{"kstate:{s/1}:lease epoch 3 written by a and by b"},
	}, {
		name:           "a write under an older epoch",
		lines:          []string{flush("b", "5"), write, flush("a", "4"), write},
		wantWrites:     2,
		wantViolations: []string{"kstate:{s/1}:e:k written by a under epoch 4 after a write under epoch 5"},
	}, {
		name:             "a script write without its call",
		lines:            []string{write},
		wantUnattributed: 1,
	}, {
		name:  "other commands and scripts are not flushes",
		lines: []string{`1.1 [0 127.0.0.1:5] "evalsha" "abc" "1" "kstate:{s/1}:lease" "a" "addr" "2000"`, `1.2 [0 lua] "HSET" "kstate:{s/1}:lease" "holder" "a"`, `1.3 [0 127.0.0.1:5] "get" "x"`},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := &writers{holders: map[string]map[uint64]string{}, lastEpoch: map[string]uint64{}}
			w.read(bufio.NewReader(strings.NewReader("+" + strings.Join(tc.lines, "\r\n+") + "\r\n")))
			writes, unattributed, violations := w.report()
			if writes != tc.wantWrites || unattributed != tc.wantUnattributed {
				t.Errorf("writes %d, unattributed %d; want %d, %d", writes, unattributed, tc.wantWrites, tc.wantUnattributed)
			}
			if diff := cmp.Diff(tc.wantViolations, violations); diff != "" {
				t.Errorf("violations (-want,+got):\n%s", diff)
			}
		})
	}
}

func TestUnquote(t *testing.T) {
	got := unquote(`"evalsha" "a\"b" "c\\d" "\x41\n" ""`)
	if diff := cmp.Diff([]string{"evalsha", `a"b`, `c\d`, "A\n", ""}, got); diff != "" {
		t.Errorf("(-want,+got):\n%s", diff)
	}
}
