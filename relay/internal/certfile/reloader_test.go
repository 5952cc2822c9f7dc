package certfile

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/testutil"
)

const (
	msgReloaded = "certificate reloaded"
	msgFailed   = "certificate reload failed; serving the previous certificate"
)

// pair is a self-signed certificate for localhost and its key, in PEM.
type pair struct {
	cert, key []byte
	serial    string // as serial() formats it
}

// newPair makes a pair with the given serial number; the certificate
// is its own CA, so a client can trust exactly the test's pairs.
func newPair(t *testing.T, serialNumber int64) pair {
	t.Helper()
	c := testutil.NewSelfSigned(t, testutil.CertOptions{Serial: serialNumber, Hosts: []string{"localhost"}})
	return pair{cert: c.CertPEM, key: c.KeyPEM, serial: fmt.Sprintf("%X", serialNumber)}
}

// serveTLS serves TLS handshakes on 127.0.0.1 with r's certificate until
// the test ends, and returns the address.
func serveTLS(t *testing.T, r *Reloader) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: r.GetCertificate})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(20 * time.Second))
				c.(*tls.Conn).Handshake() // the client reports the outcome
			})
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// handshake connects to addr, trusting roots, and returns the serial of
// the certificate served.
func handshake(ctx context.Context, addr string, roots *x509.CertPool) (string, error) {
	d := tls.Dialer{Config: &tls.Config{RootCAs: roots, ServerName: "localhost"}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return serial(c.(*tls.Conn).ConnectionState().PeerCertificates[0]), nil
}

func roots(pairs ...pair) *x509.CertPool {
	p := x509.NewCertPool()
	for _, pr := range pairs {
		p.AppendCertsFromPEM(pr.cert)
	}
	return p
}

// writeFile writes data to name as an atomic rotation does: into a new file,
// then renamed over name.
func writeFile(t *testing.T, name string, data []byte) {
	t.Helper()
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, name); err != nil {
		t.Fatal(err)
	}
}

// A layout is a way of laying out and rotating the two files.
type layout struct {
	name string
	// setup writes the first pair into dir and returns the paths to serve.
	setup func(t *testing.T, dir string, p pair) (certFile, keyFile string)
	// rotate replaces the pair with cert and key; gen counts rotations.
	rotate func(t *testing.T, dir string, gen int, cert, key []byte)
}

var layouts = []layout{
	{
		name: "rename over",
		setup: func(t *testing.T, dir string, p pair) (string, string) {
			writeFile(t, filepath.Join(dir, "tls.crt"), p.cert)
			writeFile(t, filepath.Join(dir, "tls.key"), p.key)
			return filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
		},
		rotate: func(t *testing.T, dir string, _ int, cert, key []byte) {
			writeFile(t, filepath.Join(dir, "tls.crt"), cert)
			writeFile(t, filepath.Join(dir, "tls.key"), key)
		},
	},
	{
		// As a Kubernetes secret volume: tls.crt -> ..data/tls.crt, and
		// ..data -> a directory per version, swapped by a rename.
		name: "symlink swap",
		setup: func(t *testing.T, dir string, p pair) (string, string) {
			swapData(t, dir, 0, p.cert, p.key)
			for _, f := range []string{"tls.crt", "tls.key"} {
				if err := os.Symlink(filepath.Join("..data", f), filepath.Join(dir, f)); err != nil {
					t.Fatal(err)
				}
			}
			return filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
		},
		rotate: swapData,
	},
	{
		// Rewritten in place: same inode, so only the modification time
		// (set apart here, as two writes can share a timestamp tick) or the
		// size tells.
		name: "in place",
		setup: func(t *testing.T, dir string, p pair) (string, string) {
			writeFile(t, filepath.Join(dir, "tls.crt"), p.cert)
			writeFile(t, filepath.Join(dir, "tls.key"), p.key)
			return filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
		},
		rotate: func(t *testing.T, dir string, gen int, cert, key []byte) {
			mtime := time.Unix(1_000_000_000+int64(gen), 0)
			for f, data := range map[string][]byte{"tls.crt": cert, "tls.key": key} {
				name := filepath.Join(dir, f)
				if err := os.WriteFile(name, data, 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Chtimes(name, mtime, mtime); err != nil {
					t.Fatal(err)
				}
			}
		},
	},
}

// swapData writes version gen into its own directory and points ..data at
// it with an atomic rename, then removes the previous version's directory.
func swapData(t *testing.T, dir string, gen int, cert, key []byte) {
	t.Helper()
	version := fmt.Sprintf("..v%d", gen)
	if err := os.Mkdir(filepath.Join(dir, version), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, version, "tls.crt"), cert)
	writeFile(t, filepath.Join(dir, version, "tls.key"), key)
	if err := os.Symlink(version, filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if gen > 0 {
		os.RemoveAll(filepath.Join(dir, fmt.Sprintf("..v%d", gen-1)))
	}
}

// TestRotation rotates the files under each layout and checks which
// certificate handshakes get: the new one from the first check after the
// rotation, the previous one while the files hold a broken pair (logged
// once), and the next good one after that.
func TestRotation(t *testing.T) {
	a, b, c := newPair(t, 0xA), newPair(t, 0xB), newPair(t, 0xC)
	trusted := roots(a, b, c)
	for _, l := range layouts {
		t.Run(l.name, func(t *testing.T) {
			ctx := testutil.Context(t, 20*time.Second)
			dir := t.TempDir()
			certFile, keyFile := l.setup(t, dir, a)
			logs := &testutil.LogBuffer{}
			clock := testutil.NewClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
			r := &Reloader{CertFile: certFile, KeyFile: keyFile, Logger: logs.Logger(slog.LevelInfo),
				CheckInterval: time.Minute, Now: clock.Now}
			if err := r.Initialize(); err != nil {
				t.Fatal(err)
			}
			addr := serveTLS(t, r)
			expect := func(step, want string, reloaded, failed int) {
				t.Helper()
				got, err := handshake(ctx, addr, trusted)
				if err != nil || got != want {
					t.Fatalf("%s: handshake got serial %q, %v; want %q", step, got, err, want)
				}
				if leaf := serial(r.Leaf()); leaf != want {
					t.Fatalf("%s: Leaf serial %q, want %q", step, leaf, want)
				}
				if n, m := logs.Count(msgReloaded), logs.Count(msgFailed); n != reloaded || m != failed {
					t.Fatalf("%s: %d reloaded and %d failed lines, want %d and %d:\n%s", step, n, m, reloaded, failed, logs)
				}
			}
			expect("initial", a.serial, 0, 0)

			l.rotate(t, dir, 1, b.cert, b.key)
			expect("rotated, within the check interval", a.serial, 0, 0)
			clock.Add(time.Minute)
			expect("rotated, one interval later", b.serial, 1, 0)
			if !strings.Contains(logs.String(), `"serial":"B"`) {
				t.Errorf("reload line without the serial:\n%s", logs)
			}

			// A half-done rotation: the certificate of b with the key of c.
			l.rotate(t, dir, 2, b.cert, c.key)
			clock.Add(time.Minute)
			expect("broken pair", b.serial, 1, 1)
			if !strings.Contains(logs.String(), keyFile) || !strings.Contains(logs.String(), `"level":"ERROR"`) {
				t.Errorf("failure line does not name %s at ERROR:\n%s", keyFile, logs)
			}
			clock.Add(time.Minute)
			expect("broken pair, next check", b.serial, 1, 1) // retried, not logged again

			l.rotate(t, dir, 3, c.cert, c.key)
			clock.Add(time.Minute)
			expect("repaired", c.serial, 2, 1)
		})
	}
}

// TestInitializeErrors: each error names the file at fault and what is
// wrong with it.
func TestInitializeErrors(t *testing.T) {
	a, b := newPair(t, 0xA), newPair(t, 0xB)
	badDER := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not DER")})
	tests := []struct {
		name      string
		cert, key []byte // nil: the file does not exist
		want      []string
	}{
		{"cert missing", nil, a.key, []string{"certificate file", "tls.crt", "no such file"}},
		{"key missing", a.cert, nil, []string{"key file", "tls.key", "no such file"}},
		{"cert not PEM", []byte("hello"), a.key, []string{"tls.crt", "no PEM CERTIFICATE block"}},
		{"cert file holds the key", a.key, a.key, []string{"tls.crt", "no PEM CERTIFICATE block"}},
		{"cert not DER", badDER, a.key, []string{"tls.crt", "x509"}},
		{"key not PEM", a.cert, []byte("hello"), []string{"tls.key", "no PEM PRIVATE KEY block"}},
		{"key of another cert", a.cert, b.key, []string{"tls.key", "does not go with", "tls.crt", "does not match"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			r := &Reloader{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key"),
				Logger: slog.New(slog.DiscardHandler)}
			if tt.cert != nil {
				writeFile(t, r.CertFile, tt.cert)
			}
			if tt.key != nil {
				writeFile(t, r.KeyFile, tt.key)
			}
			err := r.Initialize()
			if err == nil {
				t.Fatal("Initialize succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if _, err := r.GetCertificate(nil); err == nil || r.Leaf() != nil {
				t.Errorf("after a failed Initialize: GetCertificate error %v, Leaf %v", err, r.Leaf())
			}
		})
	}
	if err := (&Reloader{Logger: slog.New(slog.DiscardHandler)}).Initialize(); err == nil || !strings.Contains(err.Error(), "required") {
		t.Errorf("Initialize without files: %v", err)
	}
}

// TestConcurrentHandshakes runs handshakes from several clients while the
// pair rotates back and forth on the real clock: every handshake gets one
// of the two certificates, none fails, and the race detector sees the
// shared state.
func TestConcurrentHandshakes(t *testing.T) {
	ctx := testutil.Context(t, 20*time.Second)
	a, b := newPair(t, 0xA), newPair(t, 0xB)
	trusted := roots(a, b)
	dir := t.TempDir()
	certFile, keyFile := layouts[0].setup(t, dir, a)
	r := &Reloader{CertFile: certFile, KeyFile: keyFile, Logger: slog.New(slog.DiscardHandler),
		CheckInterval: time.Millisecond}
	if err := r.Initialize(); err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, r)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				got, err := handshake(ctx, addr, trusted)
				if err == nil && got != a.serial && got != b.serial {
					err = fmt.Errorf("serial %q", got)
				}
				if err != nil {
					errs <- fmt.Errorf("handshake %d: %w", i, err)
					return
				}
			}
		})
	}
	for i := range 20 {
		p := []pair{a, b}[i%2]
		layouts[0].rotate(t, dir, i, p.cert, p.key)
		select {
		case <-time.After(5 * time.Millisecond): // let checks see it; pace, not a verdict
		case <-ctx.Done():
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestGetCertificateIsCheap: handshakes between checks do not touch the
// files, so a removed file goes unnoticed until the next check, which then
// keeps the previous pair.
func TestGetCertificateIsCheap(t *testing.T) {
	a := newPair(t, 0xA)
	dir := t.TempDir()
	certFile, keyFile := layouts[0].setup(t, dir, a)
	logs := &testutil.LogBuffer{}
	clock := testutil.NewClock(time.Unix(0, 0))
	r := &Reloader{CertFile: certFile, KeyFile: keyFile, Logger: logs.Logger(slog.LevelInfo), Now: clock.Now}
	if err := r.Initialize(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		clock.Add(defaultCheckInterval / 4)
		if _, err := r.GetCertificate(nil); err != nil {
			t.Fatal(err)
		}
	}
	if n := logs.Count(msgFailed); n != 0 {
		t.Fatalf("files checked within the interval (%d failures logged)", n)
	}
	clock.Add(defaultCheckInterval / 4)
	cert, err := r.GetCertificate(nil)
	if err != nil || serial(cert.Leaf) != a.serial {
		t.Fatalf("GetCertificate after the key vanished: %v", err)
	}
	if n := logs.Count(msgFailed); n != 1 || !strings.Contains(logs.String(), "no such file") {
		t.Fatalf("%d failure lines, want 1 saying the key is missing:\n%s", n, logs)
	}
}
