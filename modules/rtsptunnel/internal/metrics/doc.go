// Package metrics holds the module's Prometheus metrics and the HTTP server
// that exposes them.
//
// [New] registers every collector on the registry it is given (no globals), with
// the constant labels iothub, edge_device and module_name when known: the
// labels of IoT Edge's built-in metrics (its BuiltInMetrics.md). The session
// manager creates every reason series at zero ([Metrics.InitReasons]). The other
// packages record through [Metrics] methods, so label values stay bounded:
//
//	rtsptunnel_sessions_active                      gauge     tunnels open now
//	rtsptunnel_sessions_opened_total                counter   successful tunnelOpen calls
//	rtsptunnel_sessions_failed_total{reason}        counter   failed tunnelOpen calls, by session.FailReason
//	rtsptunnel_sessions_closed_total{reason}        counter   ended tunnels, by tunnel.Reason
//	rtsptunnel_bytes_total{direction}               counter   bytes delivered: to_remote, to_camera
//	rtsptunnel_open_duration_seconds                histogram time to dial camera and websocket
//	rtsptunnel_hub_connected                        gauge     1 while the IoT Hub/edgeHub connection is up
//	rtsptunnel_hub_reconnects_total                 counter   connections after the first
//	rtsptunnel_method_calls_total{method,status}    counter   direct method calls answered
//
// [Server] serves /metrics (Prometheus text; the IoT Edge metrics-collector
// convention is port 9600) and /healthz: 200 "ok" while the hub connection is
// up, and also during a grace period (Options.HealthGrace, default 60s) after
// start and after a disconnect, so that start-up and token-renewal reconnects
// do not flap the health check; 503 otherwise.
//
// All Metrics methods are safe for concurrent use and may be called on a nil
// *Metrics (they do nothing), so tests and tools can omit metrics.
package metrics
