package bench

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Environment variables that configure a run.
const (
	// EnvMode selects the scale: unset for the smoke check, "quick" or
	// "full" for a benchmark run that writes results.
	EnvMode = "KSTATE_BENCH"
	// EnvOut is the directory for result rows and plots.
	EnvOut = "BENCH_OUT"
	// EnvRedisDelay is the delay added to Redis each way (a Go duration).
	EnvRedisDelay = "KSTATE_BENCH_REDIS_DELAY"
	// EnvLog turns the dev clusters' logs on (to the test log).
	EnvLog = "KSTATE_BENCH_LOG"
)

type mode string

const (
	smoke mode = "smoke"
	quick mode = "quick"
	full  mode = "full"
)

func benchMode(t *testing.T) mode {
	t.Helper()
	switch v := os.Getenv(EnvMode); v {
	case "":
		return smoke
	case "quick", "full":
		return mode(v)
	default:
		t.Fatalf("%s=%q: expected quick, full or unset (smoke check)", EnvMode, v)
		return ""
	}
}

// pick returns the value for m: smoke, quick or full.
func pick[T any](m mode, s, q, f T) T {
	switch m {
	case quick:
		return q
	case full:
		return f
	}
	return s
}

// redisDelay is the delay added to Redis each way.
func redisDelay(t *testing.T) time.Duration {
	t.Helper()
	v := os.Getenv(EnvRedisDelay)
	if v == "" {
		return 250 * time.Microsecond
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		t.Fatalf("%s=%q: expected a duration such as 250us", EnvRedisDelay, v)
	}
	return d
}

func init() {
	// dev's proxy sends through http.DefaultTransport, which keeps only 2
	// idle connections per host: past 2 concurrent requests per replica it
	// opens and closes a connection per request. Knative's activator, which
	// dev stands in for, keeps 100 (MAX_IDLE_PROXY_CONNS_PER_HOST in
	// cmd/activator), so the benchmark process does too.
	http.DefaultTransport.(*http.Transport).MaxIdleConnsPerHost = 100
}

// outDir is where a benchmark run writes rows and plots.
func outDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv(EnvOut)
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "kstate-bench")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("%s: %v", EnvOut, err)
	}
	return dir
}

// row is one line of the results table.
type row struct {
	ID, Measure, Kstate, Baseline, Ratio, Goal, Met string
}

// report collects a scenario's rows and notes; write saves them for
// hack/bench.sh (in a benchmark run) and logs them as markdown.
type report struct {
	id    string
	mu    sync.Mutex
	rows  []row
	notes []string
}

func (r *report) add(x row) {
	r.mu.Lock()
	defer r.mu.Unlock()
	x.ID = r.id
	r.rows = append(r.rows, x)
}

func (r *report) note(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

// write logs the rows and, outside the smoke check, writes them to
// rows-<id>.tsv in the output directory: one tab-separated row per line,
// notes on lines starting with "#".
func (r *report) write(t *testing.T, m mode) {
	t.Helper()
	var b strings.Builder
	b.WriteString("| id | measure | kstate | baseline | ratio | goal | met? |\n| --- | --- | --- | --- | --- | --- | --- |\n")
	var tsv strings.Builder
	for _, x := range r.rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", x.ID, x.Measure, x.Kstate, x.Baseline, x.Ratio, x.Goal, x.Met)
		fmt.Fprintf(&tsv, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", x.ID, x.Measure, x.Kstate, x.Baseline, x.Ratio, x.Goal, x.Met)
	}
	for _, n := range r.notes {
		fmt.Fprintf(&b, "\n%s: %s", r.id, n)
		fmt.Fprintf(&tsv, "# %s: %s\n", r.id, n)
	}
	t.Logf("%s results (%s):\n%s", r.id, m, b.String())
	if m == smoke {
		return
	}
	path := filepath.Join(outDir(t), "rows-"+r.id+".tsv")
	if err := os.WriteFile(path, []byte(tsv.String()), 0o644); err != nil {
		t.Fatalf("writing %s: %v", path, err)
	}
}

// met says whether ok holds, for the table.
func met(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

// ms formats a duration in milliseconds.
func ms(d time.Duration) string {
	v := float64(d) / float64(time.Millisecond)
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f ms", v)
	case v >= 10:
		return fmt.Sprintf("%.1f ms", v)
	}
	return fmt.Sprintf("%.2f ms", v)
}

// ratio formats a/b.
func ratio(a, b float64) string {
	if b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", a/b)
}
