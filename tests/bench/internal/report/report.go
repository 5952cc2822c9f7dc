// Package report renders benchmark results as docs/benchmarks.md, two PNG
// charts (docs/bench-throughput.png, docs/bench-concurrency.png) and a
// plain-text summary. Everything is derived from suite.Results, so the docs
// can be re-rendered from bench/results.json (scripts/bench --render).
package report

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/rtsptunnel/rtsptunnel/tests/bench/internal/chart"
	"github.com/rtsptunnel/rtsptunnel/tests/bench/internal/suite"
)

// File names inside the docs folder.
const (
	MarkdownFile    = "benchmarks.md"
	ThroughputChart = "bench-throughput.png"
	ConcurrencyPNG  = "bench-concurrency.png"
)

// Write renders benchmarks.md and the charts into dir. resultsRef names the
// JSON file in the text (a path relative to the repository).
func Write(r *suite.Results, dir, resultsRef string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var charts []string
	if len(r.Throughput) > 0 {
		if err := writeChart(filepath.Join(dir, ThroughputChart), throughputChart(r)); err != nil {
			return err
		}
		charts = append(charts, ThroughputChart)
	}
	if len(r.Concurrency) > 0 {
		if err := writeChart(filepath.Join(dir, ConcurrencyPNG), concurrencyChart(r)); err != nil {
			return err
		}
		charts = append(charts, ConcurrencyPNG)
	}
	path := filepath.Join(dir, MarkdownFile)
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	md := markdown(r, resultsRef, charts, keptFrom(string(old)))
	return os.WriteFile(path, []byte(md), 0o644)
}

func writeChart(path string, render func(*bytes.Buffer) error) error {
	var buf bytes.Buffer
	if err := render(&buf); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// Summary is the table of targets, for the terminal.
func Summary(r *suite.Results) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-50s %-34s %-30s %s\n", "target", "goal", "measured", "met")
	for _, t := range r.Targets {
		fmt.Fprintf(&b, "%-50s %-34s %-30s %s\n", t.Name, t.Goal, t.Measured, yesNo(t.Met))
	}
	for _, n := range r.Meta.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	return b.String()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func throughputChart(r *suite.Results) func(*bytes.Buffer) error {
	paths := []string{"raw", "tlsfwd", "chisel", "rtsptunnel"}
	names := map[string]string{"raw": "raw TCP", "tlsfwd": "reference (tlsfwd)", "chisel": "chisel " + r.Meta.ChiselVersion, "rtsptunnel": "rtsptunnel"}
	var series []chart.Series
	for _, p := range paths {
		if math.IsNaN(throughput(r, p, "down")) {
			continue // not in older results
		}
		s := chart.Series{Name: names[p]}
		for _, dir := range []string{"down", "up"} {
			s.Values = append(s.Values, throughput(r, p, dir))
		}
		series = append(series, s)
	}
	p := chart.Panel{
		Title: "One connection, loopback, median of rounds", YLabel: "MB/s",
		Categories: []string{"camera -> player (down)", "player -> camera (up)"},
		Series:     series, Kind: chart.Bars,
	}
	return func(b *bytes.Buffer) error {
		return chart.Render(b, "Single-tunnel throughput ("+r.Meta.Started.Format("2006-01-02")+", "+strconv.Itoa(r.Meta.Cores)+" cores)", 1, 720, 380, p)
	}
}

func throughput(r *suite.Results, path, dir string) float64 {
	for _, t := range r.Throughput {
		if t.Path == path && t.Direction == dir {
			return t.MBps
		}
	}
	return math.NaN()
}

// series groups concurrency steps by their camera traffic, in run order.
func series(r *suite.Results) (names []string, steps map[string][]suite.ConcurrencyResult) {
	steps = map[string][]suite.ConcurrencyResult{}
	for _, c := range r.Concurrency {
		n := suite.SeriesName(c)
		if _, ok := steps[n]; !ok {
			names = append(names, n)
		}
		steps[n] = append(steps[n], c)
	}
	return names, steps
}

func concurrencyChart(r *suite.Results) func(*bytes.Buffer) error {
	names, steps := series(r)
	// Categories: every tunnel count of any series, ascending.
	seen := map[int]bool{}
	var counts []int
	for _, c := range r.Concurrency {
		if !seen[c.Tunnels] {
			seen[c.Tunnels] = true
			counts = append(counts, c.Tunnels)
		}
	}
	sort.Ints(counts)
	cats := make([]string, len(counts))
	for i, n := range counts {
		cats[i] = strconv.Itoa(n)
	}
	col := func(name string, f func(suite.ConcurrencyResult) float64) []float64 {
		v := make([]float64, len(counts))
		for i := range v {
			v[i] = math.NaN()
		}
		for _, c := range steps[name] {
			for i, n := range counts {
				if n == c.Tunnels {
					v[i] = f(c)
				}
			}
		}
		return v
	}
	short := func(name string) string {
		return strings.NewReplacer("a writev per frame", "writev", "a write per packet", "write",
			"every packet paced", "packet-paced", ", module with ", " ").Replace(name)
	}
	var total, slowest, cpu, rss []chart.Series
	for i, n := range names {
		total = append(total, chart.Series{Name: short(n), Values: col(n, func(c suite.ConcurrencyResult) float64 {
			return c.MeanBps * float64(c.Tunnels) / 1e6
		})})
		slowest = append(slowest, chart.Series{Name: short(n), Values: col(n, func(c suite.ConcurrencyResult) float64 { return c.MinBps / 1e6 })})
		cpu = append(cpu, chart.Series{Name: "module " + short(n), Values: col(n, func(c suite.ConcurrencyResult) float64 { return c.Module.CPU })})
		rss = append(rss, chart.Series{Name: "module " + short(n), Values: col(n, func(c suite.ConcurrencyResult) float64 { return float64(c.Module.RSSMax) / (1 << 20) })})
		if i == 0 { // the relay is not the subject: its first series only
			cpu = append(cpu, chart.Series{Name: "relay " + short(n), Values: col(n, func(c suite.ConcurrencyResult) float64 { return c.Relay.CPU })})
			rss = append(rss, chart.Series{Name: "relay " + short(n), Values: col(n, func(c suite.ConcurrencyResult) float64 { return float64(c.Relay.RSSMax) / (1 << 20) })})
		}
	}
	target := 1.5
	if len(r.Concurrency) > 0 {
		target = r.Concurrency[0].TargetBps / 1e6
	}
	panels := []chart.Panel{
		{Title: "Delivered, all tunnels together", YLabel: "Mbit/s", Categories: cats, Series: total, Kind: chart.Lines, LogY: allPositive(total)},
		{Title: "Delivered by the slowest tunnel", YLabel: "Mbit/s", Categories: cats, Series: slowest, Kind: chart.Lines,
			Goals: []chart.Goal{{Value: target, Label: "stream rate"}}},
		{Title: "CPU", YLabel: "% of one core", Categories: cats, Series: cpu, Kind: chart.Lines,
			Goals: []chart.Goal{{Value: 60, Label: "module goal 60%"}}},
		{Title: "Resident memory (max in window)", YLabel: "MiB", Categories: cats, Series: rss, Kind: chart.Lines,
			Goals: []chart.Goal{{Value: 150, Label: "module goal 150 MiB"}}},
	}
	title := fmt.Sprintf("Concurrent %.1f Mbit/s tunnels (player -> relay == wss ==> module -> camera), x = tunnels; series = camera writes", target)
	return func(b *bytes.Buffer) error { return chart.Render(b, title, 2, 600, 400, panels...) }
}

func allPositive(ss []chart.Series) bool {
	for _, s := range ss {
		for _, v := range s.Values {
			if !math.IsNaN(v) && v <= 0 {
				return false
			}
		}
	}
	return true
}

// Formatting helpers.

func mb(v float64) string   { return fmt.Sprintf("%.0f", v) }
func mib(b int64) string    { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }
func kib(b float64) string  { return fmt.Sprintf("%.0f", b/1024) }
func pct(v float64) string  { return fmt.Sprintf("%.0f%%", v) }
func pct1(v float64) string { return fmt.Sprintf("%.1f%%", v) }
func ms(v float64) string {
	if v < 1 {
		return fmt.Sprintf("%.3f", v)
	}
	return fmt.Sprintf("%.1f", v)
}
func mbit(bps float64) string { return fmt.Sprintf("%.3f", bps/1e6) }
func dur(d time.Duration) string {
	if d >= time.Second {
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Millisecond).String()
}
