package testcloud

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"

	"github.com/rtsptunnel/rtsptunnel/tests/internal/testutil"
)

// pki is a throw-away CA and a server certificate it signed.
type pki struct {
	caPEM  []byte
	caCert *x509.Certificate
	server tls.Certificate
}

// newPKI creates a CA and a server certificate for localhost, 127.0.0.1, ::1 and the
// extra IPs (the listen address when it is another loopback address). Both are valid
// from an hour ago, to absorb clock skew, for a day.
func newPKI(extraIPs ...net.IP) (*pki, error) {
	ca, err := testutil.NewCA("rtsptunnel testcloud CA")
	if err != nil {
		return nil, err
	}
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	for _, ip := range extraIPs {
		if ip != nil && !ip.IsUnspecified() && !ip.Equal(ips[0]) && !ip.Equal(ips[1]) {
			ips = append(ips, ip)
		}
	}
	server, err := ca.Issue(testutil.Leaf{CommonName: "localhost", DNSNames: []string{"localhost"}, IPs: ips})
	if err != nil {
		return nil, fmt.Errorf("failed to issue the testcloud certificate: %w", err)
	}
	return &pki{caPEM: ca.PEM, caCert: ca.Cert, server: server}, nil
}
