package tests

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"
)

// whepViewer is a browser-like WebRTC viewer (pion): a recvonly H.264
// transceiver, a non-trickle offer, loopback candidates only (the test
// sends nothing beyond 127.0.0.0/8). It decodes what arrives into access
// units and counts them.
type whepViewer struct {
	pc        *webrtc.PeerConnection
	location  string
	packets   atomic.Int64
	frames    atomic.Int64
	keyFirst  atomic.Bool  // the first complete frame was a keyframe with SPS/PPS
	firstDone atomic.Bool  // a first frame was decoded
	failure   atomic.Value // string: what was wrong with the stream
}

func newWHEPViewer(t *testing.T) *whepViewer {
	t.Helper()
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	se := webrtc.SettingEngine{}
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetIncludeLoopbackCandidate(true)
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	pc, err := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se)).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	v := &whepViewer{pc: pc}
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		t.Fatal(err)
	}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		dec := &rtph264.Decoder{PacketizationMode: 1}
		if err := dec.Init(); err != nil {
			v.failure.Store(err.Error())
			return
		}
		for {
			p, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			v.packets.Add(1)
			au, err := dec.Decode(p)
			if errors.Is(err, rtph264.ErrMorePacketsNeeded) {
				continue
			}
			if err != nil {
				v.failure.Store("decode: " + err.Error())
				continue
			}
			if v.firstDone.CompareAndSwap(false, true) {
				v.keyFirst.Store(h264.IsRandomAccess(au) && len(au) >= 3 &&
					h264.NALUType(au[0][0]&0x1f) == h264.NALUTypeSPS && h264.NALUType(au[1][0]&0x1f) == h264.NALUTypePPS)
			}
			v.frames.Add(1)
		}
	})
	return v
}

// offer returns the viewer's complete offer.
func (v *whepViewer) offer(t *testing.T) []byte {
	t.Helper()
	offer, err := v.pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	done := webrtc.GatheringCompletePromise(v.pc)
	if err := v.pc.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	<-done
	return []byte(v.pc.LocalDescription().SDP)
}

// play makes v a viewer of camera through the relay's WHEP endpoint.
func (v *whepViewer) play(ctx context.Context, t *testing.T, wc *webChain, camera, token string) error {
	t.Helper()
	status, answer, loc := wc.whepPost(ctx, camera, token, v.offer(t))
	if status != http.StatusCreated {
		return fmt.Errorf("POST /whep/%s: %d %s", camera, status, answer)
	}
	v.location = loc
	return v.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer})
}
