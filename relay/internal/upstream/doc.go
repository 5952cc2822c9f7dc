// Package upstream is one shared camera's source: an RTSP client of the
// camera through a tunnel, opened on demand and fanned out to every viewer
// through one gortsplib ServerStream.
//
// Lifecycle, owned by one run goroutine per camera:
//
//	idle ──Acquire──► opening: Dial (tunnelOpen + websocket), then DESCRIBE,
//	  ▲                 SETUP (TCP interleaved) and PLAY through the tunnel
//	  │                       │ ok                    │ failed: waiters get the error
//	  │                       ▼                       ▼
//	  │                     live ◄──────────────── (idle)
//	  │   linger after        │ tunnel or camera dropped
//	  │   the last Release    ▼
//	  └──────────────── reconnecting: retries with backoff while viewers
//	                    wait, at most ReconnectWindow; then their sessions
//	                    end (the stream is closed)
//
// Fan-out: packets from the client are written to the ServerStream, which
// queues them for each reader in a bounded ring (gortsplib's write queue,
// Server.WriteQueueSize). A full queue drops the packet for that reader only
// and reports it through the server handler's OnStreamWriteError; the
// client's reader never blocks on a viewer, so one slow viewer does not slow
// the camera or the others.
//
// A reconnect keeps the ServerStream when the camera describes the same
// medias and codecs, so viewers stay connected across a dropped tunnel;
// otherwise the old stream is closed (viewers reconnect and get the new
// description).
package upstream
