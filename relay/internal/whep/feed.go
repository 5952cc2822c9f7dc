package whep

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/pion/rtp"
)

// payloadMaxSize keeps every packet we send, with its RTP header, SRTP's
// 10-byte tag and IPv6/UDP headers, within a 1280-byte path MTU (the
// IPv6 minimum): cameras packetize for 1500-byte Ethernet and TCP, and an
// oversized datagram on the internet path is lost without trace.
const payloadMaxSize = 1200

// maxAUPackets bounds one access unit; a camera that never sets the marker
// and never changes the timestamp does not grow memory without bound.
const maxAUPackets = 4096

// accessUnit is one H.264 frame repackaged for WebRTC. It is shared by
// every viewer and never modified after it is made.
type accessUnit struct {
	pkts []*rtp.Packet
	key  bool      // an IDR frame, SPS and PPS included: a viewer can start here
	at   time.Time // when the frame arrived from the camera
}

// viewer is one WebRTC session's queue of access units.
type viewer struct {
	ch      chan *accessUnit // bounded; the feed never blocks on it
	dropped atomic.Uint64    // frames dropped because ch was full
}

// feed turns one camera's RTP packets into access units for WebRTC
// viewers: H.264 depacketized and packetized again (no transcoding) so that
// packets fit the WebRTC path, parameter sets put in front of every IDR
// frame, and the last keyframe kept so that a joining viewer sees a picture
// at once. Packets arrive on the camera's reader goroutine (see
// upstream.Source.OnPacket).
type feed struct {
	mu      sync.Mutex
	stream  *gortsplib.ServerStream // guarded by mu: the stream the state below belongs to
	forma   *format.H264            // guarded by mu: the stream's H.264 format, nil if none
	codec   string                  // guarded by mu: the stream's video codec, "" before the first stream
	codecAt time.Time               // guarded by mu: when codec was learnt
	dec     *rtph264.Decoder        // guarded by mu
	enc     *rtph264.Encoder        // guarded by mu
	sps     []byte                  // guarded by mu: the latest parameter sets
	pps     []byte                  // guarded by mu
	prevTS  uint32                  // guarded by mu: the previous packet's timestamp
	lastKey *accessUnit             // guarded by mu
	viewers map[*viewer]struct{}    // guarded by mu
}

func newFeed() *feed {
	return &feed{viewers: map[*viewer]struct{}{}}
}

// videoFormat returns the H.264 format a browser can play from desc, or
// the name of the video codec it cannot play ("" when there is no video).
func videoFormat(desc *description.Session) (*format.H264, string) {
	codec := ""
	for _, m := range desc.Medias {
		for _, f := range m.Formats {
			if h, ok := f.(*format.H264); ok && h.PacketizationMode == 1 {
				return h, "H264"
			}
			if m.Type == description.MediaTypeVideo && codec == "" {
				codec = f.Codec()
				if h, ok := f.(*format.H264); ok {
					codec = fmt.Sprintf("%s (packetization-mode %d)", h.Codec(), h.PacketizationMode)
				}
			}
		}
	}
	return nil, codec
}

// reset makes the feed follow stream. Called with mu held.
func (f *feed) reset(stream *gortsplib.ServerStream) error {
	f.stream, f.forma, f.dec, f.enc, f.lastKey = stream, nil, nil, nil, nil
	f.sps, f.pps = nil, nil
	forma, codec := videoFormat(stream.Desc)
	f.codec, f.codecAt = codec, time.Now()
	if forma == nil {
		return nil
	}
	dec, err := forma.CreateDecoder()
	if err != nil {
		return fmt.Errorf("failed to create the H.264 decoder: %w", err)
	}
	enc := &rtph264.Encoder{PayloadType: 96, PayloadMaxSize: payloadMaxSize, PacketizationMode: 1}
	if err := enc.Init(); err != nil {
		return fmt.Errorf("failed to create the H.264 encoder: %w", err)
	}
	f.forma, f.dec, f.enc = forma, dec, enc
	f.sps, f.pps = forma.SafeParams()
	return nil
}

// codecOf returns the video codec of the last stream seen ("" before any).
func (f *feed) codecOf() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.codec
}

// setCodec records the video codec the camera described, for the page
// and for refusing later offers without opening the camera.
func (f *feed) setCodec(codec string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.codec, f.codecAt = codec, time.Now()
}

// recentCodec returns the video codec if it was learnt within maxAge, else
// "": a camera may be reconfigured, so an old answer is checked again.
func (f *feed) recentCodec(maxAge time.Duration) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if time.Since(f.codecAt) > maxAge {
		return ""
	}
	return f.codec
}

// onPacket handles one packet of stream; see upstream.Source.OnPacket.
func (f *feed) onPacket(stream *gortsplib.ServerStream, _ *description.Media, forma format.Format, pkt *rtp.Packet) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if stream != f.stream {
		if err := f.reset(stream); err != nil {
			return
		}
	}
	if f.forma == nil || forma != format.Format(f.forma) {
		return
	}
	au, err := f.dec.Decode(pkt)
	ts := pkt.Timestamp
	if err == nil && !pkt.Marker {
		// The decoder split on a timestamp change: au is the previous
		// frame (cameras that never set the marker).
		ts = f.prevTS
	}
	f.prevTS = pkt.Timestamp
	if err != nil {
		if !errors.Is(err, rtph264.ErrMorePacketsNeeded) {
			// Loss or a broken packet: the decoder starts over, and viewers
			// at their next keyframe (they never see a frame with a hole).
			f.lastKey = nil
			f.broadcastGap()
		}
		return
	}
	f.publish(au, ts)
}

// publish repackages one access unit and hands it to every viewer.
// Called with mu held.
func (f *feed) publish(au [][]byte, ts uint32) {
	if len(f.viewers) == 0 && !h264.IsRandomAccess(au) {
		// Nobody watches over WebRTC: keep only what a joining viewer
		// needs (parameter sets, the next keyframe), without copying or
		// repacketizing every frame.
		for _, n := range au {
			if len(n) > 0 {
				switch h264.NALUType(n[0] & 0x1f) {
				case h264.NALUTypeSPS:
					f.sps = slices.Clone(n)
				case h264.NALUTypePPS:
					f.pps = slices.Clone(n)
				}
			}
		}
		return
	}
	var hasSPS, hasPPS bool
	nalus := make([][]byte, 0, len(au)+2)
	for _, n := range au {
		if len(n) == 0 {
			continue
		}
		n = slices.Clone(n) // the packet's buffer is not ours to keep
		switch h264.NALUType(n[0] & 0x1f) {
		case h264.NALUTypeSPS:
			f.sps, hasSPS = n, true
		case h264.NALUTypePPS:
			f.pps, hasPPS = n, true
		case h264.NALUTypeAccessUnitDelimiter:
			continue // WebRTC receivers need no delimiters
		}
		nalus = append(nalus, n)
	}
	if len(nalus) == 0 {
		return
	}
	key := h264.IsRandomAccess(nalus)
	if key {
		// Browsers learn parameter sets in-band only (the answer carries
		// no sprop-parameter-sets): put them in front of every IDR frame.
		if f.sps == nil || f.pps == nil {
			key = false // undecodable until the camera sends them
		} else {
			var pre [][]byte
			if !hasSPS {
				pre = append(pre, f.sps)
			}
			if !hasPPS {
				pre = append(pre, f.pps)
			}
			nalus = append(pre, nalus...)
		}
	}
	pkts, err := f.enc.Encode(nalus)
	if err != nil || len(pkts) > maxAUPackets {
		return
	}
	for _, p := range pkts {
		p.Timestamp = ts
	}
	a := &accessUnit{pkts: pkts, key: key, at: time.Now()}
	if key {
		f.lastKey = a
	}
	for v := range f.viewers {
		select {
		case v.ch <- a:
		default:
			v.dropped.Add(1)
		}
	}
}

// broadcastGap tells every viewer that frames are missing: a nil access
// unit makes a viewer wait for the next keyframe. Called with mu held.
func (f *feed) broadcastGap() {
	for v := range f.viewers {
		select {
		case v.ch <- nil:
		default:
			v.dropped.Add(1)
		}
	}
}

// add registers a viewer of stream and returns the last keyframe of that
// stream (nil if none yet), atomically, so that nothing is missed between
// the two.
func (f *feed) add(v *viewer, stream *gortsplib.ServerStream) *accessUnit {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.viewers[v] = struct{}{}
	if f.stream != stream {
		return nil
	}
	return f.lastKey
}

func (f *feed) remove(v *viewer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.viewers, v)
}

// resume handles a new camera session feeding stream (see
// upstream.Source.OnResume): the frames between the sessions are lost, so
// the decoder starts over and viewers wait for the next keyframe.
func (f *feed) resume(stream *gortsplib.ServerStream) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stream != stream {
		return // the first packet resets the state anyway
	}
	if f.forma != nil {
		if dec, err := f.forma.CreateDecoder(); err == nil {
			f.dec = dec
		}
	}
	f.broadcastGap()
}

// streamClosed forgets stream's state.
func (f *feed) streamClosed(stream *gortsplib.ServerStream) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stream == stream {
		f.lastKey, f.dec = nil, nil
		f.stream = nil
		f.forma = nil
	}
}
