// Package metrics defines the relay's Prometheus collectors.
//
// All names carry the relay_ prefix and only bounded labels: camera names
// come from the configuration, outcomes, states, reasons and directions
// from fixed lists, and method statuses from HTTP status codes. The
// registry is passed in, so tests and embedding programs choose where the
// series go.
//
// Tunnels (one tunnelOpen each; a shared camera holds one while anyone
// watches, a passthrough camera one per player):
//
//	relay_sessions_total{camera,outcome}       counter: tunnel sessions ended, by outcome (see Outcomes)
//	relay_sessions_active                      gauge: tunnel sessions opening or open
//	relay_open_duration_seconds                histogram: tunnelOpen call until the module's websocket is up
//	relay_edge_bytes_total{camera,direction}   counter: bytes on the edge link, to_camera or from_camera
//	relay_method_calls_total{status}           counter: tunnelOpen calls by result (see MethodStatus)
//	relay_method_retries_total                 counter: tunnelOpen calls repeated after IoT Hub's 404103
//
// Viewers and the shared upstream:
//
//	relay_player_bytes_total{camera}                 counter: bytes queued to players (fan-out: compare with from_camera)
//	relay_viewers{camera}                            gauge: players watching
//	relay_upstream_state{camera,state}               gauge: 1 for the upstream's current state (see States)
//	relay_upstream_open_duration_seconds{camera}     histogram: first viewer's request until the stream is live
//	relay_upstream_restarts_total{camera}            counter: upstream reconnects after a failure
//	relay_player_join_duration_seconds{camera}       histogram: a player's DESCRIBE until its answer
//	relay_player_packets_dropped_total{camera}       counter: packets dropped for players that read too slowly
//	relay_rtsp_refused_total{reason}                 counter: player requests refused (see Refusals)
package metrics
