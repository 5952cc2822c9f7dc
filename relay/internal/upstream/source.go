package upstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/metrics"
)

// Dialer opens a tunnel to the camera's RTSP port. It must return when ctx
// is done. A returned conn that has an End(reason string, goingAway bool)
// error method is ended with the reason the upstream stopped (it appears
// in the tunnel's "session closed" log line).
type Dialer func(ctx context.Context) (net.Conn, error)

// ErrClosed is returned by Acquire after Close.
var ErrClosed = errors.New("upstream closed")

// Source is one camera's shared upstream. Set the exported fields, call
// Initialize, and Close when done. Acquire and Release are safe for
// concurrent use.
type Source struct {
	// Camera names the camera in logs and metrics. Required.
	Camera string
	// URL is the camera's RTSP URL as requested through the tunnel, with
	// the camera's credentials as user info; its host only names the
	// camera in requests. Required.
	URL *base.URL
	// Dial opens the tunnel. Required.
	Dial Dialer
	// Server is the RTSP server that viewers read from. Required.
	Server *gortsplib.Server
	// Linger keeps the upstream open this long after the last Release.
	Linger time.Duration
	// ReconnectWindow bounds how long viewers wait while a dropped
	// upstream reconnects; 0 ends them at once.
	ReconnectWindow time.Duration
	// ReadTimeout ends the upstream when the camera sends nothing for this
	// long (default 10s).
	ReadTimeout time.Duration
	// Logger and Metrics are required.
	Logger  *slog.Logger
	Metrics *metrics.Metrics

	// RetryMin and RetryMax bound the reconnect backoff (defaults 250ms and
	// 5s).
	RetryMin, RetryMax time.Duration

	// OnPacket, when set, sees every RTP packet written to stream (after
	// the numbering is made continuous across reconnects): a second
	// consumer beside the RTSP players, such as WebRTC viewers. It runs on
	// the camera's reader goroutine, so it must not block, must not modify
	// pkt, and must copy what it keeps.
	OnPacket func(stream *gortsplib.ServerStream, m *description.Media, f format.Format, pkt *rtp.Packet)
	// OnResume, when set, is called when a camera session starts feeding
	// stream: the first, and each after a reconnect. Packets before and
	// after it are not one stream, although their numbering continues
	// (frames between were lost), so a decoder must restart at a keyframe.
	// It runs on the camera's reader goroutine before its first packet.
	OnResume func(stream *gortsplib.ServerStream)
	// OnStreamClose, when set, is called when stream stops (the last viewer
	// left, the camera changed its description, the reconnect window
	// ended, Close): whoever reads it through OnPacket should let go.
	OnStreamClose func(stream *gortsplib.ServerStream)

	ctx     context.Context // static after Initialize
	cancel  context.CancelFunc
	acquire chan *acquireReq
	abandon chan *acquireReq
	release chan struct{}
	events  chan event
	done    chan struct{}

	mu     sync.Mutex
	status Status // guarded by mu; written by run

	// cont keeps each stream media's RTP numbering continuous across
	// reconnects. Used by the attempt that feeds the stream, and reset by
	// run when it makes a new stream; attempts never overlap, and each hands
	// over to the next through run's channels.
	cont map[*description.Media]*continuity
}

// continuity rewrites one media's RTP sequence numbers and timestamps so
// that viewers who stay through a reconnect see one stream: a camera's new
// session starts from random numbers, which players take for loss or a
// clock jump.
type continuity struct {
	seqOff  uint16
	tsOff   uint32
	lastSeq uint16
	lastTS  uint32
	lastAt  time.Time
	active  bool // lastSeq/lastTS are set
	joined  bool // offsets are set for the current attempt
}

// rewrite applies the offsets to pkt, computing them at the first packet
// of an attempt: the next sequence number, and the timestamp advanced by
// the wall time since the last packet.
func (c *continuity) rewrite(pkt *rtp.Packet, clockRate int, now time.Time) {
	if !c.joined {
		c.joined = true
		if c.active {
			gap := uint32(now.Sub(c.lastAt).Seconds() * float64(clockRate))
			c.seqOff = c.lastSeq + 1 - pkt.SequenceNumber
			c.tsOff = c.lastTS + max(gap, 1) - pkt.Timestamp
		}
	}
	pkt.SequenceNumber += c.seqOff
	pkt.Timestamp += c.tsOff
	c.lastSeq, c.lastTS, c.lastAt, c.active = pkt.SequenceNumber, pkt.Timestamp, now, true
}

// Status is a snapshot of the upstream, for pages and tests.
type Status struct {
	State   string // one of metrics.States
	Holds   int    // viewers that hold the upstream open
	LastErr string // why the last attempt failed, if it did
}

type acquireReq struct {
	reply  chan acquireRes // capacity 1
	failed bool            // owned by run: answered with an error (no hold kept)
}

type acquireRes struct {
	stream *gortsplib.ServerStream
	err    error
}

// event is what an attempt goroutine reports to run.
type event struct {
	a      *attempt
	desc   *description.Session         // described: run replies on streamCh
	stream chan *gortsplib.ServerStream // for described
	live   bool                         // PLAY succeeded
	err    error                        // the attempt ended
}

// Initialize checks the fields and starts the run goroutine.
func (s *Source) Initialize() error {
	if s.Camera == "" || s.URL == nil || s.Dial == nil || s.Server == nil || s.Logger == nil || s.Metrics == nil {
		return errors.New("upstream: Camera, URL, Dial, Server, Logger and Metrics are required")
	}
	if s.ReadTimeout <= 0 {
		s.ReadTimeout = 10 * time.Second
	}
	if s.RetryMin <= 0 {
		s.RetryMin = 250 * time.Millisecond
	}
	if s.RetryMax <= 0 {
		s.RetryMax = 5 * time.Second
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.acquire = make(chan *acquireReq)
	s.abandon = make(chan *acquireReq)
	s.release = make(chan struct{})
	s.events = make(chan event)
	s.done = make(chan struct{})
	s.status.State = metrics.StateIdle
	s.Logger = s.Logger.With("camera", s.Camera)
	go s.run()
	return nil
}

// Close stops the upstream: the tunnel closes, viewers' sessions end, and
// waiting Acquire calls fail with ErrClosed. It waits for everything to stop.
func (s *Source) Close() {
	s.cancel()
	<-s.done
}

// Status returns a snapshot of the upstream's state.
func (s *Source) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

// Acquire holds the upstream open for one viewer and returns its stream once
// it is live: at once when it already is, else after the tunnel and the
// camera's RTSP session are up. On success the caller must call Release
// exactly once when the viewer leaves. On error (ctx done, the upstream
// failed to open, Close) nothing is held.
func (s *Source) Acquire(ctx context.Context) (*gortsplib.ServerStream, error) {
	req := &acquireReq{reply: make(chan acquireRes, 1)}
	select {
	case s.acquire <- req:
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	case <-s.done:
		return nil, ErrClosed
	}
	select {
	case res := <-req.reply:
		if res.err != nil {
			return nil, res.err // run dropped the hold
		}
		return res.stream, nil
	case <-ctx.Done():
		// The hold was taken; run gives it back (whether or not it has
		// answered meanwhile).
		select {
		case s.abandon <- req:
		case <-s.done:
		}
		return nil, context.Cause(ctx)
	case <-s.done:
		return nil, ErrClosed
	}
}

// Release gives back one hold taken by a successful Acquire.
func (s *Source) Release() {
	select {
	case s.release <- struct{}{}:
	case <-s.done:
	}
}

// attempt is one tunnel and RTSP client session, run by its own goroutine.
type attempt struct {
	cancel context.CancelCauseFunc
	done   chan struct{}
}

// runState is owned by run.
type runState struct {
	holds     int
	waiters   []*acquireReq
	stream    *gortsplib.ServerStream
	live      bool
	cur       *attempt
	openStart time.Time
	retries   int
	lastErr   string

	linger  *time.Timer // armed when holds drops to 0
	retry   *time.Timer // armed between reconnect attempts
	window  *time.Timer // armed while reconnecting
	lingerC <-chan time.Time
	retryC  <-chan time.Time
	windowC <-chan time.Time
}

func (s *Source) run() {
	defer close(s.done)
	st := &runState{}
	defer func() {
		s.stopAttempt(st, errors.New("relay shutting down"))
		s.closeStream(st)
		s.failWaiters(st, ErrClosed)
		s.setState(st, metrics.StateIdle)
	}()
	for {
		select {
		case <-s.ctx.Done():
			return

		case req := <-s.acquire:
			st.holds++
			s.stopTimer(&st.linger, &st.lingerC)
			if st.live {
				req.reply <- acquireRes{stream: st.stream}
				s.publish(st)
				continue
			}
			st.waiters = append(st.waiters, req)
			if st.cur == nil && st.retryC == nil {
				st.openStart, st.retries = time.Now(), 0 // a fresh opening, not a reconnect
				s.start(st)
			}
			s.publish(st)

		case req := <-s.abandon:
			if i := slices.Index(st.waiters, req); i >= 0 {
				st.waiters = slices.Delete(st.waiters, i, i+1)
				s.releaseHold(st)
			} else if !req.failed {
				s.releaseHold(st) // it was given the stream
			}

		case <-s.release:
			s.releaseHold(st)

		case <-st.lingerC:
			st.lingerC = nil
			if st.holds > 0 {
				continue
			}
			s.Logger.Info("upstream closing", "reason", "no viewers", "linger", s.Linger.String())
			s.stopAttempt(st, fmt.Errorf("no viewers for %v", s.Linger))
			s.stopTimer(&st.retry, &st.retryC)
			s.stopTimer(&st.window, &st.windowC)
			s.closeStream(st)
			s.setState(st, metrics.StateIdle)

		case ev := <-s.events:
			if ev.a != st.cur {
				// A stale attempt (stopped already): answer and ignore.
				if ev.stream != nil {
					ev.stream <- nil
				}
				continue
			}
			switch {
			case ev.desc != nil:
				ev.stream <- s.streamFor(st, ev.desc)
			case ev.live:
				s.onLive(st)
			default:
				s.onEnded(st, ev.err)
			}

		case <-st.retryC:
			st.retryC = nil
			if st.holds > 0 {
				s.start(st)
			}

		case <-st.windowC:
			st.windowC = nil
			s.Logger.Warn("upstream gave up reconnecting", "window", s.ReconnectWindow.String(), "error", st.lastErr)
			s.stopAttempt(st, fmt.Errorf("reconnect window of %v ended", s.ReconnectWindow))
			s.stopTimer(&st.retry, &st.retryC)
			s.closeStream(st)
			s.failWaiters(st, fmt.Errorf("camera %s is unavailable: %s", s.Camera, st.lastErr))
			s.setState(st, metrics.StateIdle)
		}
	}
}

// releaseHold drops one hold; the last one arms the linger timer.
func (s *Source) releaseHold(st *runState) {
	if st.holds > 0 {
		st.holds--
	}
	if st.holds == 0 {
		s.armTimer(&st.linger, &st.lingerC, s.Linger)
	}
	s.publish(st)
}

// start begins a new attempt.
func (s *Source) start(st *runState) {
	ctx, cancel := context.WithCancelCause(s.ctx)
	a := &attempt{cancel: cancel, done: make(chan struct{})}
	st.cur = a
	if st.stream == nil {
		s.setState(st, metrics.StateOpening)
	} else {
		s.setState(st, metrics.StateReconnecting)
	}
	go s.runAttempt(ctx, a)
}

// stopAttempt cancels the current attempt with cause and waits for it.
func (s *Source) stopAttempt(st *runState, cause error) {
	a := st.cur
	if a == nil {
		return
	}
	st.cur = nil
	st.live = false
	a.cancel(cause)
	// The attempt may be blocked sending an event: drain until it exits.
	for {
		select {
		case ev := <-s.events:
			if ev.stream != nil {
				ev.stream <- nil
			}
		case <-a.done:
			return
		}
	}
}

// streamFor returns the ServerStream for a new description: the current
// one when the medias and codecs are the same, else a new one (the old is
// closed, ending its viewers' sessions).
func (s *Source) streamFor(st *runState, desc *description.Session) *gortsplib.ServerStream {
	if st.stream != nil && sameMedias(st.stream.Desc, desc) {
		return st.stream
	}
	if st.stream != nil {
		s.Logger.Info("camera description changed; viewers must reconnect")
		s.closeStream(st)
	}
	stream := &gortsplib.ServerStream{Server: s.Server, Desc: desc}
	s.cont = map[*description.Media]*continuity{}
	if err := stream.Initialize(); err != nil {
		s.Logger.Error("failed to create stream", "error", err)
		return nil
	}
	st.stream = stream
	return stream
}

func (s *Source) onLive(st *runState) {
	st.live = true
	if st.retries > 0 || st.windowC != nil {
		s.Logger.Info("upstream reconnected", "attempts", st.retries)
	} else {
		d := time.Since(st.openStart)
		s.Metrics.UpstreamOpen.WithLabelValues(s.Camera).Observe(d.Seconds())
		s.Logger.Info("upstream live", "open_duration", d.Round(time.Millisecond).String())
	}
	st.retries = 0
	st.lastErr = ""
	s.stopTimer(&st.window, &st.windowC)
	// State first, so that Status is live once an Acquire has returned.
	s.setState(st, metrics.StateLive)
	for _, w := range st.waiters {
		w.reply <- acquireRes{stream: st.stream}
	}
	st.waiters = nil
}

func (s *Source) onEnded(st *runState, err error) {
	wasLive := st.live
	st.cur, st.live = nil, false
	st.lastErr = err.Error()
	switch {
	case st.holds == 0:
		// Nobody watches: no reason to reconnect.
		s.stopTimer(&st.window, &st.windowC) // the next opening is a fresh one
		s.closeStream(st)
		s.failWaiters(st, err)
		s.setState(st, metrics.StateIdle)
	case st.stream == nil || (!wasLive && st.windowC == nil):
		// Opening failed: tell the waiting viewers now rather than
		// retrying behind their backs; the next viewer tries again.
		s.Logger.Warn("upstream failed to open", "error", err)
		s.closeStream(st)
		s.failWaiters(st, fmt.Errorf("camera %s is unavailable: %w", s.Camera, err))
		s.setState(st, metrics.StateIdle)
	default:
		// A live stream dropped (or a reconnect failed): viewers wait while
		// we retry, within the window.
		if wasLive {
			s.Logger.Warn("upstream dropped; reconnecting", "error", err, "window", s.ReconnectWindow.String())
			s.Metrics.UpstreamRestarts.WithLabelValues(s.Camera).Inc()
			if s.ReconnectWindow <= 0 {
				st.windowC = closedTimeC()
			} else {
				s.armTimer(&st.window, &st.windowC, s.ReconnectWindow)
			}
		}
		st.retries++
		backoff := min(s.RetryMin<<min(st.retries-1, 16), s.RetryMax)
		s.armTimer(&st.retry, &st.retryC, backoff)
		s.setState(st, metrics.StateReconnecting)
	}
}

func (s *Source) failWaiters(st *runState, err error) {
	for _, w := range st.waiters {
		w.failed = true
		w.reply <- acquireRes{err: err}
		st.holds-- // a failed Acquire holds nothing
	}
	st.waiters = nil
	if st.holds < 0 {
		st.holds = 0
	}
	if st.holds == 0 && st.lingerC == nil {
		s.stopTimer(&st.retry, &st.retryC)
	}
}

func (s *Source) closeStream(st *runState) {
	if st.stream != nil {
		st.stream.Close()
		if s.OnStreamClose != nil {
			s.OnStreamClose(st.stream)
		}
		st.stream = nil
	}
	st.live = false
}

func (s *Source) setState(st *runState, state string) {
	s.Metrics.SetUpstreamState(s.Camera, state)
	s.mu.Lock()
	s.status.State = state
	s.mu.Unlock()
	s.publish(st)
}

func (s *Source) publish(st *runState) {
	s.mu.Lock()
	s.status.Holds = st.holds
	s.status.LastErr = st.lastErr
	s.mu.Unlock()
}

func (s *Source) armTimer(t **time.Timer, c *<-chan time.Time, d time.Duration) {
	s.stopTimer(t, c)
	*t = time.NewTimer(d)
	*c = (*t).C
}

func (s *Source) stopTimer(t **time.Timer, c *<-chan time.Time) {
	if *t != nil {
		(*t).Stop()
	}
	*t, *c = nil, nil
}

func closedTimeC() <-chan time.Time {
	c := make(chan time.Time, 1)
	c <- time.Now()
	return c
}

// runAttempt opens the tunnel and the camera's RTSP session, feeds the
// stream, and reports to run until the session ends or ctx is canceled.
func (s *Source) runAttempt(ctx context.Context, a *attempt) {
	defer close(a.done)
	err := s.attempt(ctx, a)
	if ctx.Err() != nil {
		return // stopped by run, which no longer waits for events
	}
	s.send(ctx, event{a: a, err: err})
}

// send reports ev to run unless the attempt was stopped.
func (s *Source) send(ctx context.Context, ev event) bool {
	select {
	case s.events <- ev:
		return true
	case <-ctx.Done():
		return false
	}
}

// ender is implemented by core.Tunnel.
type ender interface {
	End(reason string, goingAway bool) error
}

func (s *Source) attempt(ctx context.Context, a *attempt) (err error) {
	conn, err := s.Dial(ctx)
	if err != nil {
		return err
	}
	// The tunnel is ended with the reason the session stopped, before the
	// client closes it, so that its log line says why.
	defer func() {
		reason := "camera session ended"
		switch {
		case ctx.Err() != nil:
			reason = context.Cause(ctx).Error()
		case err != nil:
			reason = err.Error()
		}
		// Close code 1001 (going away) when the relay shuts down.
		goingAway := s.ctx.Err() != nil
		if e, ok := conn.(ender); ok {
			e.End(reason, goingAway)
		} else {
			conn.Close()
		}
	}()
	var once sync.Once
	c := &gortsplib.Client{
		Scheme:      "rtsp",
		Host:        s.URL.Host,
		ReadTimeout: s.ReadTimeout,
		UserAgent:   "rtsptunnel-relay",
		// UDP cannot cross the tunnel.
		Transport: ptr(gortsplib.TransportTCP),
		DialContext: func(context.Context, string, string) (net.Conn, error) {
			var c net.Conn
			once.Do(func() { c = conn })
			if c == nil {
				return nil, errors.New("the tunnel carries one connection")
			}
			return c, nil
		},
		OnDecodeError: func(err error) { s.Logger.Debug("camera stream decode error", "error", err) },
	}
	if err := c.Start2(); err != nil {
		return fmt.Errorf("RTSP client: %w", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, c.Close)
	defer stop()

	desc, _, err := c.Describe(s.URL)
	if err != nil {
		return fmt.Errorf("DESCRIBE %s: %w", redact(s.URL), err)
	}
	if len(desc.Medias) == 0 {
		return fmt.Errorf("DESCRIBE %s: the camera offers no media", redact(s.URL))
	}
	if err := c.SetupAll(desc.BaseURL, desc.Medias); err != nil {
		return fmt.Errorf("SETUP: %w", err)
	}
	reply := make(chan *gortsplib.ServerStream, 1)
	if !s.send(ctx, event{a: a, desc: desc, stream: reply}) {
		return context.Cause(ctx)
	}
	stream := <-reply
	if stream == nil {
		return errors.New("no stream for the camera's description")
	}
	s.feed(c, desc, stream)
	if _, err := c.Play(nil); err != nil {
		return fmt.Errorf("PLAY: %w", err)
	}
	if !s.send(ctx, event{a: a, live: true}) {
		return context.Cause(ctx)
	}
	if err := c.Wait(); err != nil {
		return fmt.Errorf("camera session: %w", err)
	}
	return errors.New("camera session ended")
}

// feed routes the client's packets to stream, whose medias correspond to
// desc's by index (see sameMedias).
func (s *Source) feed(c *gortsplib.Client, desc *description.Session, stream *gortsplib.ServerStream) {
	out := make(map[*description.Media]*description.Media, len(desc.Medias))
	cont := make(map[*description.Media]*continuity, len(desc.Medias))
	// formats maps the client's formats to the stream's, which stay the
	// same across reconnects (see sameMedias).
	formats := map[format.Format]format.Format{}
	for i, m := range desc.Medias {
		sm := stream.Desc.Medias[i]
		out[m] = sm
		for j, f := range m.Formats {
			formats[f] = sm.Formats[j]
		}
		c := s.cont[sm]
		if c == nil {
			c = &continuity{}
			s.cont[sm] = c
		}
		c.joined = false // a new camera session: new offsets
		cont[m] = c
	}
	if s.OnResume != nil {
		s.OnResume(stream)
	}
	playerBytes := s.Metrics.PlayerBytes.WithLabelValues(s.Camera)
	last := stream.BytesSent() // owned by the client's reader goroutine
	count := func() {
		if n := stream.BytesSent(); n > last {
			playerBytes.Add(float64(n - last))
			last = n
		}
	}
	c.OnPacketRTPAny(func(m *description.Media, f format.Format, pkt *rtp.Packet) {
		now := time.Now()
		ntp, ok := c.PacketNTP(m, pkt)
		if !ok {
			ntp = now
		}
		cont[m].rewrite(pkt, f.ClockRate(), now)
		stream.WritePacketRTPWithNTP(out[m], pkt, ntp) // errors only after Close
		count()
		if s.OnPacket != nil {
			s.OnPacket(stream, out[m], formats[f], pkt)
		}
	})
	c.OnPacketRTCPAny(func(m *description.Media, pkt rtcp.Packet) {
		// Sender reports are made by the stream itself; forward the rest.
		if _, ok := pkt.(*rtcp.SenderReport); ok {
			return
		}
		stream.WritePacketRTCP(out[m], pkt)
		count()
	})
}

// sameMedias reports whether b can be served through a stream made for a:
// the same medias in the same order with the same formats.
func sameMedias(a, b *description.Session) bool {
	if len(a.Medias) != len(b.Medias) {
		return false
	}
	for i := range a.Medias {
		fa, fb := a.Medias[i].Formats, b.Medias[i].Formats
		if a.Medias[i].Type != b.Medias[i].Type || len(fa) != len(fb) {
			return false
		}
		for j := range fa {
			if fa[j].Codec() != fb[j].Codec() || fa[j].PayloadType() != fb[j].PayloadType() || fa[j].ClockRate() != fb[j].ClockRate() {
				return false
			}
		}
	}
	return true
}

// redact returns u without its password, for logs and errors.
func redact(u *base.URL) string {
	c := *u
	if c.User != nil {
		c.User = nil
	}
	return c.String()
}

func ptr[T any](v T) *T { return &v }
