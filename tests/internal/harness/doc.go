// Package harness builds the project's real binaries and runs them as child
// processes for the end-to-end tests and the demo: it finds the workspace,
// builds each binary once per test process, captures every process's output,
// and runs ffprobe as the independent RTSP client.
//
// For faults and real network boundaries it also has a TCP fault proxy
// (FaultProxy: freeze, reset), a plain forwarder whose current connections
// can be made half-open (Forwarder.Hold), network namespaces joined by veth
// pairs (NetNS, Veth; root only) and a real squid with its own
// configuration, Basic authentication and access log (Squid).
package harness
