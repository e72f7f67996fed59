package main

import (
	"os"
	"path/filepath"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

type loadResult struct {
	Target   string        `json:"target"`
	Duration time.Duration `json:"duration_per_rate"`
	Stopped  string        `json:"stopped"`
	Points   []struct {
		Offered  float64 `json:"offered_rps"`
		Achieved float64 `json:"achieved_rps"`
		Sent     int     `json:"sent"`
		Failed   int     `json:"failed"`
		P50      float64 `json:"p50_ms"`
		P90      float64 `json:"p90_ms"`
		P99      float64 `json:"p99_ms"`
		Max      float64 `json:"max_ms"`
		LagP50   float64 `json:"lag_p50_ms"`
		LagP99   float64 `json:"lag_p99_ms"`
	} `json:"points"`
}

func drawLoad(ld *loadResult, file string) error {
	p := plot.New()
	p.Title.Text = "mp-hsm serve: cached-token latency against offered load (loopback, open loop)"
	p.Title.Padding = vg.Points(8)
	p.X.Label.Text = "offered load (requests per second)"
	p.Y.Label.Text = "latency (ms)"
	p.X.Scale, p.X.Tick.Marker = plot.LogScale{}, plot.LogTicks{Prec: -1}
	p.Y.Scale, p.Y.Tick.Marker = plot.LogScale{}, plot.LogTicks{Prec: -1}
	p.Legend.Top, p.Legend.Left = true, true
	p.Add(plotter.NewGrid())
	series := []struct {
		name string
		get  func(i int) float64
	}{
		{"p50", func(i int) float64 { return ld.Points[i].P50 }},
		{"p90", func(i int) float64 { return ld.Points[i].P90 }},
		{"p99", func(i int) float64 { return ld.Points[i].P99 }},
	}
	for si, s := range series {
		var xys plotter.XYs
		for i, pt := range ld.Points {
			if v := s.get(i); v > 0 {
				xys = append(xys, plotter.XY{X: pt.Offered, Y: v})
			}
		}
		l, sc, err := plotter.NewLinePoints(xys)
		if err != nil {
			return err
		}
		c := plotutil.Color(si)
		l.Color, sc.Color = c, c
		sc.Shape = draw.CircleGlyph{}
		p.Add(l, sc)
		p.Legend.Add(s.name, l, sc)
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	return p.Save(8*vg.Inch, 5*vg.Inch, file)
}
