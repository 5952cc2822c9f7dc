// Package app assembles the relay from its parts and runs it: [Run] is the
// whole program behind main, [App] the long-lived object (exported config
// fields, Initialize, Close).
//
//	players ──tcp──► rtspfront ──► core.HandlePlayer ──► opener ──► iothub (tunnelOpen)
//	modules ──wss──► http.Server ─► wsserver.Handler ─► core.AcceptModule
//	Prometheus ─────► metrics server (/metrics, /healthz)
//
// When every listener is up, Run writes one JSON line to stdout (see
// [Ready]); logs are JSON lines on stderr.
package app
