// Package tests holds the end-to-end tests: they build the real binaries
// (the rtsptunnel module, the relay), run them against the IoT Hub emulator,
// the camera simulator and a test cloud endpoint, and assert on what a user
// sees: packets that ffprobe reads through the tunnel, method answers, twin
// state and metrics.
package tests
