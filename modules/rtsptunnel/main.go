// Command rtsptunnel is the IoT Edge module that tunnels RTSP from cameras on
// the edge LAN to a cloud service, on request of the tunnelOpen direct method.
// Run it with --help for its settings; "rtsptunnel healthcheck" checks a
// running module's /healthz (the images' HEALTHCHECK).
package main

import (
	"os"

	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/app"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		os.Exit(app.Healthcheck(os.Args[2:], os.Environ(), os.Stdout, os.Stderr))
	}
	os.Exit(app.Main(os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
}
