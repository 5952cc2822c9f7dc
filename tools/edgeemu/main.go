// Command edgeemu is an offline Azure IoT Hub + edgeHub + IoT Edge workload API emulator for
// the rtsptunnel module, its relay and their tests. Run "edgeemu --help" for the flags; see
// README.md for what it emulates and where it differs from Azure.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
