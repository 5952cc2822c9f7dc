package whep

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
)

// session is one WebRTC viewer. Its sender goroutine owns the outgoing
// numbering; end may be called from anywhere, any number of times.
type session struct {
	s      *Server
	id     string
	cam    *Camera
	user   string
	stream *gortsplib.ServerStream // the stream it was given; its end ends the session
	pc     *webrtc.PeerConnection
	track  *webrtc.TrackLocalStaticRTP
	v      *viewer
	log    *slog.Logger
	start  time.Time // the offer's arrival; set before the goroutines start

	connected chan struct{} // closed when ICE and DTLS are up
	connOnce  sync.Once
	done      chan struct{} // closed by end
	endOnce   sync.Once
}

// newSession answers offer for a viewer of stream. The session does
// nothing until run; until then the caller keeps the hold on the source
// and the reservation.
func (s *Server) newSession(cam *Camera, stream *gortsplib.ServerStream, user, offer string, log *slog.Logger) (*session, *webrtc.RTPSender, string, error) {
	id, err := newID()
	if err != nil {
		return nil, nil, "", err
	}
	pc, err := s.net.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, nil, "", fmt.Errorf("failed to create the peer connection: %w", err)
	}
	track, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
		SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
	}, "video", "rtsptunnel-"+cam.Name)
	if err != nil {
		pc.Close()
		return nil, nil, "", fmt.Errorf("failed to create the track: %w", err)
	}
	ss := &session{
		s: s, id: id, cam: cam, user: user, stream: stream, pc: pc, track: track,
		v:         &viewer{ch: make(chan *accessUnit, s.QueueFrames)},
		log:       log.With("session", id[:8]),
		connected: make(chan struct{}),
		done:      make(chan struct{}),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		pc.Close()
		return nil, nil, "", fmt.Errorf("failed to apply the offer: %w", err)
	}
	sender, err := pc.AddTrack(track)
	if err != nil {
		pc.Close()
		return nil, nil, "", fmt.Errorf("failed to add the track: %w", err)
	}
	answer, err := answerSDP(ctx, pc)
	if err != nil {
		pc.Close()
		return nil, nil, "", err
	}
	if len(sender.GetParameters().Codecs) == 0 {
		pc.Close()
		return nil, nil, "", errors.New("no H.264 codec in common with the offer")
	}

	return ss, sender, answer, nil
}

// run starts the session once the server has registered it (see
// Server.add): from here on it owns a hold on the camera's source and a
// reservation, which end gives back.
func (ss *session) run(sender *webrtc.RTPSender) {
	ss.pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		switch st {
		case webrtc.PeerConnectionStateConnected:
			ss.connOnce.Do(func() { close(ss.connected) })
		case webrtc.PeerConnectionStateFailed:
			go ss.end("ICE or DTLS failed")
		case webrtc.PeerConnectionStateClosed:
			go ss.end("peer connection closed")
		}
	})
	key := ss.cam.feed.add(ss.v, ss.stream)
	ss.s.Metrics.WebRTC.Viewers.WithLabelValues(ss.cam.Name).Inc()
	ss.log.Info("webrtc viewer joined")
	go ss.send(key)
	go ss.readRTCP(sender)
}

// end stops the session: the peer connection closes, the viewer leaves
// the feed and gives back its hold on the camera.
func (ss *session) end(reason string) {
	ss.endOnce.Do(func() {
		close(ss.done)
		ss.cam.feed.remove(ss.v)
		ss.pc.Close()
		ss.s.removeSession(ss)
		ss.cam.Source.Release()
		ss.s.unreserve(ss.cam.Name)
		ss.s.Metrics.WebRTC.Viewers.WithLabelValues(ss.cam.Name).Dec()
		ss.log.Info("webrtc viewer left", "reason", reason, "frames_dropped", ss.v.dropped.Load(),
			"duration", time.Since(ss.start).Round(time.Millisecond).String())
	})
}

// send waits for the connection, starts with a keyframe, then forwards
// the camera's frames in order until the session ends.
func (ss *session) send(key *accessUnit) {
	defer ss.s.wg.Done()
	connect := time.NewTimer(ss.s.ConnectTimeout)
	defer connect.Stop()
	select {
	case <-ss.connected:
	case <-connect.C:
		ss.end(fmt.Sprintf("not connected within %v", ss.s.ConnectTimeout))
		return
	case <-ss.done:
		return
	}
	var limit <-chan time.Time
	if d := ss.s.MaxSessionDuration; d > 0 {
		t := time.NewTimer(d - time.Since(ss.start))
		defer t.Stop()
		limit = t.C
	}
	// Frames queued while ICE and DTLS came up are already late: keep the
	// newest keyframe among them.
drain:
	for {
		select {
		case a := <-ss.v.ch:
			if a != nil && a.key {
				key = a
			}
		default:
			break drain
		}
	}
	m := ss.s.Metrics.WebRTC
	packets, bytes := m.Packets.WithLabelValues(ss.cam.Name), m.Bytes.WithLabelValues(ss.cam.Name)
	seq := uint16(rand.Uint32())
	first := true
	write := func(a *accessUnit, tsAdd uint32) {
		for _, p := range a.pkts {
			cp := *p
			cp.SequenceNumber = seq
			seq++
			cp.Timestamp += tsAdd
			if err := ss.track.WriteRTP(&cp); err != nil {
				ss.log.Debug("failed to write RTP", "error", err)
			}
			packets.Inc()
			bytes.Add(float64(cp.MarshalSize()))
		}
		if first {
			first = false
			m.FirstPacket.WithLabelValues(ss.cam.Name).Observe(time.Since(ss.start).Seconds())
		}
	}
	// A keyframe at once: the viewer sees a picture now, stamped as if it
	// had just arrived so that the next frames keep their real spacing;
	// then nothing until the camera's next keyframe (the frames in between
	// refer to ones the viewer never got).
	if key != nil {
		write(key, uint32(time.Since(key.at).Seconds()*90000))
	}
	dropped := ss.v.dropped.Load()
	gated := true
	for {
		select {
		case a := <-ss.v.ch:
			if d := ss.v.dropped.Load(); d != dropped {
				// Frames were lost for this viewer: a hole in the
				// references; resume at a keyframe.
				m.Dropped.WithLabelValues(ss.cam.Name).Add(float64(d - dropped))
				dropped, gated = d, true
			}
			if a == nil {
				gated = true
				continue
			}
			if gated && !a.key {
				continue
			}
			gated = false
			write(a, 0)
		case <-limit:
			ss.end("maxSessionDuration reached")
			return
		case <-ss.done:
			return
		}
	}
}

// readRTCP counts the viewer's feedback (the interceptors answer NACKs)
// until the session ends.
func (ss *session) readRTCP(sender *webrtc.RTPSender) {
	defer ss.s.wg.Done()
	m := ss.s.Metrics.WebRTC
	nacks, plis := m.NACKs.WithLabelValues(ss.cam.Name), m.PLIs.WithLabelValues(ss.cam.Name)
	for {
		pkts, _, err := sender.ReadRTCP()
		if err != nil {
			return // closed with the peer connection
		}
		for _, p := range pkts {
			switch p.(type) {
			case *rtcp.TransportLayerNack:
				nacks.Inc()
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				plis.Inc()
			}
		}
	}
}
