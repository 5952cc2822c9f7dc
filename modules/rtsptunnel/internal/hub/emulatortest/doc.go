// Package emulatortest holds the tests of package hub that run against the
// IoT Hub / edgeHub emulator (tools/edgeemu): identity modes, method calls,
// token renewal, reconnects, websockets, desired patches, the method limit
// and workload API failures.
//
// It is a Go module of its own, inside the module's tree so that it may
// import internal/hub (Go's internal rule is on import paths): the module
// that ships, modules/rtsptunnel, then neither requires nor downloads the
// emulator, and `GOWORK=off go mod tidy` there stays clean. The workspace
// (go.work) runs these tests with the rest; they use hub's exported API only.
package emulatortest
