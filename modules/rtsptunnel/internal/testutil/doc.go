// Package testutil holds the helpers the module's tests share: certificate
// authorities and leaf certificates (in memory and as PEM files), log sinks
// that tests can query, polling and run-until-cancelled helpers, test
// contexts and free loopback addresses.
//
// It is for _test.go files only: no package that ships in the binary imports
// it (TestNotInBinary checks `go list -deps` of the main package). It depends on
// the standard library alone, so it adds no requirement to go.mod. The hub's
// emulator tests (internal/hub/emulatortest, a module of its own inside this
// tree) use it too: Go's internal rule goes by import path.
//
// Helpers take a testing.TB and fail the test on any setup error, so callers
// need no error handling; whatever they create is released at t.Cleanup.
// Goroutine leaks are checked with go.uber.org/goleak in each package's
// TestMain, not here.
package testutil
