package testutil

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestIssueVerifies checks that a leaf verifies against its CA for the names
// it was issued for, and only those.
func TestIssueVerifies(t *testing.T) {
	ca, err := NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue(Localhost("server"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca.PEM) {
		t.Fatal("CA PEM does not parse")
	}
	tests := []struct {
		name string
		ok   bool
	}{
		{"localhost", true},
		{"127.0.0.1", true},
		{"example.com", false},
		{"::1", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := cert.Leaf.Verify(x509.VerifyOptions{DNSName: tt.name, Roots: roots})
			if (err == nil) != tt.ok {
				t.Errorf("verify for %s: %v, want ok=%v", tt.name, err, tt.ok)
			}
		})
	}
}

// TestWriteFiles checks that the written files load as a key pair that
// chains to the written CA, with a leaf carrying only the given names.
func TestWriteFiles(t *testing.T) {
	dir := t.TempDir()
	caFile, certFile, keyFile := WriteCert(t, dir, "relay", Leaf{CommonName: "relay", DNSNames: []string{"relay.test"}})
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if len(pair.Certificate) != 1 {
		t.Errorf("cert file holds %d certificates, want the leaf alone", len(pair.Certificate))
	}
	if len(pair.Leaf.IPAddresses) != 0 || fmt.Sprint(pair.Leaf.DNSNames) != "[relay.test]" {
		t.Errorf("leaf names %v %v, want [relay.test] only", pair.Leaf.DNSNames, pair.Leaf.IPAddresses)
	}
	roots := x509.NewCertPool()
	ca, err := os.ReadFile(caFile)
	if err != nil || !roots.AppendCertsFromPEM(ca) {
		t.Fatalf("CA file %s: %v", caFile, err)
	}
	if _, err := pair.Leaf.Verify(x509.VerifyOptions{DNSName: "relay.test", Roots: roots}); err != nil {
		t.Errorf("leaf does not chain to the written CA: %v", err)
	}
	if !pair.Leaf.NotBefore.Before(time.Now().Add(-30 * time.Minute)) {
		t.Errorf("NotBefore %v, want an hour ago for clock skew", pair.Leaf.NotBefore)
	}
}

// TestLogBuffer writes from many goroutines (the race detector watches) and
// finds every line.
func TestLogBuffer(t *testing.T) {
	var b LogBuffer
	log := b.Logger()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() { log.Debug("line", "n", i) })
	}
	wg.Wait()
	for i := range 8 {
		if !strings.Contains(b.String(), fmt.Sprintf(`"n":%d`, i)) {
			t.Errorf("line %d not logged: %s", i, b.String())
		}
	}
}

// TestWaitUntil returns once the condition holds.
func TestWaitUntil(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n := 0
	WaitUntil(t, ctx, "the third poll", func() bool { n++; return n == 3 })
	if n != 3 {
		t.Errorf("polled %d times, want 3", n)
	}
}
