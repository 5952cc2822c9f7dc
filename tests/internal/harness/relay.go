package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
)

// RelayReady is the JSON line the relay prints on stdout once it listens.
type RelayReady struct {
	Ready           bool   `json:"ready"`
	WebsocketURL    string `json:"websocketURL"`
	WebsocketListen string `json:"websocketListen"`
	MetricsURL      string `json:"metricsURL"`
	CAFile          string `json:"caFile"`
	RTSPListen      string `json:"rtspListen"`
	RTSPSListen     string `json:"rtspsListen"`
	Cameras         []struct {
		Name     string `json:"name"`
		Mode     string `json:"mode"`
		Listen   string `json:"listen"`
		RTSPURL  string `json:"rtspURL"`
		RTSPSURL string `json:"rtspsURL"`
	} `json:"cameras"`
}

// Camera returns the RTSP URL of the named camera, or "".
func (r RelayReady) Camera(name string) string {
	for _, c := range r.Cameras {
		if c.Name == name {
			return c.RTSPURL
		}
	}
	return ""
}

// WaitRelayReady waits for the relay's ready line and decodes it.
func WaitRelayReady(ctx context.Context, p *Process) (RelayReady, error) {
	line, err := p.WaitLine(ctx, func(l string) bool {
		return strings.HasPrefix(l, `{"ready":true`)
	})
	if err != nil {
		return RelayReady{}, fmt.Errorf("relay not ready: %w\n%s", err, p.Output())
	}
	var r RelayReady
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		return RelayReady{}, fmt.Errorf("relay ready line %q: %w", line, err)
	}
	return r, nil
}
