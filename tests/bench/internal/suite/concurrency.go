package suite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rtsptunnel/rtsptunnel/tests/bench/internal/load"
	"github.com/rtsptunnel/rtsptunnel/tests/bench/internal/procstat"
	"github.com/rtsptunnel/rtsptunnel/tests/internal/testutil"
)

// openAttempts is how often a player tries to open its tunnel: a player
// whose tunnel failed to open (the relay answers 503 and hangs up) retries,
// as players do.
const openAttempts = 3

// openMany opens n player connections through the relay with header, at most
// conc in flight, each waiting for the first byte back when wait is set. It
// returns the connections, the time taken and the number of retries. On
// failure it closes what it opened.
func (e *env) openMany(ctx context.Context, addr string, n, conc int, header []byte, wait bool) ([]*load.Conn, time.Duration, int, error) {
	conns := make([]*load.Conn, n)
	errs := make([]error, n)
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	var retries atomic.Int64
	start := time.Now()
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			for attempt := range openAttempts {
				if attempt > 0 {
					retries.Add(1)
				}
				octx, cancel := context.WithTimeout(ctx, 30*time.Second)
				conns[i], errs[i] = load.Open(octx, addr, header, wait)
				cancel()
				if errs[i] == nil || ctx.Err() != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	var failed []error
	for _, err := range errs {
		if err != nil {
			failed = append(failed, err)
		}
	}
	if len(failed) > 0 {
		closeAll(conns)
		return nil, elapsed, int(retries.Load()), fmt.Errorf("%d of %d tunnels failed to open %d times, first: %w", len(failed), n, openAttempts, failed[0])
	}
	return conns, elapsed, int(retries.Load()), nil
}

func closeAll(conns []*load.Conn) {
	var wg sync.WaitGroup
	for _, c := range conns {
		if c != nil {
			wg.Go(func() { c.Close() })
		}
	}
	wg.Wait()
}

// concurrency holds N paced RTSP-like streams open through the relay and the
// module for the window, for every N, and measures what each delivered and
// what the module and the relay used.
func (e *env) concurrency(ctx context.Context, res *Results) error {
	type step struct {
		n      int
		fps    int
		writev bool
		env    string // module environment for this step
	}
	var steps []step
	for _, mode := range e.opts.CameraWrites {
		for _, n := range e.opts.Tunnels {
			steps = append(steps, step{n, e.opts.FPS, mode == "writev", ""})
		}
	}
	if e.opts.PacketPacedTunnels > 0 {
		steps = append(steps, step{e.opts.PacketPacedTunnels, 0, false, ""})
	}
	maxN := 0
	for _, s := range steps {
		maxN = max(maxN, s.n)
	}
	if e.opts.DefaultProcs && len(e.opts.CameraWrites) > 0 {
		steps = append(steps, step{maxN, e.opts.FPS, e.opts.CameraWrites[0] == "writev", DefaultProcsEnv})
	}
	// Each series starts with a fresh relay and module; the tests after
	// this one get fresh ones with the defaults too.
	defer func() {
		if err := e.restart(ctx, "after-concurrency"); err != nil {
			e.progress("restarting the relay and the module: %v", err)
		}
	}()
	var errs []error
	series := ""
	for _, s := range steps {
		tag := map[bool]string{true: "writev", false: "write"}[s.writev]
		if s.fps == 0 {
			tag = "packet-paced"
		}
		if s.env != "" {
			tag += "-" + strings.ToLower(strings.ReplaceAll(s.env, "=", ""))
		}
		if tag != series {
			series = tag
			e.progress("concurrency: fresh relay and module for the %s series", tag)
			var env []string
			if s.env != "" {
				env = []string{s.env}
			}
			if err := e.restart(ctx, tag, env...); err != nil {
				return errors.Join(append(errs, err)...)
			}
		}
		r, err := e.concurrencyStep(ctx, s.n, s.fps, s.writev, s.n == maxN && s.fps == e.opts.FPS && s.env == "")
		if r != nil {
			r.ModuleEnv = s.env
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%d tunnels: %w", s.n, err))
			if derr := e.drain(ctx); derr != nil {
				return errors.Join(append(errs, derr)...)
			}
			continue
		}
		res.Concurrency = append(res.Concurrency, *r)
	}
	return errors.Join(errs...)
}

func (e *env) concurrencyStep(ctx context.Context, n, fps int, writev, profile bool) (*ConcurrencyResult, error) {
	if err := e.drain(ctx); err != nil {
		return nil, err
	}
	pacing := "frame"
	if fps == 0 {
		pacing = "packet"
	}
	r := &ConcurrencyResult{Tunnels: n, Pacing: pacing, FPS: fps, Writev: writev, TargetBps: float64(e.opts.StreamBps), Window: e.opts.Window}
	r.ModuleRSSBefore, _ = procstat.RSS(e.module.Pid())
	r.RelayRSSBefore, _ = procstat.RSS(e.relay.Pid())
	writes := "a write per packet"
	if writev {
		writes = "a writev per frame"
	}
	e.progress("concurrency: opening %d tunnels (%s pacing, %s)", n, pacing, writes)
	conns, openTime, retries, err := e.openMany(ctx, e.relayLoad, n, e.opts.OpenConcurrency, load.StreamHeader(e.opts.StreamBps, e.opts.Chunk, fps, writev), true)
	if err != nil {
		return nil, err
	}
	r.OpenRetries = retries
	defer func() {
		closeAll(conns)
		e.drain(ctx)
	}()
	r.OpenTime = openTime
	r.OpensPerSec = float64(n) / openTime.Seconds()
	// Let every stream reach its pace before the window.
	if err := testutil.Sleep(ctx, 2*time.Second); err != nil {
		return nil, err
	}
	w, err := procstat.StartWindow(time.Second, e.module.Pid(), e.relay.Pid(), os.Getpid(), e.emu.Pid())
	if err != nil {
		return nil, err
	}
	var profWait func()
	if profile {
		profWait = e.profile(ctx, fmt.Sprintf("concurrency-%d-%s", n, map[bool]string{true: "writev", false: "write"}[writev]), e.opts.Window)
	}
	before := make([]int64, n)
	for i, c := range conns {
		before[i] = c.Received()
	}
	t0 := time.Now()
	err = testutil.Sleep(ctx, e.opts.Window)
	elapsed := time.Since(t0)
	rates := make([]float64, n)
	for i, c := range conns {
		rates[i] = float64(c.Received()-before[i]) * 8 / elapsed.Seconds()
		if c.Ended() {
			r.Failed++
		}
	}
	usage, _, machine, werr := w.StopMachine()
	if profWait != nil {
		profWait()
	}
	if profile {
		e.heapProfile(ctx, fmt.Sprintf("concurrency-%d-%s", n, map[bool]string{true: "writev", false: "write"}[writev]))
	}
	if err = errors.Join(err, werr); err != nil {
		return nil, err
	}
	r.Module, r.Relay, r.Harness, r.Emulator = usage[0], usage[1], usage[2], usage[3]
	r.Machine = machine
	r.Others = machine - r.Module.CPU - r.Relay.CPU - r.Harness.CPU - r.Emulator.CPU
	sort.Float64s(rates)
	var sum float64
	for _, x := range rates {
		sum += x
		if x >= 0.99*r.TargetBps {
			r.AtFullRate++
		}
	}
	r.MeanBps = sum / float64(n)
	r.MinBps = rates[0]
	r.P01Bps = rates[int(0.01*float64(n))]
	e.progress("concurrency: %4d tunnels opened in %v (%.0f/s, %d retries); per tunnel mean %.3f Mbit/s, min %.3f, %d/%d at full rate; module cpu %.1f%% rss %.1f MiB; relay cpu %.1f%% rss %.1f MiB; harness cpu %.1f%%; emulator cpu %.1f%%; machine %.0f%% (others %.0f%%)",
		n, openTime.Round(time.Millisecond), r.OpensPerSec, r.OpenRetries, r.MeanBps/1e6, r.MinBps/1e6, r.AtFullRate, n,
		r.Module.CPU, mib(r.Module.RSSMax), r.Relay.CPU, mib(r.Relay.RSSMax), r.Harness.CPU, r.Emulator.CPU, r.Machine, r.Others)
	return r, nil
}

// idleMemory opens IdleTunnels tunnels that carry nothing and measures the
// module's and the relay's RSS against their baseline.
func (e *env) idleMemory(ctx context.Context, res *Results) error {
	if err := e.drain(ctx); err != nil {
		return err
	}
	n := e.opts.IdleTunnels
	m := &MemoryResult{Tunnels: n}
	res.Memory = m
	if err := testutil.Sleep(ctx, 2*time.Second); err != nil {
		return err
	}
	var err error
	if m.ModuleBaseline, m.RelayBaseline, err = e.rss(ctx); err != nil {
		return err
	}
	e.progress("memory: baseline module %.1f MiB, relay %.1f MiB; opening %d idle tunnels", mib(m.ModuleBaseline), mib(m.RelayBaseline), n)
	conns, openTime, retries, err := e.openMany(ctx, e.relayLoad, n, e.opts.OpenConcurrency, load.Header("IDLE"), true)
	if err != nil {
		return err
	}
	m.OpenRetries = retries
	defer func() {
		closeAll(conns)
		e.drain(ctx)
	}()
	if a := e.cam.Active(); a != n {
		return fmt.Errorf("%d idle tunnels open, the camera has %d connections", n, a)
	}
	e.progress("memory: %d idle tunnels up after %v", n, openTime.Round(time.Millisecond))
	if err := testutil.Sleep(ctx, 3*time.Second); err != nil {
		return err
	}
	if m.ModuleIdle, m.RelayIdle, err = e.rss(ctx); err != nil {
		return err
	}
	e.heapProfile(ctx, fmt.Sprintf("idle-%d", n))
	m.Runtime = map[string]float64{}
	for proc, url := range map[string]string{"module": e.moduleMetr, "relay": e.relayMetr} {
		for k, metric := range map[string]string{"heap": "go_memstats_heap_inuse_bytes", "stack": "go_memstats_stack_inuse_bytes", "goroutines": "go_goroutines"} {
			m.Runtime[proc+"."+k] = gauge(ctx, url, metric)
		}
	}
	m.ModuleIdlePerTun = float64(m.ModuleIdle-m.ModuleBaseline) / float64(n)
	m.RelayIdlePerTun = float64(m.RelayIdle-m.RelayBaseline) / float64(n)
	e.progress("memory: %d idle tunnels: module %.1f MiB (%.1f KiB per tunnel; heap %.1f MiB, stacks %.1f MiB, %.0f goroutines), relay %.1f MiB (%.1f KiB per tunnel)",
		n, mib(m.ModuleIdle), m.ModuleIdlePerTun/1024, m.Runtime["module.heap"]/(1<<20), m.Runtime["module.stack"]/(1<<20), m.Runtime["module.goroutines"],
		mib(m.RelayIdle), m.RelayIdlePerTun/1024)
	return nil
}

// rss returns the module's and the relay's RSS, each the mean of five samples
// half a second apart.
func (e *env) rss(ctx context.Context) (module, relay int64, err error) {
	for i := range 5 {
		if i > 0 {
			if err := testutil.Sleep(ctx, 500*time.Millisecond); err != nil {
				return 0, 0, err
			}
		}
		m, err1 := procstat.RSS(e.module.Pid())
		r, err2 := procstat.RSS(e.relay.Pid())
		if err := errors.Join(err1, err2); err != nil {
			return 0, 0, err
		}
		module += m
		relay += r
	}
	return module / 5, relay / 5, nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
