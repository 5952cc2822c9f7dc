package camera

import (
	"bytes"
	"strings"
	"testing"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
)

func TestEmbeddedClip(t *testing.T) {
	if n := len(clipH264); n == 0 || n > 300*1024 {
		t.Fatalf("embedded clip is %d bytes, want 1..300 KiB", n)
	}
	c, err := parseClip(clipH264)
	if err != nil {
		t.Fatalf("parseClip: %v", err)
	}

	// 10 s at 25 fps, one IDR every 25 pictures.
	if got, want := len(c.aus), 10*clipFPS; got != want {
		t.Fatalf("clip has %d pictures, want %d", got, want)
	}
	for i, au := range c.aus {
		if want := i%clipFPS == 0; au.idr != want {
			t.Errorf("picture %d: idr = %v, want %v", i, au.idr, want)
		}
		if au.idr != h264.IsRandomAccess(au.nalus) {
			t.Errorf("picture %d: idr flag disagrees with its NAL units", i)
		}
		slices := 0
		for _, nalu := range au.nalus {
			switch h264.NALUType(nalu[0] & 0x1f) {
			case h264.NALUTypeIDR, h264.NALUTypeNonIDR:
				slices++
			case h264.NALUTypeSEI, h264.NALUTypeAccessUnitDelimiter:
				t.Errorf("picture %d: unexpected %v NAL unit", i, h264.NALUType(nalu[0]&0x1f))
			}
		}
		if slices != 1 {
			t.Errorf("picture %d has %d slices, want 1", i, slices)
		}
		if au.idr && (!bytes.Equal(au.nalus[0], c.sps) || !bytes.Equal(au.nalus[1], c.pps)) {
			t.Errorf("IDR picture %d does not start with SPS and PPS", i)
		}
	}

	var sps h264.SPS
	if err := sps.Unmarshal(c.sps); err != nil {
		t.Fatalf("SPS: %v", err)
	}
	if sps.Width() != 320 || sps.Height() != 240 {
		t.Errorf("clip is %dx%d, want 320x240", sps.Width(), sps.Height())
	}
}

func TestParseClipErrors(t *testing.T) {
	c, err := parseClip(clipH264)
	if err != nil {
		t.Fatalf("parseClip: %v", err)
	}
	annexB := func(nalus ...[]byte) []byte {
		b, err := h264.AnnexB(nalus).Marshal()
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		return b
	}
	idr := c.aus[0].nalus[2]
	nonIDR := c.aus[1].nalus[0]
	mainSPS := append([]byte{c.sps[0], 77}, c.sps[2:]...) // profile_idc 77 (Main: B-frames allowed)

	tests := []struct {
		name    string
		in      []byte
		wantErr string
	}{
		{"empty", nil, "failed to split"},
		{"no start code", []byte{0x67, 0x42, 0x00}, "failed to split"},
		{"no SPS", annexB(c.pps, idr), "no SPS"},
		{"no PPS", annexB(c.sps, idr), "no PPS"},
		{"no pictures", annexB(c.sps, c.pps), "no pictures"},
		{"starts with a P picture", annexB(c.sps, c.pps, nonIDR, idr), "does not start with an IDR"},
		{"not baseline", annexB(mainSPS, c.pps, idr), "profile_idc 77"},
		{"truncated slice", annexB(c.sps, c.pps, []byte{0x65}), "truncated slice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseClip(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("parseClip() error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}
