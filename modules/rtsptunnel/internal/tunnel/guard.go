package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
)

// AddressRule names a class of addresses a tunnel must not reach unless the
// operator named the host explicitly: sending the bearer token and a camera's
// bytes there would hand them to the device itself, its link or its cloud's
// metadata service (server-side request forgery). Private ranges are not a
// rule: relays often live on a VPN.
type AddressRule string

// The address rules, in the order they are tested.
const (
	RuleMetadata    AddressRule = "cloud metadata" // see metadataAddrs and metadataNames
	RuleUnspecified AddressRule = "unspecified"    // 0.0.0.0/8, ::
	RuleLoopback    AddressRule = "loopback"       // 127.0.0.0/8, ::1, localhost
	RuleLinkLocal   AddressRule = "link-local"     // 169.254.0.0/16, fe80::/10
	RuleMulticast   AddressRule = "multicast"      // 224.0.0.0/4, ff00::/8
)

// metadataAddrs are the well-known addresses of cloud instance metadata and
// credential services. Some are link-local anyway; naming them lets the
// answer say what they are.
var metadataAddrs = map[netip.Addr]string{
	netip.MustParseAddr("169.254.169.254"): "AWS, Azure IMDS, Google Cloud, Oracle Cloud, OpenStack, DigitalOcean",
	netip.MustParseAddr("169.254.170.2"):   "AWS ECS task credentials",
	netip.MustParseAddr("169.254.170.23"):  "AWS EKS Pod Identity agent",
	netip.MustParseAddr("168.63.129.16"):   "Azure WireServer (host agent, DNS, health probes)",
	netip.MustParseAddr("100.100.100.200"): "Alibaba Cloud",
	netip.MustParseAddr("192.0.0.192"):     "Oracle Cloud Classic",
	netip.MustParseAddr("fd00:ec2::254"):   "AWS IMDS over IPv6",
	netip.MustParseAddr("fd00:ec2::23"):    "AWS EKS Pod Identity agent over IPv6",
	netip.MustParseAddr("fd20:ce::254"):    "Google Cloud metadata over IPv6",
}

// metadataNames are the host names of metadata services. With a proxy the
// proxy resolves names, so these are refused on the URL's text.
var metadataNames = []string{
	"metadata", "metadata.google.internal", "metadata.goog", // Google Cloud
	"instance-data", "instance-data.ec2.internal", // AWS
	"metadata.tencentyun.com", // Tencent Cloud
}

// nat64 is the well-known NAT64 prefix (RFC 6052): 64:ff9b::a9fe:a9fe reaches
// 169.254.169.254 through a NAT64 gateway.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// ClassifyAddress returns the rule ip falls under, or "" for an ordinary
// (public or private) address. IPv4-mapped and NAT64 IPv6 addresses are judged
// by the IPv4 address they carry.
func ClassifyAddress(ip netip.Addr) AddressRule {
	ip = ip.WithZone("")
	if ip.Is6() && nat64.Contains(ip) {
		b := ip.As16()
		ip = netip.AddrFrom4([4]byte(b[12:16]))
	}
	ip = ip.Unmap()
	if _, ok := metadataAddrs[ip]; ok {
		return RuleMetadata
	}
	switch {
	case ip.IsUnspecified(), ip.Is4() && ip.As4()[0] == 0: // 0.0.0.0/8 reaches the host itself on Linux
		return RuleUnspecified
	case ip.IsLoopback():
		return RuleLoopback
	case ip.IsLinkLocalUnicast():
		return RuleLinkLocal
	case ip.IsMulticast():
		return RuleMulticast
	}
	return ""
}

// HostText is what a URL's host name says on its own, before any lookup.
type HostText struct {
	// IP is the address the text denotes: an IP literal, a legacy numeric
	// form (see NonCanonical) or the loopback address for localhost names.
	// Invalid for ordinary names.
	IP netip.Addr
	// NonCanonical is true for numeric forms other than dotted decimal IPv4
	// and IPv6 literals: decimal (2130706433), octal (0177.0.0.1), hex
	// (0x7f.1) and short (127.1) IPv4 forms, and names whose last label is
	// numeric. Resolvers disagree on them (glibc's inet_aton reads them as
	// addresses, Go's resolver asks DNS), so they are refused whatever the
	// settings say.
	NonCanonical bool
	// Rule is the rule the text itself falls under ("" for none).
	Rule AddressRule
}

// ParseHostText classifies a URL's host name (without brackets or port) by
// its text: IP literals in every form, localhost names (RFC 6761) and the
// metadata services' names.
func ParseHostText(host string) HostText {
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	if ip, err := netip.ParseAddr(h); err == nil {
		return HostText{IP: ip, Rule: ClassifyAddress(ip)}
	}
	if ip, ok := parseInetAton(h); ok {
		return HostText{IP: ip, NonCanonical: true, Rule: ClassifyAddress(ip)}
	}
	labels := strings.Split(h, ".")
	if last := labels[len(labels)-1]; last != "" && isNumericLabel(last) {
		// No top-level domain is numeric (RFC 3696 section 2): a name like
		// 1.2.3.4.5 is a mistyped or deliberately odd address.
		return HostText{NonCanonical: true}
	}
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return HostText{IP: netip.IPv6Loopback(), Rule: RuleLoopback}
	}
	for _, n := range metadataNames {
		if h == n {
			return HostText{Rule: RuleMetadata}
		}
	}
	return HostText{}
}

// parseInetAton parses the IPv4 forms that inet_aton(3) accepts: one to four
// parts, each decimal, octal (leading 0) or hex (0x), the last filling the
// remaining bytes.
func parseInetAton(s string) (netip.Addr, bool) {
	parts := strings.Split(s, ".")
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	vals := make([]uint64, len(parts))
	for i, p := range parts {
		base, digits := 10, p
		switch {
		case strings.HasPrefix(p, "0x"):
			base, digits = 16, p[2:]
		case len(p) > 1 && p[0] == '0':
			base, digits = 8, p[1:]
		}
		if digits == "" {
			return netip.Addr{}, false
		}
		v, err := strconv.ParseUint(digits, base, 32)
		if err != nil {
			return netip.Addr{}, false
		}
		vals[i] = v
	}
	var n uint64
	for i, v := range vals[:len(vals)-1] {
		if v > 0xff {
			return netip.Addr{}, false
		}
		n |= v << (8 * (3 - i))
	}
	last := vals[len(vals)-1]
	if last >= 1<<(8*(5-len(vals))) {
		return netip.Addr{}, false
	}
	n |= last
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}), true
}

// isNumericLabel reports whether a DNS label is all decimal digits, or a 0x
// hex number.
func isNumericLabel(l string) bool {
	if rest, ok := strings.CutPrefix(l, "0x"); ok {
		l = rest
		for _, c := range l {
			if !strings.ContainsRune("0123456789abcdef", c) {
				return false
			}
		}
		return true
	}
	for _, c := range l {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// AddressError refuses a dial: the endpoint's host resolved to an address
// under an [AddressRule] that the caller's CheckAddress did not allow.
type AddressError struct {
	Host string     // the endpoint's host name
	IP   netip.Addr // the address it resolved to
	Rule AddressRule
}

func (e *AddressError) Error() string {
	return fmt.Sprintf("%s resolved to %s, a %s address", e.Host, e.IP, e.Rule)
}

// guardDial returns a dialer that resolves the endpoint's host itself, passes
// every address to check, and dials only the checked addresses, so that the
// address checked is the address connected to (no second lookup for DNS
// rebinding to exploit). A dial to the proxy (viaProxy set by the
// transport's Proxy function, which runs before it dials) is not checked: the
// proxy is the operator's choice, and it resolves the endpoint's name itself.
func guardDial(dial func(ctx context.Context, network, addr string) (net.Conn, error),
	lookup func(ctx context.Context, network, host string) ([]netip.Addr, error),
	check func(host string, ip netip.Addr) error, viaProxy *atomic.Bool,
) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if viaProxy.Load() {
			return dial(ctx, network, addr)
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		ips, err := lookup(ctx, "ip", host)
		if err != nil {
			return nil, err
		}
		if len(ips) == 0 {
			return nil, &net.DNSError{Err: "no addresses", Name: host, IsNotFound: true}
		}
		// Every address must pass: a name that resolves to a public address
		// and to 127.0.0.1 is refused rather than raced.
		for _, ip := range ips {
			if err := check(host, ip); err != nil {
				return nil, err
			}
		}
		var errs []error
		for _, ip := range ips {
			c, err := dial(ctx, network, net.JoinHostPort(ip.String(), port))
			if err == nil {
				return c, nil
			}
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
		}
		return nil, errors.Join(errs...)
	}
}
