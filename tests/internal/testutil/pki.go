package testutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// validity is how long certificates are valid; they start an hour ago to
// absorb clock skew between processes.
const validity = 24 * time.Hour

// CA is a throw-away certificate authority (ECDSA P-256, the key type the
// relay's --self-signed uses). Its fields are read-only after [NewCA].
type CA struct {
	// Cert is the CA's certificate.
	Cert *x509.Certificate
	// PEM is Cert, PEM-encoded, for a trust bundle.
	PEM []byte

	key *ecdsa.PrivateKey
}

// Leaf names the server certificate [CA.Issue] signs.
type Leaf struct {
	// CommonName is the subject's CN (clients check the SANs, not this).
	CommonName string
	// DNSNames and IPs are the subject alternative names.
	DNSNames []string
	IPs      []net.IP
}

// Localhost is a leaf for "localhost" and 127.0.0.1.
func Localhost(commonName string) Leaf {
	return Leaf{CommonName: commonName, DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}
}

// NewCA creates a CA named commonName, valid from an hour ago for a day,
// that may sign leaves only (path length zero).
func NewCA(commonName string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("failed to generate the CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randSerial(),
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"rtsptunnel tests"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("failed to create the CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("failed to parse the CA certificate: %w", err)
	}
	return &CA{Cert: cert, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key: key}, nil
}

// Issue signs a server certificate for l, valid from an hour ago for a day.
// The returned certificate's chain is the leaf, then the CA; Leaf is set.
func (ca *CA) Issue(l Leaf) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("failed to generate the server key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: randSerial(),
		Subject:      pkix.Name{CommonName: l.CommonName, Organization: []string{"rtsptunnel tests"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     l.DNSNames,
		IPAddresses:  l.IPs,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("failed to create the server certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("failed to parse the server certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.Cert.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// WriteFiles issues a certificate for l and writes three PEM files into dir:
// name-ca.pem (this CA), name-cert.pem (the leaf alone) and name-key.pem (an
// EC PRIVATE KEY), each mode 0600. It returns their paths.
func (ca *CA) WriteFiles(dir, name string, l Leaf) (caFile, certFile, keyFile string, err error) {
	cert, err := ca.Issue(l)
	if err != nil {
		return "", "", "", err
	}
	keyDER, err := x509.MarshalECPrivateKey(cert.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		return "", "", "", fmt.Errorf("failed to encode the server key: %w", err)
	}
	caFile = filepath.Join(dir, name+"-ca.pem")
	certFile = filepath.Join(dir, name+"-cert.pem")
	keyFile = filepath.Join(dir, name+"-key.pem")
	for _, f := range []struct {
		path string
		data []byte
	}{
		{caFile, ca.PEM},
		{certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})},
		{keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})},
	} {
		if err := os.WriteFile(f.path, f.data, 0o600); err != nil {
			return "", "", "", fmt.Errorf("failed to write %s: %w", f.path, err)
		}
	}
	return caFile, certFile, keyFile, nil
}

// WriteCert creates a CA named "<name> test CA", has it sign l, and writes
// the PEM files as [CA.WriteFiles] does; it fails the test on any error.
func WriteCert(t testing.TB, dir, name string, l Leaf) (caFile, certFile, keyFile string) {
	t.Helper()
	ca, err := NewCA(name + " test CA")
	if err != nil {
		t.Fatal(err)
	}
	caFile, certFile, keyFile, err = ca.WriteFiles(dir, name, l)
	if err != nil {
		t.Fatal(err)
	}
	return caFile, certFile, keyFile
}

// randSerial returns a random 127-bit serial number, so that certificates of
// different CAs with the same name never collide in a client's cache.
func randSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		// crypto/rand does not fail on the platforms Go supports.
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	return n
}
