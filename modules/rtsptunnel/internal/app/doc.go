// Package app wires the module together: it reads the settings and the
// identity, starts the metrics server, the session manager, the reporter and
// the IoT Hub client, applies desired-property changes live, and shuts down
// in order on SIGTERM/SIGINT. Main is the whole program; main.go only calls it.
package app
