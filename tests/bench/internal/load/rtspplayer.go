package load

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/pion/rtp"
)

// JoinTiming is a player's way to its first packet, each mark measured from
// the start of its connection (before the TCP connect).
type JoinTiming struct {
	// Described: DESCRIBE answered with the SDP (the TCP connect, the 401
	// challenge and the DESCRIBE with Digest credentials).
	Described time.Duration
	// Playing: PLAY answered (SETUP and PLAY, each authenticated).
	Playing time.Duration
	// FirstPacket: the first RTP packet received.
	FirstPacket time.Duration
}

// RTSPPlayer is an RTSP player: gortsplib's client over TCP interleaved,
// which counts the RTP packets and bytes it receives and does nothing else
// with them. Start it with Play; its methods are safe for concurrent use.
type RTSPPlayer struct {
	c        *gortsplib.Client
	timing   JoinTiming // set before Play returns
	start    time.Time  // static after Play
	received atomic.Int64
	packets  atomic.Int64
	lost     atomic.Int64
	first    chan struct{} // closed at the first RTP packet
	once     sync.Once
	firstAt  atomic.Int64  // ns after start; written once before first is closed
	done     chan struct{} // closed when the client has ended
}

// Play opens rawURL (credentials as its user info; the client answers a
// Digest challenge), sets up every media over TCP and plays. With
// waitFirst it also waits for the first RTP packet, so that Timing is
// complete. ctx bounds Play only: the player then reads and counts in its
// own goroutines until Close.
func Play(ctx context.Context, rawURL string, waitFirst bool) (*RTSPPlayer, error) {
	u, err := base.ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	p := &RTSPPlayer{first: make(chan struct{}), done: make(chan struct{})}
	tcp := gortsplib.TransportTCP
	p.c = &gortsplib.Client{
		Scheme:    u.Scheme,
		Host:      u.Host,
		Transport: &tcp,
		UserAgent: "rtsptunnel-bench",
		// gortsplib would log these with the global logger.
		OnPacketsLost: func(lost uint64) { p.lost.Add(int64(lost)) },
		OnDecodeError: func(error) {},
	}
	p.start = time.Now()
	if err := p.c.Start2(); err != nil {
		return nil, err
	}
	go func() {
		p.c.Wait()
		close(p.done)
	}()
	stop := context.AfterFunc(ctx, p.c.Close)
	defer stop()
	fail := func(what string, err error) (*RTSPPlayer, error) {
		p.Close()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	desc, _, err := p.c.Describe(u)
	if err != nil {
		return fail("DESCRIBE", err)
	}
	p.timing.Described = time.Since(p.start)
	if err := p.c.SetupAll(desc.BaseURL, desc.Medias); err != nil {
		return fail("SETUP", err)
	}
	p.c.OnPacketRTPAny(func(_ *description.Media, _ format.Format, pkt *rtp.Packet) {
		p.once.Do(func() {
			p.firstAt.Store(int64(time.Since(p.start)))
			close(p.first)
		})
		p.packets.Add(1)
		p.received.Add(int64(pkt.MarshalSize()))
	})
	if _, err := p.c.Play(nil); err != nil {
		return fail("PLAY", err)
	}
	p.timing.Playing = time.Since(p.start)
	if waitFirst {
		select {
		case <-p.first:
		case <-p.done:
			return fail("before the first packet", p.c.Wait())
		case <-ctx.Done():
			return fail("waiting for the first packet", ctx.Err())
		}
		p.timing.FirstPacket = time.Duration(p.firstAt.Load())
	}
	return p, nil
}

// Timing returns the join's marks; FirstPacket is zero unless Play waited
// for it.
func (p *RTSPPlayer) Timing() JoinTiming { return p.timing }

// Received returns the RTP bytes (header and payload) received so far.
func (p *RTSPPlayer) Received() int64 { return p.received.Load() }

// Packets returns the RTP packets received so far.
func (p *RTSPPlayer) Packets() int64 { return p.packets.Load() }

// Lost returns the packets the client found missing (sequence gaps).
func (p *RTSPPlayer) Lost() int64 { return p.lost.Load() }

// Ended reports whether the session has ended (before Close).
func (p *RTSPPlayer) Ended() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Close ends the session (gortsplib sends TEARDOWN without waiting for the
// answer and closes the connection) and waits for the client's goroutines.
func (p *RTSPPlayer) Close() {
	p.c.Close()
	<-p.done
}
