package testutil

import (
	"os"
	"path/filepath"
	"testing"
)

// WriteFile writes b to a new file name (mode 0600) in a temporary
// directory, removed after the test, and returns its path.
func WriteFile(t testing.TB, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
