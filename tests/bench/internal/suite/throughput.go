package suite

import (
	"context"
	"fmt"
	"os"

	"github.com/rtsptunnel/rtsptunnel/tests/bench/internal/load"
	"github.com/rtsptunnel/rtsptunnel/tests/bench/internal/procstat"
)

// throughput measures one connection's throughput in both directions over
// raw loopback TCP, the reference tunnel (tlsfwd), chisel and rtsptunnel,
// rounds interleaved so that the
// machine's noise touches every path alike.
func (e *env) throughput(ctx context.Context, res *Results) error {
	type path struct{ name, addr string }
	paths := []path{{"raw", e.cam.ListenAddr()}, {"tlsfwd", e.tlsfwdLoad}, {"chisel", e.chiselLoad}, {"rtsptunnel", e.relayLoad}}
	pids := map[string]int{"harness": os.Getpid(), "module": e.module.Pid(), "relay": e.relay.Pid(),
		"chiselClient": e.chiselClient.Pid(), "chiselServer": e.chiselServer.Pid(),
		"tlsfwdIn": e.tlsfwdIn.Pid(), "tlsfwdOut": e.tlsfwdOut.Pid()}
	names := []string{"harness", "module", "relay", "chiselClient", "chiselServer", "tlsfwdIn", "tlsfwdOut"}
	type key struct{ path, dir string }
	samples := map[key][]float64{}
	cpus := map[key][]map[string]float64{}
	machines := map[key][]float64{}
	for round := range e.opts.Rounds {
		for _, dir := range []string{"down", "up"} {
			for i := range paths {
				p := paths[(i+round)%len(paths)] // rotate the order every round
				var w *procstat.Window
				var usage []procstat.Usage
				var machine float64
				var profWait func()
				win := load.Window{Warmup: e.opts.ThroughputWarmup, Duration: e.opts.ThroughputWindow,
					OnStart: func() {
						ps := make([]int, len(names))
						for j, n := range names {
							ps[j] = pids[n]
						}
						w, _ = procstat.StartWindow(e.opts.ThroughputWindow, ps...)
						if p.name == "rtsptunnel" && round == 0 {
							profWait = e.profile(ctx, "throughput-"+dir, e.opts.ThroughputWindow)
						}
					},
					OnStop: func() {
						if w != nil {
							usage, _, machine, _ = w.StopMachine()
						}
					},
				}
				var r load.Rate
				var err error
				if dir == "down" {
					r, err = load.Download(ctx, p.addr, win)
				} else {
					r, err = load.Upload(ctx, p.addr, e.cam, win)
				}
				if profWait != nil {
					profWait()
				}
				if err != nil {
					return fmt.Errorf("%s %s: %w", p.name, dir, err)
				}
				k := key{p.name, dir}
				samples[k] = append(samples[k], r.MBps())
				cpu := map[string]float64{}
				for j, n := range names {
					if j < len(usage) {
						cpu[n] = usage[j].CPU
					}
				}
				cpus[k] = append(cpus[k], cpu)
				machines[k] = append(machines[k], machine)
				e.progress("throughput round %d %-10s %-4s %8.1f MB/s  cpu %s machine %.0f%%", round+1, p.name, dir, r.MBps(), fmtCPU(cpu, names), machine)
				if err := e.drain(ctx); err != nil {
					return err
				}
			}
		}
	}
	for _, dir := range []string{"down", "up"} {
		for _, p := range paths {
			k := key{p.name, dir}
			m := median(samples[k])
			// The CPU figures of the round closest to the median.
			best := 0
			for i, s := range samples[k] {
				if abs(s-m) < abs(samples[k][best]-m) {
					best = i
				}
			}
			res.Throughput = append(res.Throughput, ThroughputResult{Path: p.name, Direction: dir, MBps: m, Samples: samples[k], CPU: cpus[k][best], Machine: machines[k][best]})
		}
		get := func(path string) float64 { return median(samples[key{path, dir}]) }
		if c := get("chisel"); c > 0 {
			res.Ratios["rtsptunnelVsChisel_"+dir] = get("rtsptunnel") / c
		}
		if r := get("raw"); r > 0 {
			res.Ratios["rtsptunnelVsRaw_"+dir] = get("rtsptunnel") / r
			res.Ratios["chiselVsRaw_"+dir] = get("chisel") / r
			res.Ratios["tlsfwdVsRaw_"+dir] = get("tlsfwd") / r
		}
		if f := get("tlsfwd"); f > 0 {
			res.Ratios["rtsptunnelVsTLSFwd_"+dir] = get("rtsptunnel") / f
		}
	}
	return nil
}

func fmtCPU(cpu map[string]float64, names []string) string {
	s := ""
	for _, n := range names {
		if v, ok := cpu[n]; ok && v >= 0.5 {
			s += fmt.Sprintf("%s %.0f%% ", n, v)
		}
	}
	return s
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}
