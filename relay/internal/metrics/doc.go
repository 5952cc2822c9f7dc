// Package metrics defines the relay's Prometheus collectors.
//
// All names carry the relay_ prefix and only bounded labels: camera names
// come from the configuration, outcomes and directions from fixed lists, and
// method statuses from HTTP status codes. The registry is passed in, so
// tests and embedding programs choose where the series go.
//
//	relay_sessions_total{camera,outcome}   counter: sessions ended, by outcome (see Outcomes)
//	relay_sessions_active                  gauge: sessions from player connect to close
//	relay_open_duration_seconds            histogram: player connect until the module's websocket is up
//	relay_bytes_total{direction}           counter: tunnel payload bytes, to_camera or to_player
//	relay_method_calls_total{status}       counter: tunnelOpen calls by result (see MethodStatus)
package metrics
