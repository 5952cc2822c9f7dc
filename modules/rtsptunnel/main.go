// Command rtsptunnel is the IoT Edge module that tunnels RTSP from cameras on
// the edge LAN to a cloud service, on request of the tunnelOpen direct method.
// Run it with --help for its settings.
package main

import (
	"os"

	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/app"
)

func main() {
	os.Exit(app.Main(os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
}
