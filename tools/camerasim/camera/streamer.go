package camera

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"
)

const (
	// frameInterval is the wall-clock time between two pictures.
	frameInterval = time.Second / clipFPS

	// maxLag is how far the streamer may fall behind its schedule (a starved CI machine)
	// before it stops catching up in a burst and restarts its schedule from now.
	maxLag = time.Second
)

// runStreamer sends the clip in a loop, one access unit per frame interval, until ctx
// is done. It runs in its own goroutine and owns s.enc.
//
// RTP timestamps start at a random value and grow by exactly one frame (3600 ticks at
// 90 kHz) per access unit, across loops too, so a client sees one continuous live
// stream. Pacing follows an absolute schedule rather than sleeping a fixed interval, so
// the rate does not drift.
func (s *Server) runStreamer(ctx context.Context) {
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	base := binary.BigEndian.Uint32(b[:])

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()

	interval := s.frameInterval
	if interval == 0 {
		interval = frameInterval
	}

	epoch := time.Now() // schedule: frame n is due at epoch + (n-epochN)*frameInterval
	epochN := uint64(0)

	for n := uint64(0); ; n++ {
		due := epoch.Add(time.Duration(n-epochN) * interval)
		if wait := time.Until(due); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
		} else if -wait > maxLag {
			s.Logger.Warn("streamer fell behind, restarting its schedule", "lag", -wait)
			epoch, epochN = time.Now(), n
			due = epoch
		}
		if ctx.Err() != nil {
			return
		}

		au := s.clip.aus[n%uint64(len(s.clip.aus))]
		pkts, err := s.enc.Encode(au.nalus)
		if err != nil {
			s.Logger.Error("failed to packetize a picture, stopping the stream", "error", err)
			return
		}
		ts := base + uint32(n)*frameTicks // wraps modulo 2^32 as RTP timestamps do
		for _, pkt := range pkts {
			pkt.Timestamp = ts
			err := s.stream.WritePacketRTPWithNTP(s.media, pkt, due)
			var closed liberrors.ErrServerStreamClosed
			if errors.As(err, &closed) {
				return
			}
			if err != nil {
				s.Logger.Debug("failed to write a packet", "error", err)
			}
		}
	}
}
