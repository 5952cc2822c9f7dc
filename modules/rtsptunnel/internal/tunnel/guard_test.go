package tunnel

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/testutil"
)

func TestParseHostText(t *testing.T) {
	for _, tc := range []struct {
		host         string
		ip           string // "" for none
		nonCanonical bool
		rule         AddressRule
	}{
		// Loopback in every spelling.
		{"127.0.0.1", "127.0.0.1", false, RuleLoopback},
		{"127.8.9.10", "127.8.9.10", false, RuleLoopback},
		{"2130706433", "127.0.0.1", true, RuleLoopback},
		{"0177.0.0.1", "127.0.0.1", true, RuleLoopback},
		{"0x7f.1", "127.0.0.1", true, RuleLoopback},
		{"0x7f000001", "127.0.0.1", true, RuleLoopback},
		{"127.1", "127.0.0.1", true, RuleLoopback},
		{"127.0.1", "127.0.0.1", true, RuleLoopback},
		{"localhost", "::1", false, RuleLoopback},
		{"LocalHost.", "::1", false, RuleLoopback},
		{"relay.localhost", "::1", false, RuleLoopback},
		{"::1", "::1", false, RuleLoopback},
		{"::ffff:127.0.0.1", "::ffff:127.0.0.1", false, RuleLoopback},
		{"::ffff:7f00:1", "::ffff:127.0.0.1", false, RuleLoopback},
		// Cloud metadata, also in odd forms.
		{"169.254.169.254", "169.254.169.254", false, RuleMetadata},
		{"2852039166", "169.254.169.254", true, RuleMetadata},
		{"0251.0376.0251.0376", "169.254.169.254", true, RuleMetadata},
		{"::ffff:169.254.169.254", "::ffff:169.254.169.254", false, RuleMetadata},
		{"64:ff9b::a9fe:a9fe", "64:ff9b::a9fe:a9fe", false, RuleMetadata},
		{"fd00:ec2::254", "fd00:ec2::254", false, RuleMetadata},
		{"fd20:ce::254", "fd20:ce::254", false, RuleMetadata},
		{"100.100.100.200", "100.100.100.200", false, RuleMetadata},
		{"168.63.129.16", "168.63.129.16", false, RuleMetadata},
		{"metadata.google.internal", "", false, RuleMetadata},
		{"Metadata.Google.Internal.", "", false, RuleMetadata},
		// Link-local, unspecified, multicast.
		{"169.254.1.2", "169.254.1.2", false, RuleLinkLocal},
		{"fe80::1", "fe80::1", false, RuleLinkLocal},
		{"febf::1", "febf::1", false, RuleLinkLocal},
		{"0.0.0.0", "0.0.0.0", false, RuleUnspecified},
		{"0", "0.0.0.0", true, RuleUnspecified},
		{"0.1.2.3", "0.1.2.3", false, RuleUnspecified},
		{"::", "::", false, RuleUnspecified},
		{"224.0.0.1", "224.0.0.1", false, RuleMulticast},
		{"ff02::1", "ff02::1", false, RuleMulticast},
		// Private and public addresses and ordinary names stay allowed.
		{"10.1.2.3", "10.1.2.3", false, ""},
		{"192.168.10.21", "192.168.10.21", false, ""},
		{"172.16.0.1", "172.16.0.1", false, ""},
		{"100.64.0.1", "100.64.0.1", false, ""},
		{"fd00:ec2::1", "fd00:ec2::1", false, ""},
		{"fd12:3456::1", "fd12:3456::1", false, ""},
		{"203.0.113.7", "203.0.113.7", false, ""},
		{"relay.example.com", "", false, ""},
		{"0x10.example.com", "", false, ""},
		{"localhost.example.com", "", false, ""},
		{"metadata.example.com", "", false, ""},
		// Numeric last labels are not names.
		{"1.2.3.4.5", "", true, ""},
		{"relay.example.123", "", true, ""},
		{"256.1.1.1", "", true, ""},
	} {
		got := ParseHostText(tc.host)
		var want netip.Addr
		if tc.ip != "" {
			want = netip.MustParseAddr(tc.ip)
		}
		if got.IP != want || got.NonCanonical != tc.nonCanonical || got.Rule != tc.rule {
			t.Errorf("ParseHostText(%q) = %+v, want IP %s, NonCanonical %v, Rule %q", tc.host, got, tc.ip, tc.nonCanonical, tc.rule)
		}
	}
}

// refuseSpecial is the check the session manager makes when no host is named.
func refuseSpecial(host string, ip netip.Addr) error {
	if r := ClassifyAddress(ip); r != "" {
		return &AddressError{Host: host, IP: ip, Rule: r}
	}
	return nil
}

// recordingDialer fails every dial and records its addresses: the guard
// tests must never send a packet to 169.254.169.254.
type recordingDialer struct {
	mu    sync.Mutex
	addrs []string
}

func (d *recordingDialer) dial(_ context.Context, _, addr string) (net.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.addrs = append(d.addrs, addr)
	return nil, errors.New("test dialer: no network")
}

func TestDialRefusesSpecialAddresses(t *testing.T) {
	ctx := testutil.Context(t, 20*time.Second)
	for _, tc := range []struct {
		name     string
		endpoint string
		resolved []string
		rule     AddressRule
	}{
		{"name resolving to metadata", "wss://relay.example.com/t", []string{"169.254.169.254"}, RuleMetadata},
		{"name resolving to loopback", "wss://rebind.example.com/t", []string{"127.0.0.1"}, RuleLoopback},
		{"one bad address among good ones", "wss://mixed.example.com/t", []string{"203.0.113.7", "::1"}, RuleLoopback},
		{"IPv4-mapped loopback", "wss://mapped.example.com/t", []string{"::ffff:127.0.0.1"}, RuleLoopback},
		{"link-local IPv6", "wss://ll.example.com/t", []string{"fe80::1"}, RuleLinkLocal},
		{"IPv6 metadata", "wss://v6.example.com/t", []string{"fd00:ec2::254"}, RuleMetadata},
		{"literal metadata address", "wss://169.254.169.254/latest/meta-data", nil, RuleMetadata},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dialer := &recordingDialer{}
			lookup := func(_ context.Context, network, host string) ([]netip.Addr, error) {
				if ip, err := netip.ParseAddr(host); err == nil {
					return []netip.Addr{ip}, nil // as net.Resolver does for literals
				}
				var ips []netip.Addr
				for _, s := range tc.resolved {
					ips = append(ips, netip.MustParseAddr(s))
				}
				return ips, nil
			}
			c, err := Dial(ctx, tc.endpoint, DialOptions{
				Token:        secretToken,
				Proxy:        func(*http.Request) (*url.URL, error) { return nil, nil },
				DialContext:  dialer.dial,
				LookupNetIP:  lookup,
				CheckAddress: refuseSpecial,
			})
			if err == nil {
				c.CloseNow()
				t.Fatal("no error")
			}
			var ae *AddressError
			if !errors.As(err, &ae) || ae.Rule != tc.rule {
				t.Fatalf("error %v, want an AddressError with rule %q", err, tc.rule)
			}
			if len(dialer.addrs) != 0 {
				t.Errorf("dialled %v after the check refused", dialer.addrs)
			}
			if strings.Contains(err.Error(), secretToken) {
				t.Errorf("error %q leaks the token", err)
			}
		})
	}
}

// TestDialConnectsToCheckedAddress: the address checked is the address
// dialled (a second lookup could return another one: DNS rebinding).
func TestDialConnectsToCheckedAddress(t *testing.T) {
	ctx := testutil.Context(t, 20*time.Second)
	rs := newRemoteServer(t, nil)
	_, port, _ := net.SplitHostPort(rs.Listener.Addr().String())
	var mu sync.Mutex
	var checked, dialled []string
	lookups := 0
	c, err := Dial(ctx, "wss://example.com:"+port+"/t", DialOptions{
		Token:   secretToken,
		RootCAs: rs.roots(), // example.com is in the test certificate
		Proxy:   func(*http.Request) (*url.URL, error) { return nil, nil },
		LookupNetIP: func(context.Context, string, string) ([]netip.Addr, error) {
			mu.Lock()
			defer mu.Unlock()
			lookups++
			if lookups > 1 { // a rebinding answer that must never be used
				return []netip.Addr{netip.MustParseAddr("169.254.169.254")}, nil
			}
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
		},
		CheckAddress: func(host string, ip netip.Addr) error {
			mu.Lock()
			defer mu.Unlock()
			checked = append(checked, host+"="+ip.String())
			return nil // this test allows loopback
		},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			mu.Lock()
			dialled = append(dialled, addr)
			mu.Unlock()
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	c.Close(websocket.StatusNormalClosure, "")
	mu.Lock()
	defer mu.Unlock()
	if len(checked) != 1 || checked[0] != "example.com=127.0.0.1" || len(dialled) != 1 || dialled[0] != "127.0.0.1:"+port || lookups != 1 {
		t.Errorf("checked %v, dialled %v, %d lookups; want one check of 127.0.0.1 and one dial of it", checked, dialled, lookups)
	}
}

// TestDialGuardLeavesProxyAlone: through a proxy the module dials the proxy
// (on loopback here, as a local squid would be), never the endpoint; the proxy
// resolves the endpoint's name.
func TestDialGuardLeavesProxyAlone(t *testing.T) {
	ctx := testutil.Context(t, 20*time.Second)
	rs := newRemoteServer(t, nil)
	proxy := newConnectProxy(t, rs.Listener.Addr().String())
	proxyURL, _ := url.Parse(proxy.URL)
	calls := 0
	c, err := Dial(ctx, "wss://example.com/tunnel", DialOptions{
		Token:   secretToken,
		RootCAs: rs.roots(),
		Proxy:   http.ProxyURL(proxyURL),
		LookupNetIP: func(context.Context, string, string) ([]netip.Addr, error) {
			t.Error("the guard resolved a name although a proxy was used")
			return nil, errors.New("no lookups")
		},
		CheckAddress: func(string, netip.Addr) error { calls++; return errors.New("refused") },
	})
	if err != nil {
		t.Fatal(err)
	}
	c.Close(websocket.StatusNormalClosure, "")
	if calls != 0 {
		t.Errorf("CheckAddress called %d times for a proxied dial", calls)
	}
}
