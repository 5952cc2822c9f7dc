// Package load is the benchmark's traffic: a TCP "camera" that sources, sinks
// or streams bytes, and the player-side clients that drive it through a path
// (direct loopback TCP, chisel, or an rtsptunnel tunnel); and for the
// fan-out test a real RTSP camera (RTSPCamera, a gortsplib server with a
// paced H.264 stream) and RTSP players (Play: gortsplib clients that count
// what they receive and time their join).
//
// # Camera protocol
//
// A client's first line chooses what the camera does with its connection:
//
//	BENCH SOURCE\n                      write 64 KiB blocks as fast as the path takes them
//	BENCH SINK\n                        read and count everything (Camera.Sunk)
//	BENCH STREAM <bytes/s> <chunk> <fps> WRITE|WRITEV\n
//	                                    an RTSP-like stream: RTP-over-RTSP interleaved
//	                                    packets ("$", channel, length) of <chunk> bytes,
//	                                    paced to <bytes/s>; with fps > 0 the packets of
//	                                    one video frame go out back to back every 1/fps s
//	                                    (how a camera's packetizer sends), with fps 0 each
//	                                    packet is paced on its own. WRITE writes each
//	                                    packet with its own write call (as gortsplib and
//	                                    many cameras do); WRITEV writes the packets due
//	                                    together with one writev call (the same bytes at
//	                                    the same times, with far fewer system calls in
//	                                    the load generator)
//	BENCH IDLE\n                        write one byte ("!": the tunnel is up), then
//	                                    only read and discard (an idle tunnel)
//
// The camera closes the connection when the client does, or at Close.
package load
