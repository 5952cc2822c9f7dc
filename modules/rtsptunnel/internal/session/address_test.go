package session

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/settings"
	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/testutil"
)

// fakeRemoteNet resolves names from a table and records, without sending
// anything, every dial of a remote endpoint: a failing address check would
// otherwise really dial 169.254.169.254.
type fakeRemoteNet struct {
	names map[string][]string

	mu      sync.Mutex
	lookups []string
	dials   []string
}

func (f *fakeRemoteNet) lookup(_ context.Context, _, host string) ([]netip.Addr, error) {
	f.mu.Lock()
	f.lookups = append(f.lookups, host)
	f.mu.Unlock()
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip}, nil // as net.Resolver does for literals
	}
	var ips []netip.Addr
	for _, s := range f.names[host] {
		ips = append(ips, netip.MustParseAddr(s))
	}
	if len(ips) == 0 {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return ips, nil
}

func (f *fakeRemoteNet) dial(_ context.Context, _, addr string) (net.Conn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dials = append(f.dials, addr)
	return nil, errors.New("fake network: nothing is sent")
}

func (f *fakeRemoteNet) dialled() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.dials...)
}

// TestRemoteAddressRules: with the default (empty) allowedRemoteHosts, a
// tunnelOpen never reaches loopback, link-local, unspecified, multicast or
// cloud metadata addresses, on the URL's text or after DNS; a host named
// exactly in allowedRemoteHosts may; wildcards do not name a host; private
// ranges stay allowed. SECURITY.md: "URL tricks" and "SSRF / exfiltration".
func TestRemoteAddressRules(t *testing.T) {
	names := map[string][]string{
		"rebind.example.com":  {"127.0.0.1"},
		"imds.example.com":    {"169.254.169.254"},
		"mixed.example.com":   {"203.0.113.7", "::1"},
		"v6meta.example.com":  {"fd00:ec2::254"},
		"mapped.example.com":  {"::ffff:127.0.0.1"},
		"vpn.example.com":     {"10.20.30.40"},
		"public.example.com":  {"203.0.113.7"},
		"ula.example.com":     {"fd12:3456::7"},
		"relay.local.example": {"127.0.0.1"},
		"localhost":           {"127.0.0.1", "::1"},
	}
	const (
		textRefused = "text" // 400 before anything is dialled
		dnsRefused  = "dns"  // 400 after the lookup, before the endpoint is dialled
		dialled     = "dial" // the check passed: the fake network saw the dial (502)
	)
	for _, tc := range []struct {
		name    string
		host    string // as written in the URL's authority
		allowed []string
		want    string
		message string // part of the 400's message
	}{
		// On the URL's text, with the default settings.
		{"localhost", "localhost", nil, textRefused, `Remote host "localhost" is a loopback address; only a host named exactly in allowedRemoteHosts may be one`},
		{"localhost subdomain", "cam.localhost", nil, textRefused, "loopback"},
		{"loopback", "127.0.0.1", nil, textRefused, "loopback"},
		{"loopback IPv6", "[::1]", nil, textRefused, `Remote host "::1" is a loopback address`},
		{"IPv4-mapped loopback", "[::ffff:127.0.0.1]", nil, textRefused, "loopback"},
		{"decimal", "2130706433", nil, textRefused, `Remote host "2130706433" is a non-standard form of the IP address 127.0.0.1; write it as 127.0.0.1`},
		{"octal", "0177.0.0.1", nil, textRefused, "non-standard form of the IP address 127.0.0.1"},
		{"hex", "0x7f.1", nil, textRefused, "non-standard form"},
		{"short", "127.1", nil, textRefused, "non-standard form"},
		{"numeric top-level label", "1.2.3.4.5", nil, textRefused, "non-standard numeric form"},
		{"metadata", "169.254.169.254", nil, textRefused, `Remote host "169.254.169.254" is a cloud metadata address`},
		{"metadata decimal", "2852039166", nil, textRefused, "169.254.169.254"},
		{"metadata IPv6", "[fd00:ec2::254]", nil, textRefused, "cloud metadata"},
		{"Alibaba metadata", "100.100.100.200", nil, textRefused, "cloud metadata"},
		{"Azure WireServer", "168.63.129.16", nil, textRefused, "cloud metadata"},
		{"metadata name", "metadata.google.internal", nil, textRefused, "cloud metadata"},
		{"link-local", "169.254.10.1", nil, textRefused, "link-local"},
		{"link-local IPv6", "[fe80::1]", nil, textRefused, "link-local"},
		{"unspecified", "0.0.0.0", nil, textRefused, "unspecified"},
		{"unspecified IPv6", "[::]", nil, textRefused, "unspecified"},
		{"multicast", "224.0.0.251", nil, textRefused, "multicast"},
		{"non-standard form even when listed", "2130706433", []string{"2130706433"}, textRefused, "non-standard form"},
		{"wildcard names no address", "metadata.google.internal", []string{"*.google.internal"}, textRefused, "cloud metadata"},

		// After DNS: the address the module would dial.
		{"name resolving to loopback", "rebind.example.com", nil, dnsRefused, `Remote host "rebind.example.com" resolved to 127.0.0.1, a loopback address; only a host named exactly in allowedRemoteHosts may reach one`},
		{"name resolving to metadata", "imds.example.com", nil, dnsRefused, "resolved to 169.254.169.254, a cloud metadata address"},
		{"one bad address among good", "mixed.example.com", nil, dnsRefused, "resolved to ::1, a loopback address"},
		{"IPv6 metadata by name", "v6meta.example.com", nil, dnsRefused, "cloud metadata"},
		{"mapped loopback by name", "mapped.example.com", nil, dnsRefused, "loopback"},
		{"wildcard does not name the host", "rebind.example.com", []string{"*.example.com"}, dnsRefused, "loopback"},

		// Allowed: named exactly, private and public addresses.
		{"loopback named", "127.0.0.1", []string{"127.0.0.1"}, dialled, ""},
		{"IPv6 loopback named", "[::1]", []string{"0:0::1"}, dialled, ""},
		{"localhost named", "localhost", []string{"LOCALHOST"}, dialled, ""},
		{"name resolving to loopback named", "relay.local.example", []string{"relay.local.example"}, dialled, ""},
		{"private range", "10.1.2.3", nil, dialled, ""},
		{"private name", "vpn.example.com", nil, dialled, ""},
		{"unique local IPv6", "ula.example.com", nil, dialled, ""},
		{"public", "public.example.com", []string{"*.example.com"}, dialled, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testutil.Context(t, 20*time.Second)
			h := newHarness(t, func(s *settings.Settings) { s.AllowedRemoteHosts = tc.allowed })
			fake := &fakeRemoteNet{names: names}
			h.m.SetRemoteNet(fake.lookup, fake.dial)
			cameraDials := 0
			h.m.SetDialCamera(func(ctx context.Context, network, addr string) (net.Conn, error) {
				cameraDials++
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			})
			h.start(t)
			endpoint := "wss://" + tc.host + "/tunnels/1?sig=SECRETQ"
			r := h.open(t, ctx, h.payload(endpoint, 554))

			switch tc.want {
			case textRefused, dnsRefused:
				var body struct{ Code, Target, Message string }
				if err := json.Unmarshal([]byte(r.raw), &body); err != nil {
					t.Fatalf("body %s: %v", r.raw, err)
				}
				if r.status != 400 || body.Code != "400" || body.Target != "remoteEndpoint" || !strings.Contains(body.Message, tc.message) {
					t.Errorf("got %d %s, want 400 naming %q", r.status, r.raw, tc.message)
				}
				if d := fake.dialled(); len(d) != 0 {
					t.Errorf("dialled %v although the address was refused", d)
				}
				if tc.want == textRefused && cameraDials != 0 {
					t.Errorf("the camera was dialled for a host refused on its text")
				}
				if got := counterValues(t, h.reg, "rtsptunnel_sessions_failed_total", "reason")[string(FailHostNotAllowed)]; got != 1 {
					t.Errorf("host_not_allowed failures = %v, want 1", got)
				}
			case dialled:
				if r.status != 502 || len(fake.dialled()) == 0 {
					t.Errorf("got %d %s, dials %v; want the check passed and a dial (502 from the fake network)", r.status, r.raw, fake.dialled())
				}
			}
			if strings.Contains(r.raw, "SECRETQ") || strings.Contains(h.logs.String(), "SECRETQ") {
				t.Errorf("the endpoint's query string leaked")
			}
		})
	}
}
