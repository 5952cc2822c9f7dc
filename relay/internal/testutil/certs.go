package testutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// Cert is a certificate and its key, parsed and in PEM, made in memory by
// NewCA, (*Cert).Issue or NewSelfSigned. Keys are ECDSA P-256: fast to
// make under the race detector.
type Cert struct {
	Cert    *x509.Certificate
	Key     *ecdsa.PrivateKey
	CertPEM []byte // one CERTIFICATE block
	KeyPEM  []byte // one PKCS #8 PRIVATE KEY block
}

// CertOptions describes a certificate to make. Its subject's CN is
// "test <serial in hex>"; it is valid from an hour before to an hour after
// now.
type CertOptions struct {
	// Serial is the serial number; zero picks a fresh one.
	Serial int64
	// Hosts are DNS names or IP addresses the certificate is valid for.
	Hosts []string
}

// serials hands out serial numbers unique within the test binary, so that
// two certificates of one test never share one.
var serials atomic.Int64

// NewCA returns a CA certificate for issuing test leaves.
func NewCA(t testing.TB) *Cert {
	t.Helper()
	return makeCert(t, CertOptions{}, true, nil)
}

// Issue returns a server and client leaf signed by ca, valid for hosts
// (DNS names or IP addresses).
func (ca *Cert) Issue(t testing.TB, hosts ...string) *Cert {
	t.Helper()
	return makeCert(t, CertOptions{Hosts: hosts}, false, ca)
}

// NewSelfSigned returns a certificate signed by its own key that is also
// its own CA, so that a client can trust exactly the certificates a test
// made (see PoolFromPEM).
func NewSelfSigned(t testing.TB, o CertOptions) *Cert {
	t.Helper()
	return makeCert(t, o, true, nil)
}

// makeCert makes a certificate of o that can sign others when isCA,
// signed by parent or, when nil, by its own key.
func makeCert(t testing.TB, o CertOptions, isCA bool, parent *Cert) *Cert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if o.Serial == 0 {
		o.Serial = 0x1000 + serials.Add(1)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(o.Serial),
		Subject:               pkix.Name{CommonName: fmt.Sprintf("test %X", o.Serial)},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  isCA,
	}
	if isCA {
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	for _, h := range o.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	signer, signerCert := key, tmpl
	if parent != nil {
		signer, signerCert = parent.Key, parent.Cert
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return &Cert{
		Cert:    cert,
		Key:     key,
		CertPEM: CertPEM(der),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
}

// WriteFiles writes c's certificate and key into dir as tls.crt and
// tls.key (mode 0600), as an operator provides them, and returns the paths.
func (c *Cert) WriteFiles(t testing.TB, dir string) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	for name, data := range map[string][]byte{certFile: c.CertPEM, keyFile: c.KeyPEM} {
		if err := os.WriteFile(name, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return certFile, keyFile
}

// CertPEM encodes a DER certificate (such as httptest.Server's
// Certificate().Raw) as one PEM CERTIFICATE block.
func CertPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// PoolFromPEM returns a pool trusting the certificates in pemCerts,
// failing the test when there are none.
func PoolFromPEM(t testing.TB, pemCerts []byte) *x509.CertPool {
	t.Helper()
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(pemCerts) {
		t.Fatal("no PEM certificate to trust")
	}
	return p
}

// PoolFromFile returns a pool trusting the PEM certificates in the file
// name, failing the test when it cannot be read or holds none.
func PoolFromFile(t testing.TB, name string) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return PoolFromPEM(t, b)
}
