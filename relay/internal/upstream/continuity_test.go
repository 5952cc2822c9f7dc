package upstream

import (
	"testing"
	"time"

	"github.com/pion/rtp"
)

// TestContinuity: across a reconnect the camera's new session starts from
// other numbers; viewers see the next sequence number and a timestamp
// advanced by the wall time between the two sessions.
func TestContinuity(t *testing.T) {
	var c continuity
	t0 := time.Unix(1000, 0)
	send := func(seq uint16, ts uint32, at time.Time) (uint16, uint32) {
		p := &rtp.Packet{Header: rtp.Header{SequenceNumber: seq, Timestamp: ts}}
		c.rewrite(p, 90000, at)
		return p.SequenceNumber, p.Timestamp
	}
	// First session: unchanged.
	if s, ts := send(100, 5000, t0); s != 100 || ts != 5000 {
		t.Fatalf("first packet rewritten to %d/%d", s, ts)
	}
	if s, ts := send(101, 8600, t0.Add(40*time.Millisecond)); s != 101 || ts != 8600 {
		t.Fatalf("second packet rewritten to %d/%d", s, ts)
	}
	// Reconnect 2 s later: the camera restarts at 65530 (about to wrap)
	// with a random timestamp.
	c.joined = false
	at := t0.Add(2040 * time.Millisecond)
	if s, ts := send(65530, 123, at); s != 102 || ts != 8600+180000 {
		t.Fatalf("first packet after the reconnect: %d/%d, want 102/%d", s, ts, 8600+180000)
	}
	if s, ts := send(65531, 3723, at.Add(40*time.Millisecond)); s != 103 || ts != 8600+180000+3600 {
		t.Fatalf("second packet after the reconnect: %d/%d", s, ts)
	}
	// Wrapping sequence numbers stay continuous.
	for i := range 10 {
		if s, _ := send(65532+uint16(i), 0, at); s != 104+uint16(i) {
			t.Fatalf("packet %d: seq %d, want %d", i, s, 104+i)
		}
	}
}
