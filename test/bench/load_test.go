package bench

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"testing"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// counterTargets are POSTs of {"by":1} to url, one per key, keyed by the
// Kstate-Key header (the counter example's default key spec).
func counterTargets(url string, keys []string) []vegeta.Target {
	out := make([]vegeta.Target, len(keys))
	for i, k := range keys {
		out[i] = vegeta.Target{
			Method: http.MethodPost,
			URL:    url,
			Body:   []byte(`{"by":1}`),
			Header: http.Header{"Kstate-Key": {k}, "Content-Type": {"application/json"}},
		}
	}
	return out
}

func keys(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}

// attack sends the targets round robin at rate per second for d, open
// loop: vegeta starts every request on schedule, adding workers when all
// are busy, so a slow answer never delays the next arrival. The results
// are in the order the requests were sent.
func attack(name string, targets []vegeta.Target, rate int, d time.Duration) []*vegeta.Result {
	a := vegeta.NewAttacker(vegeta.Timeout(30*time.Second), vegeta.KeepAlive(true))
	return collect(a.Attack(vegeta.NewStaticTargeter(targets...), vegeta.Rate{Freq: rate, Per: time.Second}, d, name))
}

// saturate sends the targets round robin from workers closed-loop workers
// for d, as fast as the server answers: vegeta's max-rate mode. It measures
// throughput; latency comes from attack.
func saturate(name string, targets []vegeta.Target, workers int, d time.Duration) []*vegeta.Result {
	a := vegeta.NewAttacker(vegeta.Timeout(30*time.Second), vegeta.KeepAlive(true),
		vegeta.Workers(uint64(workers)), vegeta.MaxWorkers(uint64(workers)))
	return collect(a.Attack(vegeta.NewStaticTargeter(targets...), vegeta.Rate{Freq: 0}, d, name))
}

func collect(ch <-chan *vegeta.Result) []*vegeta.Result {
	var out []*vegeta.Result
	for r := range ch {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return out
}

func failed(r *vegeta.Result) bool { return r.Error != "" || r.Code != http.StatusOK }

// summary is what a set of results says.
type summary struct {
	n, failed        int
	p50, p99, p999   time.Duration
	throughput       float64 // successful requests per second, first send to last answer: for one run only
	first, lastStart time.Time
}

func summarize(rs []*vegeta.Result) summary {
	s := summary{n: len(rs)}
	if len(rs) == 0 {
		return s
	}
	lat := make([]time.Duration, 0, len(rs))
	var end time.Time
	s.first, s.lastStart = rs[0].Timestamp, rs[0].Timestamp
	for _, r := range rs {
		if failed(r) {
			s.failed++
		}
		lat = append(lat, r.Latency)
		if r.Timestamp.Before(s.first) {
			s.first = r.Timestamp
		}
		if r.Timestamp.After(s.lastStart) {
			s.lastStart = r.Timestamp
		}
		if e := r.End(); e.After(end) {
			end = e
		}
	}
	s.p50, s.p99, s.p999 = quantile(lat, 0.5), quantile(lat, 0.99), quantile(lat, 0.999)
	if el := end.Sub(s.first).Seconds(); el > 0 {
		s.throughput = float64(s.n-s.failed) / el
	}
	return s
}

// String leaves out throughput, which means nothing for results merged
// from several runs.
func (s summary) String() string {
	return fmt.Sprintf("%d requests, %d failed, p50 %s, p99 %s, p999 %s", s.n, s.failed, ms(s.p50), ms(s.p99), ms(s.p999))
}

// between returns the results sent in [from, to).
func between(rs []*vegeta.Result, from, to time.Time) []*vegeta.Result {
	var out []*vegeta.Result
	for _, r := range rs {
		if !r.Timestamp.Before(from) && r.Timestamp.Before(to) {
			out = append(out, r)
		}
	}
	return out
}

// countReply is the counter example's reply (and the stateless handler's).
type countReply struct {
	Key   string `json:"key"`
	Count int64  `json:"count"`
}

func reply(r *vegeta.Result) (countReply, error) {
	var c countReply
	err := json.Unmarshal(r.Body, &c)
	return c, err
}

// logFailures logs the first few failed requests.
func logFailures(t *testing.T, what string, rs []*vegeta.Result) {
	t.Helper()
	shown := 0
	for _, r := range rs {
		if failed(r) && shown < 5 {
			t.Logf("%s: request %d failed: code %d, error %q, body %.200s", what, r.Seq, r.Code, r.Error, r.Body)
			shown++
		}
	}
}

// checkExactlyOnce checks that every key's successful replies carry the
// counts from[key]+1 .. from[key]+n, each once: every acknowledged
// increment was applied exactly once, in some order. It returns the final
// count per key.
func checkExactlyOnce(t *testing.T, what string, rs []*vegeta.Result, from map[string]int64) map[string]int64 {
	t.Helper()
	seen := map[string][]int64{}
	for _, r := range rs {
		if failed(r) {
			continue
		}
		c, err := reply(r)
		if err != nil {
			t.Errorf("%s: request %d: reply %q: %v", what, r.Seq, r.Body, err)
			continue
		}
		seen[c.Key] = append(seen[c.Key], c.Count)
	}
	last := map[string]int64{}
	for k, counts := range seen {
		sort.Slice(counts, func(i, j int) bool { return counts[i] < counts[j] })
		for i, c := range counts {
			if want := from[k] + int64(i) + 1; c != want {
				t.Errorf("%s: key %s: the %d-th smallest count acknowledged is %d, want %d (an increment lost or applied twice)", what, k, i+1, c, want)
				break
			}
		}
		last[k] = counts[len(counts)-1]
	}
	return last
}
