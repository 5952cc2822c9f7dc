package config

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestRelaySecurityDefaults: the relay's row of SECURITY.md's hardening
// table gives the defaults Default has.
func TestRelaySecurityDefaults(t *testing.T) {
	b, err := os.ReadFile("../../../SECURITY.md")
	if err != nil {
		t.Fatal(err)
	}
	var row string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "| relay |") {
			row = l
		}
	}
	if row == "" {
		t.Fatal("SECURITY.md has no relay row in its hardening table")
	}
	d := Default()
	secs := func(x Duration) float64 { return time.Duration(x).Seconds() }
	for _, want := range []string{
		"metrics on `" + d.MetricsListen + "`",
		fmt.Sprintf("players authenticated (`allowAnonymous` %v)", d.AllowAnonymous),
		fmt.Sprintf("%d players per camera and %d in total", d.MaxPlayersPerCamera, d.MaxPlayers),
		fmt.Sprintf("%g s single-use tokens", secs(d.TokenTTL)),
		fmt.Sprintf("module pings every %g s (dead within %g s)", secs(d.PingInterval), secs(d.PingInterval)+secs(d.PingTimeout)),
	} {
		if !strings.Contains(row, want) {
			t.Errorf("SECURITY.md's relay row lacks %q (from config.Default)", want)
		}
	}
	var page string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "| relay browser page |") {
			page = l
		}
	}
	if want := fmt.Sprintf("%g s page tokens (`webTokenTTL`)", secs(d.WebTokenTTL)); !strings.Contains(page, want) {
		t.Errorf("SECURITY.md's relay browser page row lacks %q (from config.Default)", want)
	}
	if d.WebRTC() || !strings.Contains(page, "off (no `webrtcUDPListen`/`webrtcTCPListen`)") {
		t.Errorf("browser playback on by default (%v), or SECURITY.md does not say it is off", d.WebRTC())
	}
	if d.InsecureWS || d.AllowAnonymous {
		t.Errorf("defaults: insecureWS %v, allowAnonymous %v; SECURITY.md says TLS required and players authenticated", d.InsecureWS, d.AllowAnonymous)
	}
}
