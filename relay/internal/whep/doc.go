// Package whep serves browser viewers of the relay's shared cameras over
// WebRTC, through WHEP (the IETF WebRTC-HTTP egress protocol, the playback
// counterpart of WHIP, RFC 9725), with pion/webrtc.
//
// How a viewer is fed, and why:
//
//   - From the camera's shared upstream (upstream.Source), as a second
//     consumer beside the RTSP players' gortsplib ServerStream: an offer
//     takes a hold with Acquire exactly like an RTSP player's DESCRIBE, so
//     the first viewer of either kind opens the tunnel, later ones join, and
//     linger and reconnects behave the same. Packets arrive through the
//     source's OnPacket hook on the camera's reader goroutine.
//   - One feed per camera (feed.go) depacketizes the H.264 and packetizes it
//     again, without transcoding: cameras packetize for 1500-byte Ethernet or
//     TCP, while WebRTC's path (SRTP, maybe IPv6, maybe a tunnel) needs
//     smaller datagrams, and browsers learn SPS/PPS only in-band (the answer
//     has no sprop-parameter-sets), so they go in front of every IDR frame.
//     It keeps the last keyframe so that a joining viewer sees a picture as
//     soon as DTLS is up, instead of waiting up to a GOP (an RTSP camera
//     cannot be asked for a keyframe).
//   - Each viewer has a bounded queue of frames; the feed never blocks on it.
//     A full queue drops frames for that viewer only, and the viewer resumes
//     at the next keyframe, as after a reconnect of the upstream (OnResume):
//     sending a frame whose references the viewer lacks gives smeared video,
//     so frames after a gap are held back until a keyframe. Each viewer
//     numbers its own packets, so the gaps are invisible to its receiver and
//     NACKs refer to packets that exist (pion's responder answers them).
//   - ICE runs on one UDP port (a mux) and one TCP port (ICE-TCP, passive)
//     for all peers, with optional public addresses for 1:1 NAT; the relay
//     is the reachable side and needs no STUN server. Answers carry every
//     candidate, so there is no trickle ICE (PATCH is 405).
//
// Refusals (bad token, unknown camera, malformed SDP, no H.264 in the
// offer, a body over MaxOfferSize) are decided before the upstream is
// touched, so they open no tunnel. A camera whose video is not H.264 is
// found out when its description is first seen, and offers in the next
// minute are refused without opening it again.
package whep
