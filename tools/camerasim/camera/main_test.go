package camera

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them: every Server must
// stop its streamer and gortsplib's goroutines in Close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
