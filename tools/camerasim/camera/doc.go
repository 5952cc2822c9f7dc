// Package camera is an RTSP camera simulator for tests and demos.
//
// A [Server] serves one H.264 stream (320x240, 25 fps, one keyframe per second) on one
// path, looping a 10 s clip that is embedded in the binary, so it needs no files and no
// ffmpeg at run time. Like a real IP camera it answers OPTIONS, DESCRIBE (the SDP carries
// SPS and PPS), SETUP and PLAY, optionally behind basic/digest credentials, and streams
// RTP/AVP/TCP interleaved on the RTSP connection; the UDP transport is not offered
// (clients that try it first, like ffmpeg, get 461 and fall back to TCP), so several
// servers can run side by side with nothing but a TCP port each.
//
// The stream runs whether or not anyone watches, with RTP timestamps that keep growing by
// one frame per access unit across loops, as a live source does.
//
// Usage:
//
//	cam := &camera.Server{Addr: "127.0.0.1:0", User: "admin", Pass: "secret", Logger: logger}
//	if err := cam.Initialize(); err != nil { ... }
//	defer cam.Close()
//	url := cam.URL() // rtsp://127.0.0.1:41234/stream (without credentials)
package camera
