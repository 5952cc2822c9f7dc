package core

import (
	"os"
	"testing"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/testutil"
)

// TestMain fails the package's tests if any goroutine started by this
// package is still running once they are done.
func TestMain(m *testing.M) {
	os.Exit(testutil.RunMain(m, "relay/internal/core."))
}
