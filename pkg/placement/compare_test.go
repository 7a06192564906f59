package placement

import (
	"bufio"
	"fmt"
	"io"
	"math/rand"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestPlacementComparison measures kstate's placement against other
// libraries and prints markdown tables (docs/routing.md quotes them). It is a
// measurement, not a check, and takes a few minutes, so it only runs when
// KSTATE_PLACEMENT_COMPARE is set:
//
//	KSTATE_PLACEMENT_COMPARE=1 go test -run '^TestPlacementComparison$' -timeout 60m ./pkg/placement/
//
// KSTATE_PLACEMENT_COMPARE_OUT names a file for the tables (default stdout).
func TestPlacementComparison(t *testing.T) {
	if os.Getenv("KSTATE_PLACEMENT_COMPARE") == "" {
		t.Skip("set KSTATE_PLACEMENT_COMPARE=1 (or run hack/bench-placement.sh) to run the comparison")
	}
	var w io.Writer = os.Stdout
	if path := os.Getenv("KSTATE_PLACEMENT_COMPARE_OUT"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			t.Fatalf("creating %s: %v", path, err)
		}
		defer f.Close()
		w = f
	}
	start := time.Now()
	fmt.Fprintf(w, "Machine: %s, %d cores (GOMAXPROCS %d), %s %s/%s.\n\n",
		cpuModel(), runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), runtime.GOOS, runtime.GOARCH)

	compareSlotTables(t, w)
	compareRouters(t, w)
	sweepKstate(t, w)
	scaleSteps(t, w)
	fmt.Fprintf(w, "Total time of the comparison: %s.\n", time.Since(start).Round(time.Second))
}

// movement is the result of joins and leaves over random member sets.
type movement struct {
	balance               float64 // worst max/avg
	joinMean, joinWorst   float64
	leaveMean, leaveWorst float64
	trials                int
}

// measure builds tables with build over trials random sets of n members and
// measures balance, and movement on the join of a new member and on the leave
// of a random one.
func measure(r *rand.Rand, build func([]string, int) []string, n, slots, trials int) movement {
	var m movement
	for i := 0; i < trials; i++ {
		members := podNames(r, n)
		before := build(members, slots)
		counts := map[string]int{}
		for _, o := range before {
			counts[o]++
		}
		most := 0
		for _, c := range counts {
			most = max(most, c)
		}
		m.balance = max(m.balance, float64(most)*float64(n)/float64(slots))

		after := build(append(slices.Clone(members), newPodName(r, members)), slots)
		j := float64(differ(before, after)) * float64(n+1) / float64(slots)
		m.joinMean += j / float64(trials)
		m.joinWorst = max(m.joinWorst, j)

		if n > 1 {
			leaver := members[r.Intn(n)]
			rest := slices.DeleteFunc(slices.Clone(members), func(x string) bool { return x == leaver })
			after := build(rest, slots)
			l := 0.0
			if counts[leaver] > 0 {
				l = float64(differ(before, after)) / float64(counts[leaver])
			}
			m.leaveMean += l / float64(trials)
			m.leaveWorst = max(m.leaveWorst, l)
		}
	}
	m.trials = trials
	return m
}

func differ(a, b []string) int {
	d := 0
	for i := range a {
		if a[i] != b[i] {
			d++
		}
	}
	return d
}

func trialsFor(n int) int {
	if n >= 1000 {
		return 3
	}
	return 10
}

func compareSlotTables(t *testing.T, w io.Writer) {
	fmt.Fprintf(w, "### Slot tables over %d slots\n\n", DefaultSlots)
	fmt.Fprintf(w, "Each library assigns the same %d slots; a key lookup is then SlotOf plus an index for all of them. "+
		"Balance is the worst max/avg slots per member; movement is slots that changed owner relative to the ideal "+
		"(S/(N+1) on a join, the leaver's slots on a leave), mean and worst over random member sets "+
		"(%d per N, %d at N = 1000). Rebuild is the time to compute the whole table.\n\n", DefaultSlots, trialsFor(1), trialsFor(1000))
	fmt.Fprintln(w, "| algorithm | N | max/avg | join moved/ideal (mean, worst) | leave moved/ideal (mean, worst) | rebuild |")
	fmt.Fprintln(w, "| --- | ---: | ---: | ---: | ---: | ---: |")
	for _, a := range slotAlgorithms() {
		for _, n := range benchSizes {
			r := rand.New(rand.NewSource(int64(n)))
			m := measure(r, a.slotTable, n, DefaultSlots, trialsFor(n))
			members := podNames(r, n)
			rebuild := testing.Benchmark(func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					a.slotTable(members, DefaultSlots)
				}
			})
			fmt.Fprintf(w, "| %s | %d | %.3f | %.3f, %.3f | %.3f, %.3f | %s |\n",
				a.name, n, m.balance, m.joinMean, m.joinWorst, m.leaveMean, m.leaveWorst, duration(rebuild.NsPerOp()))
		}
		t.Logf("slot tables: %s done", a.name)
	}
	fmt.Fprintln(w)
}

func compareRouters(t *testing.T, w io.Writer) {
	fmt.Fprintln(w, "### Key -> pod lookups and rebuilds, each library in its native form")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| lookup | N | key -> pod | rebuild |")
	fmt.Fprintln(w, "| --- | ---: | ---: | ---: |")
	keys := benchKeys()
	for _, rt := range routers() {
		for _, n := range benchSizes {
			members := podNames(rand.New(rand.NewSource(1)), n)
			lookup := rt.build(members)
			lk := testing.Benchmark(func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					sink = lookup(keys[i%len(keys)])
				}
			})
			rb := testing.Benchmark(func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					rt.build(members)
				}
			})
			fmt.Fprintf(w, "| %s | %d | %.1f ns | %s |\n", rt.name, n, float64(lk.T.Nanoseconds())/float64(lk.N), duration(rb.NsPerOp()))
		}
		t.Logf("routers: %s done", rt.name)
	}
	fmt.Fprintln(w)
}

// sweepKstate shows what the slot count and the load bound buy: the worst
// movement over every N in 1..100.
func sweepKstate(t *testing.T, w io.Writer) {
	fmt.Fprintln(w, "### kstate placement by slot count and load bound, every N in 1..100")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Worst over N = 1..100 (2 random member sets per N); \"1.1x holds up to N\" is the largest N below which every join and leave moved at most 1.1x the ideal.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| slots | load bound | worst max/avg | join moved/ideal (mean, worst) | leave moved/ideal (mean, worst) | 1.1x holds up to N | rebuild N=100 | rebuild N=1000 |")
	fmt.Fprintln(w, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	type config struct{ slots, percent int }
	for _, c := range []config{{DefaultSlots, 105}, {DefaultSlots, 125}, {16384, 105}, {MaxSlots, 105}} {
		build := kstateTable(c.percent)
		r := rand.New(rand.NewSource(int64(c.slots + c.percent)))
		var agg movement
		holdsUpTo, broken := 0, false
		count := 0
		for n := 1; n <= 100; n++ {
			m := measure(r, build, n, c.slots, 2)
			agg.balance = max(agg.balance, m.balance)
			agg.joinWorst = max(agg.joinWorst, m.joinWorst)
			agg.leaveWorst = max(agg.leaveWorst, m.leaveWorst)
			agg.joinMean += m.joinMean
			if n > 1 {
				agg.leaveMean += m.leaveMean
				count++
			}
			if !broken && max(m.joinWorst, m.leaveWorst) <= 1.1 {
				holdsUpTo = n
			} else {
				broken = true
			}
		}
		agg.joinMean /= 100
		agg.leaveMean /= float64(count)
		var rebuild [2]string
		for i, n := range []int{100, 1000} {
			members := podNames(r, n)
			res := testing.Benchmark(func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					build(members, c.slots)
				}
			})
			rebuild[i] = duration(res.NsPerOp())
		}
		fmt.Fprintf(w, "| %d | %.2f | %.4f | %.3f, %.3f | %.3f, %.3f | %d | %s | %s |\n",
			c.slots, float64(c.percent)/100, agg.balance, agg.joinMean, agg.joinWorst, agg.leaveMean, agg.leaveWorst, holdsUpTo, rebuild[0], rebuild[1])
		t.Logf("sweep: %d slots, bound %d%% done", c.slots, c.percent)
	}
	fmt.Fprintln(w)
}

// scaleSteps measures scale events of more than one pod, which is how
// Knative's autoscaler usually scales: the cascade of a single join is
// spread over more moved slots when several pods join at once.
func scaleSteps(t *testing.T, w io.Writer) {
	fmt.Fprintln(w, "### kstate placement, several pods joining at once (4096 slots)")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Slots that changed owner divided by the ideal S*k/(N+k), over 6 random member sets per step.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| N -> N+k | moved/ideal (mean, worst) |")
	fmt.Fprintln(w, "| --- | ---: |")
	r := rand.New(rand.NewSource(7))
	const trials = 6
	for _, step := range [][2]int{{10, 11}, {10, 12}, {10, 20}, {50, 51}, {50, 55}, {50, 75}, {100, 101}, {100, 105}, {100, 110}, {100, 150}} {
		from, to := step[0], step[1]
		var mean, worst float64
		for range trials {
			members := podNames(r, from)
			grown := slices.Clone(members)
			for len(grown) < to {
				grown = append(grown, newPodName(r, grown))
			}
			moved := Moved(mustNew(t, members, DefaultSlots), mustNew(t, grown, DefaultSlots))
			ratio := float64(len(moved)) * float64(to) / float64(DefaultSlots*(to-from))
			mean += ratio / trials
			worst = max(worst, ratio)
		}
		fmt.Fprintf(w, "| %d -> %d | %.3f, %.3f |\n", from, to, mean, worst)
	}
	fmt.Fprintln(w)
}

func duration(ns int64) string {
	d := time.Duration(ns)
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.1f µs", float64(d)/float64(time.Microsecond))
	}
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}
