// Command bench runs the rtsptunnel benchmarks (scripts/bench): throughput of
// one tunnel against raw TCP and chisel, concurrent tunnels, open latency,
// added latency, memory and a shared camera's fan-out, all on loopback in
// one run. It writes the
// results as JSON (bench/results.json) and as docs/benchmarks.md with charts.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/rtsptunnel/rtsptunnel/tests/bench/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	os.Exit(cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr))
}
