package suite

import "fmt"

// evaluate compares the results with the targets.
func evaluate(r *Results) []Target {
	var t []Target
	add := func(name, goal, measured string, met bool) {
		t = append(t, Target{Name: name, Goal: goal, Measured: measured, Met: met})
	}
	for _, dir := range []string{"down", "up"} {
		// The reference tunnel's own ratio says what the path's shape allows.
		ref := func(format string, v float64, ok bool) string {
			if !ok {
				return ""
			}
			return fmt.Sprintf(" (reference tunnel: "+format+")", v)
		}
		fwd, hasFwd := r.Ratios["tlsfwdVsRaw_"+dir]
		chisel, hasChisel := r.Ratios["chiselVsRaw_"+dir]
		if v, ok := r.Ratios["rtsptunnelVsChisel_"+dir]; ok {
			add("throughput vs chisel ("+dir+")", "≥ 4×", fmt.Sprintf("%.2f×", v)+ref("%.2f×", fwd/chisel, hasFwd && hasChisel && chisel > 0), v >= 4)
		}
		if v, ok := r.Ratios["rtsptunnelVsRaw_"+dir]; ok {
			add("throughput vs raw TCP ("+dir+")", "≥ 40%", fmt.Sprintf("%.0f%%", 100*v)+ref("%.0f%%", 100*fwd, hasFwd), v >= 0.40)
		}
	}
	for _, c := range r.Concurrency {
		if c.Tunnels != 1000 {
			continue
		}
		what := fmt.Sprintf("1000 tunnels, %s", SeriesName(c))
		add(what+": full rate", "every tunnel ≥ 99% of 1.5 Mbit/s",
			fmt.Sprintf("%d/%d (min %.3f Mbit/s)", c.AtFullRate, c.Tunnels, c.MinBps/1e6), c.AtFullRate == c.Tunnels)
		add(what+": module CPU", "< 60% of one core", fmt.Sprintf("%.1f%%", c.Module.CPU), c.Module.CPU < 60)
		add(what+": module RSS", "< 150 MiB", fmt.Sprintf("%.1f MiB", mib(c.Module.RSSMax)), mib(c.Module.RSSMax) < 150)
	}
	if o := r.OpenLatency; o != nil && o.FirstByte.N > 0 {
		add("open latency p50", "≤ 15 ms", fmt.Sprintf("%.1f ms", o.FirstByte.P50), o.FirstByte.P50 <= 15)
		add("open latency p99", "≤ 50 ms", fmt.Sprintf("%.1f ms", o.FirstByte.P99), o.FirstByte.P99 <= 50)
		add("sustained opens", "≥ 200/s", fmt.Sprintf("%.0f/s", o.Sustained.PerSec), o.Sustained.PerSec >= 200)
	}
	if a := r.AddedLatency; a != nil {
		m := fmt.Sprintf("%.3f ms", a.AddedP99)
		if a.TLSFwd.N > 0 {
			m += fmt.Sprintf(" (reference tunnel: %.3f ms)", a.TLSFwdP99)
		}
		add("added round trip p99", "≤ 1 ms", m, a.AddedP99 <= 1)
	}
	if f := r.Fanout; f != nil {
		if j := f.Join; j != nil && j.FirstPacket.N > 0 {
			m := fmt.Sprintf("%.1f ms", j.FirstPacket.P50)
			if l := f.JoinLoaded; l != nil && l.FirstPacket.N > 0 {
				m += fmt.Sprintf(" (%d watching: %.1f ms)", l.Viewers, l.FirstPacket.P50)
			}
			add("fan-out: join p50 (to the first RTP packet)", "≤ 50 ms", m, j.FirstPacket.P50 <= 50)
		}
		if n := len(f.Steps); n > 1 && f.Steps[0].EdgeBps > 0 {
			first, last := f.Steps[0], f.Steps[n-1]
			ratio := last.EdgeBps / first.EdgeBps
			add(fmt.Sprintf("fan-out: edge bytes at N=%d", last.Players), fmt.Sprintf("≤ 1.2 × N=%d", first.Players),
				fmt.Sprintf("%.2f× (%.1f vs %.1f KB/s)", ratio, last.EdgeBps/1e3, first.EdgeBps/1e3), ratio <= 1.2)
		}
		if len(f.Steps) > 0 {
			add("fan-out: one tunnel for every viewer", "1 tunnel, 0 later tunnelOpen",
				fmt.Sprintf("%v tunnel(s), %v later tunnelOpen", max(f.RelayTunnelsMax, f.ModuleTunnelsMax), f.MethodCalls), f.OneTunnel())
		}
	}
	return t
}

// SeriesName names a concurrency step's camera traffic.
func SeriesName(c ConcurrencyResult) string {
	var s string
	switch {
	case c.Pacing == "packet":
		s = "every packet paced"
	case c.Writev:
		s = "a writev per frame"
	default:
		s = "a write per packet"
	}
	switch c.ModuleEnv {
	case "":
	case DefaultProcsEnv:
		s += ", module with Go's default GOMAXPROCS"
	default:
		s += ", module with " + c.ModuleEnv
	}
	return s
}

// DefaultProcsEnv is the module environment of the comparison step: an empty
// GOMAXPROCS overrides the image's GOMAXPROCS=1 with Go's default (one P per
// core).
const DefaultProcsEnv = "GOMAXPROCS="
