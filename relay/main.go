// Command relay is the self-hosted cloud side of rtsptunnel: it serves RTSP
// players, opens tunnels to cameras behind NAT by calling the tunnelOpen
// direct method on their rtsptunnel module through IoT Hub, and splices the
// player's TCP stream with the module's websocket. Run "relay --help" for
// the settings.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	code := app.RunWithInput(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
