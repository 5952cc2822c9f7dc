package emulatortest

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if goroutines outlive them: every
// connection, handler and sync goroutine must end with Run.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
