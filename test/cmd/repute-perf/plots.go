package main

import (
	"fmt"
	"math"
	"strings"
)

// The plots are plain SVG written here: no plotting dependency, and the files diff as text.

const (
	plotW, plotH                         = 720, 360
	marginL, marginR, marginT, marginB   = 70, 20, 40, 70
	innerW, innerH                       = plotW - marginL - marginR, plotH - marginT - marginB
	defaultColor, reputeColor, thirdTint = "#4c72b0", "#dd8452", "#55a868"
)

var palette = []string{defaultColor, reputeColor, thirdTint, "#c44e52", "#8172b3", "#937860"}

type svg struct{ strings.Builder }

func newSVG(title string) *svg {
	s := &svg{}
	fmt.Fprintf(s, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", plotW, plotH, plotW, plotH)
	fmt.Fprintf(s, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(s, `<text x="%d" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", marginL, escape(title))
	return s
}

func (s *svg) text(x, y float64, anchor, text string) {
	fmt.Fprintf(s, `<text x="%.1f" y="%.1f" text-anchor="%s">%s</text>`+"\n", x, y, anchor, escape(text))
}

func (s *svg) line(x1, y1, x2, y2 float64, color string, width float64) {
	fmt.Fprintf(s, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="%.1f"/>`+"\n", x1, y1, x2, y2, color, width)
}

func (s *svg) rect(x, y, w, h float64, color string) {
	fmt.Fprintf(s, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`+"\n", x, y, w, h, color)
}

// axes draws the y axis from 0 to top with gridlines, and returns the value → y mapping.
func (s *svg) axes(top float64, yLabel string) func(float64) float64 {
	y := func(v float64) float64 { return marginT + innerH - v/top*innerH }
	for i := 0; i <= 5; i++ {
		v := top * float64(i) / 5
		s.line(marginL, y(v), marginL+innerW, y(v), "#e5e5e5", 1)
		s.text(marginL-6, y(v)+4, "end", trimFloat(v))
	}
	s.line(marginL, marginT, marginL, marginT+innerH, "#333", 1)
	s.line(marginL, marginT+innerH, marginL+innerW, marginT+innerH, "#333", 1)
	fmt.Fprintf(s, `<text transform="translate(16,%d) rotate(-90)" text-anchor="middle">%s</text>`+"\n", marginT+innerH/2, escape(yLabel))
	return y
}

func (s *svg) legend(names []string) {
	for i, n := range names {
		x := float64(marginL + 10 + i*150)
		s.rect(x, plotH-22, 12, 12, palette[i%len(palette)])
		s.text(x+18, plotH-12, "start", n)
	}
}

func (s *svg) done() string { s.WriteString("</svg>\n"); return s.String() }

// niceTop rounds a maximum up to 1, 2 or 5 times a power of ten.
func niceTop(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func trimFloat(v float64) string {
	s := fmt.Sprintf("%.2f", v)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s
}

func escape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// barChart draws groups of bars, one per series; values[g][s] < 0 means no value.
func barChart(title, yLabel string, groups, series []string, values [][]float64) string {
	top := 0.0
	for _, g := range values {
		for _, v := range g {
			top = math.Max(top, v)
		}
	}
	s := newSVG(title)
	y := s.axes(niceTop(top), yLabel)
	groupW := float64(innerW) / float64(max(len(groups), 1))
	barW := groupW * 0.8 / float64(max(len(series), 1))
	for gi, g := range groups {
		x0 := marginL + float64(gi)*groupW + groupW*0.1
		for si := range series {
			if v := values[gi][si]; v >= 0 {
				s.rect(x0+float64(si)*barW, y(v), barW-2, marginT+innerH-y(v), palette[si%len(palette)])
			}
		}
		s.text(x0+groupW*0.4, marginT+innerH+16, "middle", g)
	}
	s.legend(series)
	return s.done()
}

// throughputPlot is SchedulingThroughput against nodes for SchedulingBasic: each profile's
// median, with min–max whiskers.
func throughputPlot(cases []*caseResult) string {
	var basic []*caseResult
	for _, c := range cases {
		if strings.HasPrefix(c.name, "SchedulingBasic/") {
			basic = append(basic, c)
		}
	}
	top := 0.0
	for _, c := range basic {
		for _, vs := range c.throughput {
			top = math.Max(top, spreadOf(vs).max)
		}
	}
	s := newSVG("SchedulingBasic: throughput against nodes (median, min–max)")
	y := s.axes(niceTop(top), "pods/s")
	step := float64(innerW) / float64(max(len(basic), 1))
	for pi, profile := range []string{"Default", "Repute"} {
		color := palette[pi]
		var prev [2]float64
		for i, c := range basic {
			sp := spreadOf(c.throughput[profile])
			x := marginL + step*(float64(i)+0.5) + float64(pi*8-4)
			s.line(x, y(sp.min), x, y(sp.max), color, 1.5)
			fmt.Fprintf(s, `<circle cx="%.1f" cy="%.1f" r="4" fill="%s"/>`+"\n", x, y(sp.med), color)
			if i > 0 {
				s.line(prev[0], prev[1], x, y(sp.med), color, 2)
			}
			prev = [2]float64{x, y(sp.med)}
		}
	}
	for i, c := range basic {
		s.text(marginL+step*(float64(i)+0.5), marginT+innerH+16, "middle", strings.TrimPrefix(c.name, "SchedulingBasic/"))
	}
	s.legend([]string{"Default", "Repute"})
	return s.done()
}

// latencyPlot is the pod scheduling latency's p50 and p99 per case and profile.
func latencyPlot(cases []*caseResult) string {
	series := []string{"Default p50", "Repute p50", "Default p99", "Repute p99"}
	var groups []string
	var values [][]float64
	for _, c := range cases {
		row := make([]float64, len(series))
		for i, sq := range [][2]string{{"Default", "Perc50"}, {"Repute", "Perc50"}, {"Default", "Perc99"}, {"Repute", "Perc99"}} {
			v, ok := medianOf(c, sq[0], func(r Run) (float64, bool) { v, ok := r.Latency[sq[1]]; return v, ok })
			row[i] = map[bool]float64{true: v, false: -1}[ok]
		}
		groups, values = append(groups, shortCase(c.name)), append(values, row)
	}
	return barChart("Pod scheduling latency (median of runs)", "ms", groups, series, values)
}

// verdictPlot is what a first-seen image costs: evaluation, queue wait, and the pod's latency.
func verdictPlot(cases []*caseResult) string {
	series := []string{"evaluation", "queue wait", "pod latency (Default)", "pod latency (Repute)"}
	var groups []string
	var values [][]float64
	for _, c := range cases {
		if !strings.HasPrefix(c.name, "FirstSeenImages") {
			continue
		}
		for _, q := range []string{"Perc50", "Perc99"} {
			get := func(profile string, m func(Run) map[string]float64) float64 {
				v, ok := medianOf(c, profile, func(r Run) (float64, bool) { v, ok := m(r)[q]; return v, ok })
				return map[bool]float64{true: v, false: -1}[ok]
			}
			values = append(values, []float64{
				get("Repute", func(r Run) map[string]float64 { return r.Evaluation }),
				get("Repute", func(r Run) map[string]float64 { return r.EvaluationQueue }),
				get("Default", func(r Run) map[string]float64 { return r.Latency }),
				get("Repute", func(r Run) map[string]float64 { return r.Latency }),
			})
			groups = append(groups, shortCase(c.name)+" "+strings.Replace(q, "Perc", "p", 1))
		}
	}
	return barChart("First-seen images: time to verdict and pod latency", "ms", groups, series, values)
}

func shortCase(c string) string {
	return strings.NewReplacer("SchedulingBasic/", "Basic ", "MixedTiers/", "Mixed ", "FirstSeenImages/", "FirstSeen ", "Nodes_10000Pods", "n/10k", "Nodes", "n").Replace(c)
}
