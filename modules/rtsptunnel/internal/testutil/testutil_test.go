package testutil

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestNotInBinary: no package that ships imports testutil (go list -deps of
// the main package, with the workspace or without it alike).
func TestNotInBinary(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go tool:", err)
	}
	out, err := exec.Command("go", "list", "-deps", "github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps listed only %q", deps)
	}
	for _, p := range deps {
		if strings.HasSuffix(p, "/internal/testutil") {
			t.Errorf("the shipped binary depends on %s", p)
		}
	}
}

// TestLeafVerifies: a leaf chains to its CA for each of its hosts, IP or
// name, and to nothing else.
func TestLeafVerifies(t *testing.T) {
	ca := NewCA(t, "test CA")
	leaf := ca.Leaf(t, "127.0.0.1", "gateway.test")
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	other := x509.NewCertPool()
	other.AddCert(NewCA(t, "other").Cert)
	for _, host := range []string{"127.0.0.1", "gateway.test"} {
		if _, err := leaf.Leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: roots}); err != nil {
			t.Errorf("%s: %v", host, err)
		}
	}
	if _, err := leaf.Leaf.Verify(x509.VerifyOptions{DNSName: "gateway.test", Roots: other}); err == nil {
		t.Error("the leaf verifies against another CA")
	}
	if leaf.Leaf.SerialNumber.Cmp(ca.Leaf(t, "x").Leaf.SerialNumber) == 0 {
		t.Error("two leaves share a serial number")
	}
	// The PEM file is a trust bundle a TLS client accepts.
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca.PEM) {
		t.Fatal("CA PEM does not parse")
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{leaf}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "gateway.test"})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// TestLogBufferCount: Count matches the message and every attribute pair.
func TestLogBufferCount(t *testing.T) {
	var b LogBuffer
	l := b.Logger()
	l.Info("session closed", "session", "a")
	l.Info("session closed", "session", "b")
	l.Debug("session opened", "session", "a")
	for _, tc := range []struct {
		msg   string
		attrs []string
		want  int
	}{
		{"session closed", nil, 2},
		{"session closed", []string{"session", "a"}, 1},
		{"session opened", []string{"session", "b"}, 0},
		{"nothing", nil, 0},
	} {
		if got := b.Count(t, tc.msg, tc.attrs...); got != tc.want {
			t.Errorf("Count(%q, %q) = %d, want %d", tc.msg, tc.attrs, got, tc.want)
		}
	}
	if !strings.Contains(b.String(), `"session":"b"`) {
		t.Errorf("String lacks a logged attribute: %s", b.String())
	}
}

// TestTLoggerCounts: Logged and LastLogged see records of derived loggers.
func TestTLoggerCounts(t *testing.T) {
	l := TLogger(t, "x")
	l.With("k", "v").Info("m", "n", 1)
	l.Info("m", "n", 2)
	if got := Logged(l, "m"); got != 2 {
		t.Errorf("Logged = %d, want 2", got)
	}
	if got := LastLogged(l, "m"); got != "x INFO m n=2" {
		t.Errorf("LastLogged = %q", got)
	}
}
