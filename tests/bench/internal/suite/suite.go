// Package suite runs the rtsptunnel benchmarks: it builds the module, the
// relay and chisel, starts them on loopback with the IoT Hub emulator and
// its cameras, measures throughput, concurrency, open latency, added
// latency, memory and a shared camera's fan-out in one run, and returns the
// Results.
package suite

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/rtsptunnel/rtsptunnel/tests/bench/internal/procstat"
	"github.com/rtsptunnel/rtsptunnel/tests/internal/testutil"
)

// Options configures Run. Zero values take the full run's defaults, see Defaults.
type Options struct {
	// Root is the workspace root (go.work).
	Root string
	// WorkDir receives binaries, certificates, emulator state and profiles.
	WorkDir string
	// Progress receives one line per step (and process output with Verbose).
	Progress io.Writer
	Verbose  bool
	// Quick is a smoke run: short windows, fewer samples, at most 100 tunnels.
	Quick bool

	// Throughput: each round measures every path and direction for
	// ThroughputWindow after ThroughputWarmup.
	ThroughputWindow time.Duration
	ThroughputWarmup time.Duration
	Rounds           int
	// Concurrency: the tunnel counts, each held for Window at StreamBps.
	Tunnels   []int
	Window    time.Duration
	StreamBps int
	Chunk     int
	FPS       int
	// CameraWrites are the camera's write modes, each a series over
	// Tunnels: "writev" (a frame's packets with one writev) and "write"
	// (one write per packet, as gortsplib does). Default: both.
	CameraWrites []string
	// DefaultProcs adds a step with the most tunnels (first camera write
	// mode) with the module restarted with Go's default GOMAXPROCS (one P
	// per core) instead of its image's GOMAXPROCS=1.
	DefaultProcs bool
	// PacketPacedTunnels, when > 0, adds a step with that many tunnels whose
	// packets are each paced on their own (fps 0).
	PacketPacedTunnels int
	// OpenConcurrency is how many opens are in flight while opening tunnels.
	OpenConcurrency int
	// Opens is the number of one-at-a-time opens for the open latency;
	// SustainedOpens the number for the opens-per-second figure.
	Opens          int
	SustainedOpens int
	// RTTSamples is the number of OPTIONS round trips per path and round.
	RTTSamples int
	// RTTRounds is the number of added-latency rounds; each statistic is
	// reported as its median over the rounds.
	RTTRounds int
	// IdleTunnels is the tunnel count of the idle-memory test.
	IdleTunnels int
	// Fan-out: FanoutPlayers are the player counts on the shared camera
	// (ascending; each step adds players), each measured for FanoutWindow
	// after FanoutWarmup; Joins is the number of sequential joins timed
	// with one viewer and again with the most viewers watching.
	FanoutPlayers []int
	FanoutWindow  time.Duration
	FanoutWarmup  time.Duration
	Joins         int
	// Only, when not empty, runs only these tests: throughput, concurrency,
	// open, rtt, memory, fanout.
	Only map[string]bool
	// ProfileDir, when set, builds the module and the relay with a pprof
	// hook and writes CPU and heap profiles of the heaviest steps there.
	ProfileDir string
	// ModuleEnv and RelayEnv are extra KEY=VALUE environment variables of
	// the module and the relay (experiments: GOMAXPROCS, GOGC ...).
	ModuleEnv, RelayEnv []string
	// QuietBelow, when > 0, makes Run wait (up to QuietWait) until the
	// machine's background load over 10 s is below this many per cent of one
	// core before it starts.
	QuietBelow float64
	QuietWait  time.Duration
	// Command is the command line, recorded in the results.
	Command string
}

// Defaults fills zero fields with the full run's values (or the quick run's).
func (o *Options) Defaults() {
	def := func(d *time.Duration, full, quick time.Duration) {
		if *d == 0 {
			*d = full
			if o.Quick {
				*d = quick
			}
		}
	}
	defInt := func(i *int, full, quick int) {
		if *i == 0 {
			*i = full
			if o.Quick {
				*i = quick
			}
		}
	}
	def(&o.ThroughputWindow, 5*time.Second, 1500*time.Millisecond)
	def(&o.ThroughputWarmup, time.Second, 500*time.Millisecond)
	defInt(&o.Rounds, 3, 1)
	def(&o.Window, 30*time.Second, 3*time.Second)
	if len(o.Tunnels) == 0 {
		o.Tunnels = []int{1, 10, 100, 1000}
		if o.Quick {
			o.Tunnels = []int{1, 10, 100}
		}
	}
	defInt(&o.StreamBps, 1_500_000, 1_500_000)
	defInt(&o.Chunk, 1400, 1400)
	defInt(&o.FPS, 25, 25)
	if len(o.CameraWrites) == 0 {
		o.CameraWrites = []string{"writev", "write"}
		if o.Quick {
			o.CameraWrites = []string{"writev"}
		}
	}
	defInt(&o.OpenConcurrency, 32, 16)
	defInt(&o.Opens, 500, 50)
	defInt(&o.SustainedOpens, 1000, 100)
	defInt(&o.RTTSamples, 2000, 200)
	defInt(&o.RTTRounds, 3, 1)
	defInt(&o.IdleTunnels, 1000, 100)
	if len(o.FanoutPlayers) == 0 {
		o.FanoutPlayers = []int{1, 10, 100}
	}
	def(&o.FanoutWindow, 10*time.Second, 3*time.Second)
	def(&o.FanoutWarmup, 2*time.Second, time.Second)
	defInt(&o.Joins, 50, 20)
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.QuietWait == 0 {
		o.QuietWait = 30 * time.Minute
	}
}

func (o *Options) runs(test string) bool { return len(o.Only) == 0 || o.Only[test] }

// Run runs the benchmarks and returns what they measured. A failing step is
// recorded in Meta.Notes and the others still run; an error means the
// environment could not be set up.
func Run(ctx context.Context, o Options) (*Results, error) {
	o.Defaults()
	res := &Results{Ratios: map[string]float64{}}
	res.Meta = Meta{
		Started:        time.Now().UTC(),
		Command:        o.Command,
		Quick:          o.Quick,
		GoVersion:      runtime.Version(),
		CPU:            cpuModel(),
		Cores:          runtime.NumCPU(),
		Kernel:         kernel(),
		Commit:         commit(o.Root),
		LoadBefore:     loadAvg(),
		ChiselVersion:  ChiselVersion,
		ModuleImageEnv: func() []string { env, _ := ImageEnv(o.Root); return env }(),
		Settings: map[string]any{
			"throughputWindow": o.ThroughputWindow.String(), "throughputWarmup": o.ThroughputWarmup.String(),
			"rounds": o.Rounds, "tunnels": o.Tunnels, "window": o.Window.String(),
			"streamBitsPerSecond": o.StreamBps, "chunkBytes": o.Chunk, "fps": o.FPS, "cameraWrites": o.CameraWrites,
			"packetPacedTunnels": o.PacketPacedTunnels, "defaultProcsStep": o.DefaultProcs, "openConcurrency": o.OpenConcurrency,
			"opens": o.Opens, "sustainedOpens": o.SustainedOpens, "rttSamples": o.RTTSamples, "rttRounds": o.RTTRounds,
			"idleTunnels": o.IdleTunnels, "moduleMaxSessions": 1000, "profiled": o.ProfileDir != "",
			"moduleEnv": o.ModuleEnv, "relayEnv": o.RelayEnv,
			"fanoutPlayers": o.FanoutPlayers, "fanoutWindow": o.FanoutWindow.String(), "fanoutWarmup": o.FanoutWarmup.String(), "joins": o.Joins,
		},
	}
	if o.QuietBelow > 0 {
		deadline := time.Now().Add(o.QuietWait)
		for {
			bg := background(ctx, 10*time.Second)
			if bg < o.QuietBelow || ctx.Err() != nil {
				break
			}
			if time.Now().After(deadline) {
				res.Meta.Notes = append(res.Meta.Notes, fmt.Sprintf("the machine did not quiet down below %.0f%% of one core within %v; ran anyway", o.QuietBelow, o.QuietWait))
				break
			}
			fmt.Fprintf(o.Progress, "bench: background load %.0f%% of one core; waiting for less than %.0f%%\n", bg, o.QuietBelow)
		}
	}
	fmt.Fprintf(o.Progress, "bench: measuring the machine's background load for 5 s\n")
	res.Meta.BackgroundBefore = background(ctx, 5*time.Second)
	fmt.Fprintf(o.Progress, "bench: background load %.0f%% of one core (of %d%%)\n", res.Meta.BackgroundBefore, 100*runtime.NumCPU())
	e, err := setup(ctx, o)
	if err != nil {
		return nil, err
	}
	defer func() {
		if e != nil {
			e.close()
		}
	}()
	note := func(test string, err error) {
		if err != nil {
			e.progress("%s failed: %v", test, err)
			res.Meta.Notes = append(res.Meta.Notes, fmt.Sprintf("%s: %v", test, err))
		}
	}
	if o.runs("memory") {
		note("memory", e.idleMemory(ctx, res))
	}
	if o.runs("concurrency") {
		note("concurrency", e.concurrency(ctx, res))
	}
	if o.runs("open") {
		note("open latency", e.openLatency(ctx, res))
	}
	if o.runs("rtt") {
		note("added latency", e.addedLatency(ctx, res))
	}
	if o.runs("throughput") {
		note("throughput", e.throughput(ctx, res))
	}
	if o.runs("fanout") {
		// After other tests, a fresh relay: its RSS then starts from a
		// process that has served only the fan-out test.
		fresh := len(o.Only) == 0 || len(o.Only) > 1
		note("fan-out", e.fanout(ctx, res, fresh))
	}
	activeMemory(res)
	e.close()
	e = nil
	res.Meta.BackgroundAfter = background(ctx, 5*time.Second)
	res.Meta.LoadAfter = loadAvg()
	res.Meta.Duration = time.Since(res.Meta.Started)
	res.Targets = evaluate(res)
	return res, nil
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

func kernel() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return "Linux " + strings.TrimSpace(string(b))
}

func loadAvg() [3]float64 {
	var l [3]float64
	b, _ := os.ReadFile("/proc/loadavg")
	fmt.Sscanf(string(b), "%g %g %g", &l[0], &l[1], &l[2])
	return l
}

func commit(root string) string {
	cmd := exec.Command("git", "describe", "--always", "--dirty", "--abbrev=12")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

// percentiles summarizes durations.
func percentiles(d []time.Duration) Percentiles {
	if len(d) == 0 {
		return Percentiles{}
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	ms := func(x time.Duration) float64 { return float64(x) / 1e6 }
	q := func(p float64) float64 {
		i := int(p*float64(len(s)) + 0.5)
		return ms(s[min(max(i-1, 0), len(s)-1)])
	}
	var sum time.Duration
	for _, x := range s {
		sum += x
	}
	return Percentiles{N: len(s), Mean: ms(sum / time.Duration(len(s))), P50: q(0.50), P90: q(0.90), P99: q(0.99), Max: ms(s[len(s)-1])}
}

// medianPercentiles combines the rounds' percentiles of one path: each
// statistic's median over the rounds, except N (the sum) and Max (the
// largest).
func medianPercentiles(rounds []Percentiles) Percentiles {
	var out Percentiles
	var mean, p50, p90, p99 []float64
	for _, r := range rounds {
		out.N += r.N
		out.Max = max(out.Max, r.Max)
		mean, p50, p90, p99 = append(mean, r.Mean), append(p50, r.P50), append(p90, r.P90), append(p99, r.P99)
	}
	out.Mean, out.P50, out.P90, out.P99 = median(mean), median(p50), median(p90), median(p99)
	return out
}

func median(x []float64) float64 {
	if len(x) == 0 {
		return 0
	}
	s := append([]float64(nil), x...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// activeMemory fills the active half of the memory result from the
// frame-paced concurrency step with the most tunnels (the writev series when
// both ran).
func activeMemory(res *Results) {
	var best *ConcurrencyResult
	for i := range res.Concurrency {
		c := &res.Concurrency[i]
		if c.Pacing == "frame" && c.ModuleEnv == "" && (best == nil || c.Tunnels > best.Tunnels || c.Tunnels == best.Tunnels && c.Writev && !best.Writev) {
			best = c
		}
	}
	if best == nil {
		return
	}
	if res.Memory == nil {
		res.Memory = &MemoryResult{}
	}
	// The step's series started with a fresh module and relay; the RSS
	// before its first step is the baseline. Smaller steps of the series
	// ran before, so use the earliest "before" of the series.
	modBase, relBase := best.ModuleRSSBefore, best.RelayRSSBefore
	for _, c := range res.Concurrency {
		if SeriesName(c) == SeriesName(*best) && c.Tunnels < best.Tunnels {
			modBase, relBase = min(modBase, c.ModuleRSSBefore), min(relBase, c.RelayRSSBefore)
		}
	}
	m := res.Memory
	m.ActiveTunnels = best.Tunnels
	m.ModuleActive = best.Module.RSSMax
	m.RelayActive = best.Relay.RSSMax
	m.ModuleActiveBase, m.RelayActiveBase = modBase, relBase
	m.ModuleActivePerTun = float64(m.ModuleActive-modBase) / float64(best.Tunnels)
	if relBase > 0 {
		m.RelayActivePerTun = float64(m.RelayActive-relBase) / float64(best.Tunnels)
	}
}

// background returns the machine's busy CPU over d (% of one core).
func background(ctx context.Context, d time.Duration) float64 {
	b0, _, err := procstat.MachineCPU()
	if err != nil {
		return -1
	}
	t0 := time.Now()
	testutil.Sleep(ctx, d)
	b1, _, _ := procstat.MachineCPU()
	return 100 * (b1 - b0).Seconds() / time.Since(t0).Seconds()
}
