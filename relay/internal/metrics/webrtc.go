package metrics

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// WebRTC refusal reasons, the values of relay_webrtc_refused_total's
// reason label.
const (
	WebRTCBadRequest   = "bad_request"  // malformed SDP, no H.264 in the offer, wrong content type, body too large (4xx)
	WebRTCUnauthorized = "unauthorized" // no or invalid bearer token (401)
	WebRTCForbidden    = "forbidden"    // the user may not watch this camera (403)
	WebRTCNotFound     = "not_found"    // no such camera (404)
	WebRTCUnplayable   = "unplayable"   // the camera's codec cannot be played by browsers (422)
	WebRTCLimit        = "limit"        // maxPlayersPerCamera or maxPlayers reached (503)
	WebRTCUnavailable  = "unavailable"  // the camera's upstream could not be opened (503)
	WebRTCError        = "error"        // the relay failed to make the answer (500)
)

// WebRTCRefusals lists every WebRTC refusal reason.
var WebRTCRefusals = []string{WebRTCBadRequest, WebRTCUnauthorized, WebRTCForbidden, WebRTCNotFound, WebRTCUnplayable, WebRTCLimit, WebRTCUnavailable, WebRTCError}

// WebRTC holds the collectors of browser (WHEP) viewers.
type WebRTC struct {
	Viewers     *prometheus.GaugeVec
	Packets     *prometheus.CounterVec
	Bytes       *prometheus.CounterVec
	NACKs       *prometheus.CounterVec
	PLIs        *prometheus.CounterVec
	Dropped     *prometheus.CounterVec
	FirstPacket *prometheus.HistogramVec
	Refused     *prometheus.CounterVec
}

func newWebRTC(reg prometheus.Registerer) (*WebRTC, error) {
	w := &WebRTC{
		Viewers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "relay_webrtc_viewers",
			Help: "Browser (WHEP) viewers, by camera, from the answer until the session ends.",
		}, []string{"camera"}),
		Packets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_webrtc_packets_sent_total",
			Help: "RTP packets sent to WebRTC viewers (before SRTP; retransmissions excluded), by camera.",
		}, []string{"camera"}),
		Bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_webrtc_bytes_sent_total",
			Help: "RTP bytes (header and payload, before SRTP) sent to WebRTC viewers, by camera.",
		}, []string{"camera"}),
		NACKs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_webrtc_nacks_received_total",
			Help: "RTCP NACK messages received from WebRTC viewers (answered from the sent-packet buffer), by camera.",
		}, []string{"camera"}),
		PLIs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_webrtc_plis_received_total",
			Help: "RTCP PLI and FIR messages received from WebRTC viewers (the camera's next keyframe answers them), by camera.",
		}, []string{"camera"}),
		Dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_webrtc_frames_dropped_total",
			Help: "Frames dropped because a WebRTC viewer's queue was full (it then restarts at the next keyframe), by camera.",
		}, []string{"camera"}),
		FirstPacket: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "relay_webrtc_first_packet_seconds",
			Help:    "Time from a WHEP offer until the first RTP packet is sent to that viewer (ICE, DTLS and the keyframe), by camera.",
			Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
		}, []string{"camera"}),
		Refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_webrtc_refused_total",
			Help: "WHEP offers refused, by reason (bad_request, unauthorized, forbidden, not_found, unplayable, limit, unavailable, error).",
		}, []string{"reason"}),
	}
	for _, c := range []prometheus.Collector{w.Viewers, w.Packets, w.Bytes, w.NACKs, w.PLIs, w.Dropped, w.FirstPacket, w.Refused} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("failed to register metrics: %w", err)
		}
	}
	for _, r := range WebRTCRefusals {
		w.Refused.WithLabelValues(r)
	}
	return w, nil
}

// initCamera creates camera's WebRTC series at zero.
func (w *WebRTC) initCamera(camera string) {
	w.Viewers.WithLabelValues(camera)
	w.Packets.WithLabelValues(camera)
	w.Bytes.WithLabelValues(camera)
	w.NACKs.WithLabelValues(camera)
	w.PLIs.WithLabelValues(camera)
	w.Dropped.WithLabelValues(camera)
}
