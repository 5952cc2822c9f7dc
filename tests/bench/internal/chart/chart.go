// Package chart draws the benchmark's PNG charts with the standard image
// packages: grouped bars or lines over categories, value axes with round
// ticks (linear or logarithmic), goal lines and a legend. Text uses the 7×13
// bitmap face of golang.org/x/image/font/basicfont.
package chart

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"
	"strconv"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// Kind is how a panel draws its series.
type Kind int

// Panel kinds.
const (
	Bars Kind = iota
	Lines
)

// Series is one named row of values, one per category; NaN leaves a gap.
type Series struct {
	Name   string
	Values []float64
}

// Goal is a horizontal reference line, e.g. a target.
type Goal struct {
	Value float64
	Label string
}

// Panel is one chart.
type Panel struct {
	Title      string
	YLabel     string
	Categories []string // x axis, left to right
	Series     []Series
	Kind       Kind
	LogY       bool // logarithmic value axis (values must be > 0)
	Goals      []Goal
}

// Palette colours series in order.
var Palette = []color.RGBA{
	{0x1f, 0x77, 0xb4, 0xff}, // blue
	{0xff, 0x7f, 0x0e, 0xff}, // orange
	{0x2c, 0xa0, 0x2c, 0xff}, // green
	{0x94, 0x67, 0xbd, 0xff}, // purple
	{0x8c, 0x56, 0x4b, 0xff}, // brown
	{0x7f, 0x7f, 0x7f, 0xff}, // grey
}

var (
	black = color.RGBA{0x20, 0x20, 0x20, 0xff}
	grid  = color.RGBA{0xe4, 0xe4, 0xe4, 0xff}
	goalC = color.RGBA{0xd6, 0x27, 0x28, 0xff}
	face  = basicfont.Face7x13
)

const (
	charW = 7
	lineH = 13
)

// Render draws panels in a grid of cols columns, each panelW × panelH
// pixels, under an overall title, and writes the PNG to w.
func Render(w io.Writer, title string, cols, panelW, panelH int, panels ...Panel) error {
	if cols < 1 || len(panels) == 0 {
		return fmt.Errorf("chart: nothing to draw")
	}
	rows := (len(panels) + cols - 1) / cols
	top := 28
	img := image.NewRGBA(image.Rect(0, 0, cols*panelW, top+rows*panelH))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	text(img, (img.Bounds().Dx()-len(title)*charW)/2, 19, title, black)
	for i, p := range panels {
		x0, y0 := (i%cols)*panelW, top+(i/cols)*panelH
		if err := p.draw(img, image.Rect(x0, y0, x0+panelW, y0+panelH)); err != nil {
			return fmt.Errorf("chart: panel %q: %w", p.Title, err)
		}
	}
	return png.Encode(w, img)
}

func (p Panel) draw(img *image.RGBA, r image.Rectangle) error {
	// Plot area inside the panel: room for the title, the y labels, the
	// categories and the legend, which wraps to as many lines as it needs.
	left, right := r.Min.X+62, r.Max.X-16
	legend := p.legendLines(right - left)
	plot := image.Rect(left, r.Min.Y+42, right, r.Max.Y-32-18*len(legend))
	text(img, r.Min.X+(r.Dx()-len(p.Title)*charW)/2, r.Min.Y+16, p.Title, black)

	lo, hi, ticks, err := p.axis()
	if err != nil {
		return err
	}
	y := func(v float64) int {
		f := (v - lo) / (hi - lo)
		if p.LogY {
			f = (math.Log10(v) - math.Log10(lo)) / (math.Log10(hi) - math.Log10(lo))
		}
		return plot.Max.Y - int(math.Round(f*float64(plot.Dy())))
	}
	for _, t := range ticks {
		ty := y(t)
		hline(img, plot.Min.X, plot.Max.X, ty, grid)
		l := format(t)
		text(img, plot.Min.X-6-len(l)*charW, ty+4, l, black)
	}
	// Y label, written above the axis.
	text(img, r.Min.X+4, plot.Min.Y-14, p.YLabel, black)
	hline(img, plot.Min.X, plot.Max.X, plot.Max.Y, black)
	vline(img, plot.Min.X, plot.Min.Y, plot.Max.Y, black)

	n := len(p.Categories)
	slot := float64(plot.Dx()) / float64(max(n, 1))
	cx := func(i int) int { return plot.Min.X + int((float64(i)+0.5)*slot) }
	for i, c := range p.Categories {
		text(img, cx(i)-len(c)*charW/2, plot.Max.Y+16, c, black)
	}

	switch p.Kind {
	case Bars:
		groupW := slot * 0.8
		barW := groupW / float64(max(len(p.Series), 1))
		for si, s := range p.Series {
			col := Palette[si%len(Palette)]
			for i, v := range s.Values {
				if i >= n || math.IsNaN(v) {
					continue
				}
				x0 := plot.Min.X + int(float64(i)*slot+slot*0.1+float64(si)*barW)
				x1 := x0 + int(math.Max(barW-2, 1))
				base := plot.Max.Y
				if p.LogY {
					base = y(lo)
				}
				top := y(math.Max(v, lo))
				draw.Draw(img, image.Rect(x0, top, x1, base), image.NewUniform(col), image.Point{}, draw.Src)
				l := format(v)
				text(img, (x0+x1)/2-len(l)*charW/2, top-3, l, black)
			}
		}
	case Lines:
		for si, s := range p.Series {
			col := Palette[si%len(Palette)]
			prev := image.Point{-1, -1}
			for i, v := range s.Values {
				if i >= n || math.IsNaN(v) || (p.LogY && v <= 0) {
					prev = image.Point{-1, -1}
					continue
				}
				pt := image.Pt(cx(i), y(math.Max(math.Min(v, hi), lo)))
				if prev.X >= 0 {
					line(img, prev, pt, col)
				}
				square(img, pt, 3, col)
				prev = pt
			}
		}
	}
	for _, g := range p.Goals {
		if g.Value < lo || g.Value > hi {
			continue
		}
		gy := y(g.Value)
		for x := plot.Min.X; x < plot.Max.X; x += 8 {
			hline(img, x, min(x+4, plot.Max.X), gy, goalC)
			hline(img, x, min(x+4, plot.Max.X), gy+1, goalC)
		}
		text(img, plot.Max.X-len(g.Label)*charW-2, gy-4, g.Label, goalC)
	}
	// Legend under the categories.
	for li, entries := range legend {
		lx, ly := plot.Min.X, plot.Max.Y+38+18*li
		for _, si := range entries {
			col := Palette[si%len(Palette)]
			name := p.Series[si].Name
			draw.Draw(img, image.Rect(lx, ly-9, lx+10, ly+1), image.NewUniform(col), image.Point{}, draw.Src)
			text(img, lx+14, ly, name, black)
			lx += legendWidth(name)
		}
	}
	return nil
}

func legendWidth(name string) int { return 14 + len(name)*charW + 16 }

// legendLines splits the series into legend lines that fit width.
func (p Panel) legendLines(width int) [][]int {
	var lines [][]int
	var line []int
	used := 0
	for si, s := range p.Series {
		w := legendWidth(s.Name)
		if len(line) > 0 && used+w > width {
			lines = append(lines, line)
			line, used = nil, 0
		}
		line = append(line, si)
		used += w
	}
	if len(line) > 0 {
		lines = append(lines, line)
	}
	return lines
}

// axis returns the value range and its ticks.
func (p Panel) axis() (lo, hi float64, ticks []float64, err error) {
	vmax, vmin := math.Inf(-1), math.Inf(1)
	for _, s := range p.Series {
		for _, v := range s.Values {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				continue
			}
			vmax, vmin = math.Max(vmax, v), math.Min(vmin, v)
		}
	}
	for _, g := range p.Goals {
		vmax = math.Max(vmax, g.Value)
	}
	if math.IsInf(vmax, -1) {
		return 0, 1, []float64{0, 1}, nil
	}
	if p.LogY {
		if vmin <= 0 {
			return 0, 0, nil, fmt.Errorf("logarithmic axis with a value ≤ 0")
		}
		lo = math.Pow(10, math.Floor(math.Log10(vmin)))
		hi = math.Pow(10, math.Ceil(math.Log10(vmax*1.15)))
		for t := lo; t <= hi*1.0001; t *= 10 {
			ticks = append(ticks, t)
		}
		return lo, hi, ticks, nil
	}
	vmax *= 1.12 // headroom for bar labels
	if vmax <= 0 {
		vmax = 1
	}
	step := niceStep(vmax / 5)
	hi = math.Ceil(vmax/step) * step
	for t := 0.0; t <= hi+step/2; t += step {
		ticks = append(ticks, t)
	}
	return 0, hi, ticks, nil
}

// niceStep rounds x up to 1, 2 or 5 times a power of ten.
func niceStep(x float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= x {
			return m * p
		}
	}
	return 10 * p
}

// format prints a value compactly: 1500, 12.5, 0.25, 2k for thousands.
func format(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 10000 && math.Mod(a, 1000) == 0:
		return strconv.FormatFloat(v/1000, 'f', -1, 64) + "k"
	case a >= 100:
		return strconv.FormatFloat(math.Round(v), 'f', -1, 64)
	case a >= 10:
		return strconv.FormatFloat(math.Round(v*10)/10, 'f', -1, 64)
	default:
		return strconv.FormatFloat(math.Round(v*100)/100, 'f', -1, 64)
	}
}

func text(img *image.RGBA, x, y int, s string, c color.Color) {
	d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: face, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

func hline(img *image.RGBA, x0, x1, y int, c color.RGBA) {
	for x := x0; x <= x1; x++ {
		img.SetRGBA(x, y, c)
	}
}

func vline(img *image.RGBA, x, y0, y1 int, c color.RGBA) {
	for y := y0; y <= y1; y++ {
		img.SetRGBA(x, y, c)
	}
}

func square(img *image.RGBA, p image.Point, r int, c color.RGBA) {
	draw.Draw(img, image.Rect(p.X-r, p.Y-r, p.X+r+1, p.Y+r+1), image.NewUniform(c), image.Point{}, draw.Src)
}

// line draws a 2-pixel line from a to b (Bresenham).
func line(img *image.RGBA, a, b image.Point, c color.RGBA) {
	dx, dy := abs(b.X-a.X), -abs(b.Y-a.Y)
	sx, sy := sign(b.X-a.X), sign(b.Y-a.Y)
	e := dx + dy
	for {
		img.SetRGBA(a.X, a.Y, c)
		img.SetRGBA(a.X, a.Y+1, c)
		img.SetRGBA(a.X+1, a.Y, c)
		if a == b {
			return
		}
		e2 := 2 * e
		if e2 >= dy {
			e += dy
			a.X += sx
		}
		if e2 <= dx {
			e += dx
			a.Y += sy
		}
	}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

func sign(x int) int {
	switch {
	case x > 0:
		return 1
	case x < 0:
		return -1
	}
	return 0
}
