package app

import (
	"io"
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/config"
)

// minimalConfig returns a configuration that starts on loopback ports
// without reaching any hub: one anonymous passthrough camera, websocket
// and RTSP listeners on free ports, no metrics listener. set, when not
// nil, adjusts it; it is not validated.
func minimalConfig(set func(*config.Config)) *config.Config {
	cfg := config.Default()
	cfg.WebsocketListen, cfg.MetricsListen = "127.0.0.1:0", ""
	cfg.IoTHub.ConnectionString = "HostName=h;SharedAccessKeyName=s;SharedAccessKey=a2V5"
	cfg.AllowAnonymous, cfg.RTSPListen = true, "127.0.0.1:0"
	cfg.Cameras = []config.Camera{{Name: "c", DeviceID: "d", LocalPort: 554, Mode: config.ModePassthrough, Listen: "127.0.0.1:0"}}
	if set != nil {
		set(cfg)
	}
	return cfg
}

// newApp returns an App of cfg that logs nowhere.
func newApp(cfg *config.Config) *App {
	return &App{Config: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registry: prometheus.NewRegistry()}
}

// startApp validates cfg and initializes an App of it, closed when the
// test ends.
func startApp(t *testing.T, cfg *config.Config) *App {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	a := newApp(cfg)
	if err := a.Initialize(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}
