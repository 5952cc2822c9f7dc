package suite

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rtsptunnel/rtsptunnel/tests/bench/internal/load"
	"github.com/rtsptunnel/rtsptunnel/tests/internal/testutil"
)

// openOnce opens a tunnel to the camera simulator through the relay: the
// player connects (the relay calls tunnelOpen at once) and sends OPTIONS;
// the result is the time to the first byte of the camera's answer.
func (e *env) openOnce(ctx context.Context) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	start := time.Now()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", e.relaySim)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	c := load.NewRTSPClient(conn, "rtsp://"+e.relaySim+"/stream")
	sent := time.Now()
	first, _, err := c.Options() // measured from its write
	if err != nil {
		return 0, err
	}
	return sent.Sub(start) + first, nil
}

// openLatency measures opens one at a time (latency), then many with
// OpenConcurrency in flight (opens per second).
func (e *env) openLatency(ctx context.Context, res *Results) error {
	if err := e.drain(ctx); err != nil {
		return err
	}
	r := &OpenLatencyResult{}
	res.OpenLatency = r
	e.progress("open latency: %d opens one at a time", e.opts.Opens)
	var lat []time.Duration
	for range e.opts.Opens {
		d, err := e.openOnce(ctx)
		if err != nil {
			r.Failures++
			continue
		}
		lat = append(lat, d)
	}
	r.FirstByte = percentiles(lat)
	e.progress("open latency: p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms, %d failures",
		r.FirstByte.P50, r.FirstByte.P90, r.FirstByte.P99, r.FirstByte.Max, r.Failures)
	if err := e.drain(ctx); err != nil {
		return err
	}

	s := &r.Sustained
	s.Opens, s.Concurrency = e.opts.SustainedOpens, e.opts.OpenConcurrency
	e.progress("open rate: %d opens, %d in flight", s.Opens, s.Concurrency)
	var (
		mu   sync.Mutex
		all  []time.Duration
		next atomic.Int64
		fail atomic.Int64
		wg   sync.WaitGroup
	)
	start := time.Now()
	for range s.Concurrency {
		wg.Go(func() {
			for next.Add(1) <= int64(s.Opens) {
				d, err := e.openOnce(ctx)
				if err != nil {
					fail.Add(1)
					continue
				}
				mu.Lock()
				all = append(all, d)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	s.Elapsed = time.Since(start)
	s.Failures = int(fail.Load())
	s.PerSec = float64(s.Opens-s.Failures) / s.Elapsed.Seconds()
	s.FirstByte = percentiles(all)
	e.progress("open rate: %.0f opens/s (%d failures), first byte p50 %.1f ms p99 %.1f ms",
		s.PerSec, s.Failures, s.FirstByte.P50, s.FirstByte.P99)
	if r.Failures+s.Failures > 0 {
		return fmt.Errorf("%d opens failed", r.Failures+s.Failures)
	}
	return e.drain(ctx)
}

// addedLatency times OPTIONS round trips to the camera simulator directly,
// through an open tunnel, through the reference tunnel and through chisel,
// interleaved.
func (e *env) addedLatency(ctx context.Context, res *Results) error {
	if err := e.drain(ctx); err != nil {
		return err
	}
	type path struct {
		name   string
		c      *load.RTSPClient
		d      []time.Duration // this round's samples
		rounds []Percentiles
	}
	var paths []*path
	for _, p := range []struct{ name, addr string }{{"direct", e.sim.ListenAddr()}, {"rtsptunnel", e.relaySim}, {"chisel", e.chiselSim}, {"tlsfwd", e.tlsfwdSim}} {
		conn, err := net.Dial("tcp", p.addr)
		if err != nil {
			return err
		}
		defer conn.Close()
		paths = append(paths, &path{name: p.name, c: load.NewRTSPClient(conn, "rtsp://"+p.addr+"/stream")})
	}
	e.progress("added latency: %d rounds of %d OPTIONS round trips per path", e.opts.RTTRounds, e.opts.RTTSamples)
	r := &AddedLatencyResult{}
	for round := range e.opts.RTTRounds {
		if round > 0 {
			// Apart in time, so that a burst of the machine's other load
			// is less likely to touch every round.
			if err := testutil.Sleep(ctx, 2*time.Second); err != nil {
				return err
			}
		}
		const warmup = 50 // every round: after the pause the processes are fully idle
		for _, p := range paths {
			p.d = p.d[:0]
		}
		for i := range warmup + e.opts.RTTSamples {
			for j := range paths {
				p := paths[(i+j)%len(paths)]
				_, total, err := p.c.Options()
				if err != nil {
					return fmt.Errorf("%s: %w", p.name, err)
				}
				if i >= warmup {
					p.d = append(p.d, total)
				}
				// A pause, as between a player's requests: every request finds
				// the processes idle rather than spinning.
				if err := testutil.Sleep(ctx, time.Millisecond); err != nil {
					return err
				}
			}
		}
		for _, p := range paths {
			p.rounds = append(p.rounds, percentiles(p.d))
		}
		rr := AddedLatencyRound{Direct: paths[0].rounds[round], Tunnel: paths[1].rounds[round], Chisel: paths[2].rounds[round], TLSFwd: paths[3].rounds[round]}
		e.progress("added latency: round %d: rtsptunnel added p50 %.3f p99 %.3f ms; reference added p50 %.3f p99 %.3f ms",
			round+1, rr.Tunnel.P50-rr.Direct.P50, rr.Tunnel.P99-rr.Direct.P99, rr.TLSFwd.P50-rr.Direct.P50, rr.TLSFwd.P99-rr.Direct.P99)
		r.Rounds = append(r.Rounds, rr)
	}
	r.Direct, r.Tunnel = medianPercentiles(paths[0].rounds), medianPercentiles(paths[1].rounds)
	r.Chisel, r.TLSFwd = medianPercentiles(paths[2].rounds), medianPercentiles(paths[3].rounds)
	r.TLSFwdP50 = r.TLSFwd.P50 - r.Direct.P50
	r.TLSFwdP99 = r.TLSFwd.P99 - r.Direct.P99
	r.AddedP50 = r.Tunnel.P50 - r.Direct.P50
	r.AddedP99 = r.Tunnel.P99 - r.Direct.P99
	r.ChiselP50 = r.Chisel.P50 - r.Direct.P50
	r.ChiselP99 = r.Chisel.P99 - r.Direct.P99
	res.AddedLatency = r
	e.progress("added latency: direct p50 %.3f p99 %.3f ms; rtsptunnel p50 %.3f p99 %.3f ms (added %.3f / %.3f); chisel p50 %.3f p99 %.3f ms; reference p50 %.3f p99 %.3f ms",
		r.Direct.P50, r.Direct.P99, r.Tunnel.P50, r.Tunnel.P99, r.AddedP50, r.AddedP99, r.Chisel.P50, r.Chisel.P99, r.TLSFwd.P50, r.TLSFwd.P99)
	return nil
}
