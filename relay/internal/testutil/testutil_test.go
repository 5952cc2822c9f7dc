package testutil

import (
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestNotInBinary: the relay's binary does not link testutil (nor,
// through it, anything only tests need).
func TestNotInBinary(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/rtsptunnel/rtsptunnel/relay").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "github.com/rtsptunnel/rtsptunnel/relay/internal/core\n") {
		t.Fatalf("go list -deps lists no relay package; the check would see nothing:\n%s", out)
	}
	if strings.Contains(string(out), "relay/internal/testutil") {
		t.Error("the relay's main package depends on internal/testutil")
	}
}

func TestLogBuffer(t *testing.T) {
	logs := &LogBuffer{}
	log := logs.Logger(slog.LevelDebug)
	log.Debug("opened", "n", 1)
	log.Info("closed", "reason", "done")
	log.Info("closed", "reason", "again")
	logs.Write([]byte("not json\n"))
	if n := logs.Count("closed"); n != 2 {
		t.Errorf("Count = %d, want 2", n)
	}
	r := logs.Records("closed")
	if len(r) != 2 || r[0]["reason"] != "done" || r[1]["reason"] != "again" {
		t.Errorf("Records = %v", r)
	}
}

func TestCerts(t *testing.T) {
	ca := NewCA(t)
	leaf := ca.Issue(t, "localhost", "127.0.0.1")
	for _, host := range []string{"localhost", "127.0.0.1"} {
		if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: PoolFromPEM(t, ca.CertPEM), DNSName: host}); err != nil {
			t.Errorf("leaf for %s: %v", host, err)
		}
	}
	if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: PoolFromPEM(t, NewCA(t).CertPEM), DNSName: "localhost"}); err == nil {
		t.Error("leaf verifies against another CA")
	}
	self := NewSelfSigned(t, CertOptions{Serial: 0xA, Hosts: []string{"localhost"}})
	if self.Cert.SerialNumber.Int64() != 0xA || self.Cert.Subject.CommonName != "test A" {
		t.Errorf("self-signed serial %v CN %q", self.Cert.SerialNumber, self.Cert.Subject.CommonName)
	}
	if _, err := self.Cert.Verify(x509.VerifyOptions{Roots: PoolFromPEM(t, self.CertPEM), DNSName: "localhost"}); err != nil {
		t.Errorf("self-signed: %v", err)
	}
	certFile, keyFile := leaf.WriteFiles(t, t.TempDir())
	if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
		t.Errorf("written files: %v", err)
	}
	if time.Until(leaf.Cert.NotAfter) < 30*time.Minute {
		t.Errorf("leaf expires at %v", leaf.Cert.NotAfter)
	}
}
