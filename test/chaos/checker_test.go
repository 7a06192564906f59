package chaos

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kstate-dev/kstate/internal/proctest"
)

// verdict is what the checker found in one scenario.
type verdict struct {
	acked    int64    // acknowledged increments
	stored   int64    // their sum in Redis
	lost     int64    // acknowledged but not stored
	doubled  int64    // stored more often than acknowledged
	forks    []string // keys whose replies handed out a count twice
	rejected int64    // stale writes the store rejected
	writes   int      // entity writes seen by MONITOR
	retries  int64    // attempts answered with a retryable error
}

func (v verdict) String() string {
	return fmt.Sprintf("acked %d, stored %d, lost %d, doubled %d, forked keys %d, stale writes rejected %d, entity writes seen %d, retried attempts %d",
		v.acked, v.stored, v.lost, v.doubled, len(v.forks), v.rejected, v.writes, v.retries)
}

// check stops the load, flushes the fleet and compares the ledger with
// Redis. lossAllowed(key, lost, acks) judges a loss (nil: none allowed).
func check(t *testing.T, f *fleet, l *load, w *writers, lossAllowed func(key string, lost int64, acks []ack) error) verdict {
	t.Helper()
	l.halt()
	ledger := l.ledger()
	v := verdict{rejected: f.flushAll(), retries: l.retries.Load()}
	store := proctest.OpenStore(t, f.redis.URL())
	stored := proctest.StoredCounts(t, store, f.space, slots, l.keys)
	for _, key := range l.keys {
		acks := ledger[key]
		n, s := int64(len(acks)), stored[key]
		v.acked += n
		v.stored += s
		switch {
		case s > n:
			v.doubled += s - n
			t.Errorf("key %s: %d increments acknowledged, %d stored: applied more than once", key, n, s)
		case s < n:
			v.lost += n - s
			if lossAllowed == nil {
				t.Errorf("key %s: %d increments acknowledged, %d stored: %d lost", key, n, s, n-s)
			} else if err := lossAllowed(key, n-s, acks); err != nil {
				t.Errorf("key %s: %d lost: %v", key, n-s, err)
			}
		}
		if lossAllowed == nil {
			if err := countsAreOneToN(acks); err != nil {
				v.forks = append(v.forks, key)
				t.Errorf("key %s: %v", key, err)
			}
		}
	}
	var violations []string
	var unattributed int
	v.writes, unattributed, violations = w.report()
	for _, msg := range violations {
		t.Errorf("two writers: %s", msg)
	}
	if unattributed > 0 {
		t.Errorf("%d entity writes in MONITOR without a flush script call before them", unattributed)
	}
	if v.acked == 0 || v.writes == 0 {
		t.Errorf("nothing was checked: %v", v)
	}
	t.Logf("checker: %v", v)
	return v
}

// countsAreOneToN: a single writer hands out the counts 1..n to n
// acknowledged increments of a key, each once.
func countsAreOneToN(acks []ack) error {
	counts := make([]int64, len(acks))
	for i, a := range acks {
		counts[i] = a.count
	}
	slices.Sort(counts)
	for i, c := range counts {
		if c != int64(i+1) {
			var dup []string
			for j := 1; j < len(counts); j++ {
				if counts[j] == counts[j-1] {
					dup = append(dup, fmt.Sprint(counts[j]))
				}
			}
			return fmt.Errorf("the %d acknowledged increments returned counts that are not 1..%d (position %d has %d; repeated: %s)",
				len(acks), len(acks), i, c, strings.Join(dup, ","))
		}
	}
	return nil
}

// lostBetween allows a loss no larger than the key's increments
// acknowledged between from and to: what an agent that crashed or was cut
// off in that window may not have written.
func lostBetween(from, to time.Time) func(string, int64, []ack) error {
	return func(_ string, lost int64, acks []ack) error {
		var window int64
		for _, a := range acks {
			if !a.at.Before(from) && !a.at.After(to) {
				window++
			}
		}
		if lost > window {
			return fmt.Errorf("more than the %d increments acknowledged between %s and %s", window, from.Format(time.StampMilli), to.Format(time.StampMilli))
		}
		return nil
	}
}
