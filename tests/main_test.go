package tests

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/rtsptunnel/rtsptunnel/tests/internal/harness"
)

// builder builds the real binaries once for every test of this package.
var builder *harness.Builder

func TestMain(m *testing.M) {
	b, cleanup, err := harness.TempBuilder(true)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	builder = b
	code := m.Run()
	cleanup()
	os.Exit(code)
}

// build returns the path of binary bin, building it on first use.
func build(t testing.TB, bin harness.Binary) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	p, err := builder.Build(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
