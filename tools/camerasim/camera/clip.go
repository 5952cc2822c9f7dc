package camera

import (
	_ "embed" // for the clip
	"errors"
	"fmt"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
)

// The clip is generated once and committed; see clip/README.md. Regenerating it gives the
// same bytes with the same ffmpeg/x264 build (x264 is deterministic by default).
//
// Why each option: testsrc is synthetic and compresses to ~100 KB; baseline profile and
// -bf 0 mean no B-frames, so PTS equals DTS and RTP timestamps simply grow by one frame
// per access unit; -g/-keyint_min 25 with -sc_threshold 0 give exactly one IDR per second
// (a late joiner waits at most 1 s for a keyframe); slices=1 keeps one slice per picture;
// filter_units drops x264's SEI (it carries the encoder's version and options string).
//
//go:generate ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc=size=320x240:rate=25:duration=10 -c:v libx264 -profile:v baseline -pix_fmt yuv420p -g 25 -keyint_min 25 -sc_threshold 0 -bf 0 -x264-params slices=1 -bsf:v filter_units=remove_types=6 -f h264 clip/testsrc.h264

//go:embed clip/testsrc.h264
var clipH264 []byte

const (
	// clipFPS is the frame rate the clip was encoded with (see the go:generate line).
	clipFPS = 25

	// clockRate is the RTP clock rate of H.264 (RFC 6184).
	clockRate = 90000

	// frameTicks is the RTP timestamp increment of one frame.
	frameTicks = clockRate / clipFPS
)

// accessUnit is one picture: its NAL units without start codes.
type accessUnit struct {
	nalus [][]byte
	idr   bool
}

// clip is a parsed H.264 elementary stream, ready to be looped.
type clip struct {
	sps, pps []byte
	aus      []accessUnit
}

// parseClip splits an Annex-B H.264 stream into access units.
//
// A new access unit starts at a non-VCL NAL unit that may only precede a picture
// (AUD, SPS, PPS, SEI) or at a slice whose first_mb_in_slice is 0, following
// ITU-T H.264 7.4.1.2.3; this is exact for the single-slice, B-frame-free stream we ship.
// SPS and PPS are kept apart (they go into the SDP) and are re-sent in front of every IDR
// picture, as cameras do, so a client that joins mid-stream can start decoding at the
// next keyframe.
func parseClip(buf []byte) (*clip, error) {
	var nalus h264.AnnexB
	if err := nalus.Unmarshal(buf); err != nil {
		return nil, fmt.Errorf("failed to split the clip into NAL units: %w", err)
	}

	c := &clip{}
	var cur accessUnit
	curHasSlice := false
	flush := func() {
		if curHasSlice {
			c.aus = append(c.aus, cur)
		}
		cur = accessUnit{}
		curHasSlice = false
	}

	for _, nalu := range nalus {
		if len(nalu) == 0 {
			continue
		}
		switch typ := h264.NALUType(nalu[0] & 0x1f); typ {
		case h264.NALUTypeSPS:
			flush()
			if c.sps == nil {
				c.sps = nalu
			}
		case h264.NALUTypePPS:
			flush()
			if c.pps == nil {
				c.pps = nalu
			}
		case h264.NALUTypeAccessUnitDelimiter, h264.NALUTypeSEI:
			// Dropped: the AUD carries nothing a client needs, and the SEI is x264's banner.
			flush()
		case h264.NALUTypeIDR, h264.NALUTypeNonIDR:
			// first_mb_in_slice is the first ue(v) of the slice header; its value is 0
			// exactly when the first bit after the NAL header is 1.
			if len(nalu) < 2 {
				return nil, fmt.Errorf("truncated slice NAL unit of type %v", typ)
			}
			if nalu[1]&0x80 != 0 {
				flush()
			}
			cur.nalus = append(cur.nalus, nalu)
			cur.idr = cur.idr || typ == h264.NALUTypeIDR
			curHasSlice = true
		default:
			// Other types (filler, end of sequence ...) are not produced by x264 here and
			// are not needed by a client.
		}
	}
	flush()

	switch {
	case c.sps == nil:
		return nil, errors.New("clip has no SPS")
	case c.pps == nil:
		return nil, errors.New("clip has no PPS")
	case len(c.aus) == 0:
		return nil, errors.New("clip has no pictures")
	case !c.aus[0].idr:
		return nil, errors.New("clip does not start with an IDR picture")
	}

	var sps h264.SPS
	if err := sps.Unmarshal(c.sps); err != nil {
		return nil, fmt.Errorf("failed to parse the clip's SPS: %w", err)
	}
	if sps.ProfileIdc != 66 {
		return nil, fmt.Errorf("clip has profile_idc %d, want 66 (baseline: no B-frames)", sps.ProfileIdc)
	}

	// Put the parameter sets in front of each IDR picture.
	for i := range c.aus {
		if c.aus[i].idr {
			c.aus[i].nalus = append([][]byte{c.sps, c.pps}, c.aus[i].nalus...)
		}
	}

	return c, nil
}
