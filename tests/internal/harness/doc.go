// Package harness builds the project's real binaries and runs them as child
// processes for the end-to-end tests and the demo: it finds the workspace,
// builds each binary once per test process, captures every process's output,
// and runs ffprobe as the independent RTSP client.
package harness
