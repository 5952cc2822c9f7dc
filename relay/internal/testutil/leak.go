package testutil

import (
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// leakWait bounds how long the leak checks give goroutines to end once
// the test has closed everything. Ending takes milliseconds; the bound
// only decides how long a real leak takes to be reported, so it is far
// beyond any scheduling delay of a loaded machine.
const leakWait = 15 * time.Second

// CheckGoroutines fails t if it leaves more goroutines running than there
// were when it started. Call it first in the test, so that its cleanup runs
// last, after everything the test started was closed. Tests that use it
// must not run in parallel with others.
func CheckGoroutines(t testing.TB) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(leakWait)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				t.Errorf("%d goroutines left running, %d before the test:\n%s", runtime.NumGoroutine(), before, Stacks())
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// RunMain runs the tests of m and, when they passed, fails the binary if a
// goroutine whose stack names marker (a package path and a dot, such as
// "relay/internal/core.") is still running after leakWait. It returns the
// exit code for os.Exit; use it from TestMain.
func RunMain(m *testing.M, marker string) int {
	code := m.Run()
	if code == 0 {
		if leaked := leakedGoroutines(marker, leakWait); leaked != "" {
			os.Stderr.WriteString("leaked goroutines:\n" + leaked)
			code = 1
		}
	}
	return code
}

// leakedGoroutines returns the stacks of the goroutines that name marker,
// other than the caller's, waiting up to wait for them to end; it returns
// "" once none is left.
func leakedGoroutines(marker string, wait time.Duration) string {
	deadline := time.Now().Add(wait)
	for {
		var leaked []string
		for g := range strings.SplitSeq(Stacks(), "\n\n") {
			if strings.Contains(g, marker) && !strings.Contains(g, "testutil.leakedGoroutines") && !strings.Contains(g, ".TestMain(") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 || time.Now().After(deadline) {
			return strings.Join(leaked, "\n\n")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stacks returns every goroutine's stack, as runtime.Stack formats them,
// however many there are: for leak reports, and for tests that count
// goroutines of one kind.
func Stacks() string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return string(buf[:n])
		}
		buf = make([]byte, 2*len(buf))
	}
}
