// Package testutil holds the helpers the tests module's tests share, so that
// each exists once: throw-away certificates ([NewCA], [CA.Issue],
// [CA.WriteFiles], [WriteCert]), a goroutine-safe log sink ([LogBuffer],
// [LogBuffer.Logger]), polling against a deadline ([WaitUntil]) and a sleep
// that ends with its context ([Sleep]).
//
// It is test code. Everything in the tests module is: the *_test.go files,
// the fixtures they drive (testcloud, harness) and the benchmark driver
// (bench), which may all import it. No product module can (the package is
// internal to the tests module), so none of it reaches a shipped binary.
// Goroutine-leak checks stay with go.uber.org/goleak, which the packages
// that check call in their TestMain.
package testutil
