package bench

import (
	"image/color"
	"math"
	"path/filepath"
	"testing"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// series is one set of requests on a latency-over-time plot, timed from
// start.
type series struct {
	name  string
	rs    []*vegeta.Result
	start time.Time
}

// marker is a vertical line at a moment of the run.
type marker struct {
	name string
	at   time.Duration // since the series' start
}

// plotLatency saves a PNG of every request's latency (log scale) against
// the time it was sent, with failed requests in red and markers as dashed
// vertical lines, to name in the output directory, and returns its path.
// The legend goes in the top left corner if legendLeft, else the top right.
func plotLatency(t *testing.T, name, title string, ss []series, marks []marker, legendLeft bool) string {
	t.Helper()
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "seconds since the load started (by send time)"
	p.Y.Label.Text = "latency, ms (log scale)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Legend.Top, p.Legend.Left = true, legendLeft
	lo, hi := math.Inf(1), math.Inf(-1)
	var bad plotter.XYs
	for i, s := range ss {
		xys := make(plotter.XYs, 0, len(s.rs))
		for _, r := range s.rs {
			xy := plotter.XY{X: r.Timestamp.Sub(s.start).Seconds(), Y: math.Max(float64(r.Latency)/float64(time.Millisecond), 0.01)}
			lo, hi = math.Min(lo, xy.Y), math.Max(hi, xy.Y)
			if failed(r) {
				bad = append(bad, xy)
				continue
			}
			xys = append(xys, xy)
		}
		if len(xys) == 0 {
			continue
		}
		sc, err := plotter.NewScatter(xys)
		if err != nil {
			t.Fatal(err)
		}
		sc.GlyphStyle.Radius = vg.Points(1.2)
		sc.GlyphStyle.Shape = draw.CircleGlyph{}
		sc.GlyphStyle.Color = plotutil.DarkColors[i%len(plotutil.DarkColors)]
		p.Add(sc)
		p.Legend.Add(s.name, sc)
	}
	if len(bad) > 0 {
		sc, err := plotter.NewScatter(bad)
		if err != nil {
			t.Fatal(err)
		}
		sc.GlyphStyle.Radius = vg.Points(2.5)
		sc.GlyphStyle.Shape = draw.CrossGlyph{}
		sc.GlyphStyle.Color = color.RGBA{R: 220, A: 255}
		p.Add(sc)
		p.Legend.Add("failed", sc)
	}
	if lo > hi {
		lo, hi = 0.1, 1
	}
	for i, m := range marks {
		l, err := plotter.NewLine(plotter.XYs{{X: m.at.Seconds(), Y: lo}, {X: m.at.Seconds(), Y: hi}})
		if err != nil {
			t.Fatal(err)
		}
		l.LineStyle.Color = plotutil.SoftColors[(i+3)%len(plotutil.SoftColors)]
		l.LineStyle.Width = vg.Points(1.5)
		l.LineStyle.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
		p.Add(l)
		p.Legend.Add(m.name, l)
	}
	path := filepath.Join(outDir(t), name)
	if err := p.Save(11*vg.Inch, 5*vg.Inch, path); err != nil {
		t.Fatalf("saving %s: %v", path, err)
	}
	return path
}
