package suite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rtsptunnel/rtsptunnel/tests/bench/internal/load"
	"github.com/rtsptunnel/rtsptunnel/tests/bench/internal/procstat"
	"github.com/rtsptunnel/rtsptunnel/tests/internal/testutil"
)

// Series of the relay's metrics the fan-out test reads (labels in the
// order Prometheus's text format sorts them).
var (
	edgeFromCamera = `relay_edge_bytes_total{camera="` + fanCamera + `",direction="from_camera"}`
	toPlayers      = `relay_player_bytes_total{camera="` + fanCamera + `"}`
	playerDropped  = `relay_player_packets_dropped_total{camera="` + fanCamera + `"}`
	joinSum        = `relay_player_join_duration_seconds_sum{camera="` + fanCamera + `"}`
	joinCount      = `relay_player_join_duration_seconds_count{camera="` + fanCamera + `"}`
)

// fanoutOpenConcurrency is how many players join at once when a step adds
// players.
const fanoutOpenConcurrency = 16

// fanout puts FanoutPlayers players, step by step, on the relay's shared
// camera and measures, per step over FanoutWindow, what the edge link
// carried, what the players got and what the relay used; then it times
// sequential joins with one viewer and with the most viewers watching. It
// checks throughout that the relay kept one tunnel and made no tunnelOpen
// call after the first viewer's. fresh restarts the relay and the module
// first (when other tests ran before, so that the relay's RSS starts from
// a fresh process).
func (e *env) fanout(ctx context.Context, res *Results, fresh bool) error {
	if fresh {
		e.progress("fan-out: fresh relay and module")
		if err := e.restart(ctx, "fanout"); err != nil {
			return err
		}
	} else if err := e.drain(ctx); err != nil {
		return err
	}
	o := e.opts
	r := &FanoutResult{
		Camera:    fmt.Sprintf("the harness's RTSP camera (gortsplib server): H.264 over RTP/TCP, %.1f Mbit/s of RTP payload, %d pictures/s", float64(o.StreamBps)/1e6, o.FPS),
		StreamBps: float64(o.StreamBps), FPS: o.FPS, Window: o.FanoutWindow, Warmup: o.FanoutWarmup,
	}
	res.Fanout = r
	var players []*load.RTSPPlayer
	defer func() {
		closeRTSP(players)
		if err := e.drain(ctx); err != nil {
			e.progress("fan-out: %v", err)
		}
	}()

	m0, err := scrape(ctx, e.relayMetr)
	if err != nil {
		return err
	}
	cam0 := e.fanCam.Sessions()
	e.progress("fan-out: the first viewer opens the shared camera")
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	holder, err := load.Play(octx, e.relayFan, true)
	cancel()
	if err != nil {
		return fmt.Errorf("first viewer: %w", err)
	}
	players = append(players, holder)
	r.ColdJoin = marks(holder.Timing())
	m1, err := scrape(ctx, e.relayMetr)
	if err != nil {
		return err
	}
	r.MethodCallsAtOpen = sum(m1, "relay_method_calls_total") - sum(m0, "relay_method_calls_total")
	e.progress("fan-out: upstream live, first packet after %.0f ms (%v tunnelOpen call)", r.ColdJoin.FirstPacket, r.MethodCallsAtOpen)

	// check polls the tunnel counts: every step and after every join.
	check := func() {
		r.RelayTunnelsMax = max(r.RelayTunnelsMax, gauge(ctx, e.relayMetr, "relay_sessions_active"))
		r.ModuleTunnelsMax = max(r.ModuleTunnelsMax, gauge(ctx, e.moduleMetr, "rtsptunnel_sessions_active"))
	}
	check()
	var errs []error
	for i, n := range o.FanoutPlayers {
		var took time.Duration
		if add := n - len(players); add > 0 {
			e.progress("fan-out: %d more players", add)
			var more []*load.RTSPPlayer
			more, took, err = openRTSP(ctx, e.relayFan, add, fanoutOpenConcurrency)
			players = append(players, more...)
			if err != nil {
				errs = append(errs, fmt.Errorf("%d players: %w", n, err))
				break
			}
			check()
		}
		s, err := e.fanoutStep(ctx, players, took)
		if err != nil {
			errs = append(errs, fmt.Errorf("%d players: %w", n, err))
			break
		}
		r.Steps = append(r.Steps, *s)
		check()
		if i == 0 {
			j, err := e.joins(ctx, len(players), check)
			r.Join = j
			if err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(players) > 1 && len(errs) == 0 {
		j, err := e.joins(ctx, len(players), check)
		r.JoinLoaded = j
		if err != nil {
			errs = append(errs, err)
		}
	}
	if len(r.Steps) > 0 {
		base := r.Steps[0]
		for i := range r.Steps[1:] {
			s := &r.Steps[i+1]
			if added := float64(s.Players - base.Players); added > 0 {
				s.RelayCPUPerPlayer = (s.Relay.CPU - base.Relay.CPU) / added
				s.RelayRSSPerPlayer = float64(s.Relay.RSSMax-base.Relay.RSSMax) / added
			}
		}
	}
	m2, err := scrape(ctx, e.relayMetr)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	check()
	r.MethodCalls = sum(m2, "relay_method_calls_total") - sum(m1, "relay_method_calls_total")
	r.CameraSessions = e.fanCam.Sessions() - cam0
	e.progress("fan-out: after the first viewer: %v tunnelOpen calls, at most %v tunnels in the relay and %v in the module, %d camera sessions in all",
		r.MethodCalls, r.RelayTunnelsMax, r.ModuleTunnelsMax, r.CameraSessions)
	if !r.OneTunnel() {
		errs = append(errs, fmt.Errorf("not one tunnel for every viewer: %v tunnelOpen calls at the first viewer's open and %v after it, at most %v relay and %v module tunnels, %d camera sessions",
			r.MethodCallsAtOpen, r.MethodCalls, r.RelayTunnelsMax, r.ModuleTunnelsMax, r.CameraSessions))
	}
	return errors.Join(errs...)
}

// fanoutStep lets the players run for FanoutWarmup, then measures them and
// the processes over FanoutWindow.
func (e *env) fanoutStep(ctx context.Context, players []*load.RTSPPlayer, openTime time.Duration) (*FanoutStep, error) {
	if err := testutil.Sleep(ctx, e.opts.FanoutWarmup); err != nil {
		return nil, err
	}
	s := &FanoutStep{Players: len(players), OpenTime: openTime}
	before := make([]int64, len(players))
	lost := make([]int64, len(players))
	w, err := procstat.StartWindow(time.Second, e.relay.Pid(), e.module.Pid(), os.Getpid())
	if err != nil {
		return nil, err
	}
	r0, w0, err := procstat.Syscalls(e.relay.Pid())
	if err != nil {
		w.Stop()
		return nil, err
	}
	m0, err := scrape(ctx, e.relayMetr)
	t0 := time.Now()
	for i, p := range players {
		before[i], lost[i] = p.Received(), p.Lost()
	}
	if err == nil {
		err = testutil.Sleep(ctx, e.opts.FanoutWindow)
	}
	var m1 map[string]float64
	if err == nil {
		m1, err = scrape(ctx, e.relayMetr)
	}
	elapsed := time.Since(t0)
	r1, w1, serr := procstat.Syscalls(e.relay.Pid())
	usage, _, machine, werr := w.StopMachine()
	if err = errors.Join(err, serr, werr); err != nil {
		return nil, err
	}
	s.Relay, s.Module, s.Harness, s.Machine = usage[0], usage[1], usage[2], machine
	secs := elapsed.Seconds()
	s.RelayReadsPerSec, s.RelayWritesPerSec = float64(r1-r0)/secs, float64(w1-w0)/secs
	s.EdgeBps = (m1[edgeFromCamera] - m0[edgeFromCamera]) / secs
	s.ToPlayersBps = (m1[toPlayers] - m0[toPlayers]) / secs
	s.Dropped = m1[playerDropped] - m0[playerDropped]
	if s.EdgeBps > 0 {
		s.Fanout = s.ToPlayersBps / s.EdgeBps
	}
	s.MinPlayerBps = math.Inf(1)
	var got int64
	for i, p := range players {
		d := p.Received() - before[i]
		got += d
		s.MinPlayerBps = min(s.MinPlayerBps, float64(d)/secs)
		s.Lost += p.Lost() - lost[i]
		if p.Ended() {
			s.Ended++
		}
	}
	s.ReceivedBps = float64(got) / secs
	e.progress("fan-out: %3d players: edge %.1f KB/s, to players %.1f KB/s (fan-out %.1f; players counted %.1f KB/s, slowest %.1f KB/s; %v dropped, %d lost, %d ended); relay cpu %.1f%% rss %.1f MiB, %.0f writes/s %.0f reads/s; module cpu %.1f%%; harness cpu %.1f%%; machine %.0f%%",
		s.Players, s.EdgeBps/1e3, s.ToPlayersBps/1e3, s.Fanout, s.ReceivedBps/1e3, s.MinPlayerBps/1e3, s.Dropped, s.Lost, s.Ended,
		s.Relay.CPU, mib(s.Relay.RSSMax), s.RelayWritesPerSec, s.RelayReadsPerSec, s.Module.CPU, s.Harness.CPU, s.Machine)
	if s.Ended > 0 {
		return s, fmt.Errorf("%d of %d players' sessions ended", s.Ended, s.Players)
	}
	return s, nil
}

// joins times Joins sequential joins to the live shared camera with viewers
// watching: each player connects, authenticates, plays and closes at its
// first RTP packet. check runs after every join.
//
// Each join starts after a random pause of up to one picture interval:
// players arrive independently of the camera's clock. Back to back, every
// join would start just after the picture that ended the previous one and
// wait nearly a whole interval for the next: the figures would measure the
// loop's phase, not the relay.
func (e *env) joins(ctx context.Context, viewers int, check func()) (*JoinResult, error) {
	j := &JoinResult{Viewers: viewers}
	e.progress("fan-out: %d joins one after another, %d watching", e.opts.Joins, viewers)
	m0, err := scrape(ctx, e.relayMetr)
	if err != nil {
		return nil, err
	}
	var first, described, playing []time.Duration
	var firstErr error
	interval := time.Second / time.Duration(max(e.opts.FPS, 1))
	for range e.opts.Joins {
		if err := testutil.Sleep(ctx, rand.N(interval)); err != nil {
			return j, err
		}
		jctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		p, err := load.Play(jctx, e.relayFan, true)
		cancel()
		if err != nil {
			j.Failures++
			if firstErr == nil {
				firstErr = err
			}
			if ctx.Err() != nil {
				break
			}
			continue
		}
		p.Close()
		t := p.Timing()
		first, described, playing = append(first, t.FirstPacket), append(described, t.Described), append(playing, t.Playing)
		check()
	}
	j.FirstPacket, j.Described, j.Playing = percentiles(first), percentiles(described), percentiles(playing)
	m1, err := scrape(ctx, e.relayMetr)
	if err != nil {
		return j, err
	}
	if n := m1[joinCount] - m0[joinCount]; n > 0 {
		j.RelayDescribeMean = 1e3 * (m1[joinSum] - m0[joinSum]) / n
	}
	j.MethodCalls = sum(m1, "relay_method_calls_total") - sum(m0, "relay_method_calls_total")
	e.progress("fan-out: join with %d watching: first packet p50 %.1f ms p90 %.1f ms p99 %.1f ms (DESCRIBE answered p50 %.1f ms, PLAY answered p50 %.1f ms; the relay's DESCRIBE mean %.2f ms); %v tunnelOpen calls; %d failures",
		viewers, j.FirstPacket.P50, j.FirstPacket.P90, j.FirstPacket.P99, j.Described.P50, j.Playing.P50, j.RelayDescribeMean, j.MethodCalls, j.Failures)
	if j.Failures > 0 {
		return j, fmt.Errorf("%d of %d joins failed, first: %w", j.Failures, e.opts.Joins, firstErr)
	}
	return j, nil
}

func marks(t load.JoinTiming) JoinMarks {
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	return JoinMarks{Described: ms(t.Described), Playing: ms(t.Playing), FirstPacket: ms(t.FirstPacket)}
}

// openRTSP starts n players on url, at most conc joining at once, each
// waiting for its first packet. It returns the players that joined (the
// caller closes them, also on error) and the time taken.
func openRTSP(ctx context.Context, url string, n, conc int) ([]*load.RTSPPlayer, time.Duration, error) {
	players := make([]*load.RTSPPlayer, n)
	errs := make([]error, n)
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			octx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			players[i], errs[i] = load.Play(octx, url, true)
		})
	}
	wg.Wait()
	took := time.Since(start)
	var ok []*load.RTSPPlayer
	for _, p := range players {
		if p != nil {
			ok = append(ok, p)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return ok, took, fmt.Errorf("%d of %d players failed to join: %w", n-len(ok), n, err)
	}
	return ok, took, nil
}

func closeRTSP(players []*load.RTSPPlayer) {
	var wg sync.WaitGroup
	for _, p := range players {
		wg.Go(p.Close)
	}
	wg.Wait()
}

// scrape reads a Prometheus endpoint into series → value ("name{labels}"
// as the text format writes it).
func scrape(ctx context.Context, url string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("failed to scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("failed to scrape %s: %w", url, err)
	}
	m := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			m[line[:i]] = v
		}
	}
	return m, nil
}

// sum adds every series of metric name.
func sum(m map[string]float64, name string) float64 {
	var t float64
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			t += v
		}
	}
	return t
}
