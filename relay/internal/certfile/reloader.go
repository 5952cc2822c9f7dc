package certfile

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// defaultCheckInterval is Reloader.CheckInterval's default.
const defaultCheckInterval = time.Second

// Reloader serves a certificate pair from files and reloads it when the
// files change. Set the fields, call Initialize, then use GetCertificate;
// it is then safe for concurrent use. It starts no goroutine and holds no
// file open, so there is nothing to close.
type Reloader struct {
	// CertFile is the PEM certificate chain, leaf first. Required.
	CertFile string
	// KeyFile is the PEM private key of the leaf. Required.
	KeyFile string
	// Logger receives "certificate reloaded" (INFO) and failed reloads
	// (ERROR). Required.
	Logger *slog.Logger
	// CheckInterval bounds how often the files are stat'ed (default 1s):
	// GetCertificate stats them at most once per interval, so handshakes
	// stay cheap. A rotation is served at the latest from the first
	// handshake one interval after it.
	CheckInterval time.Duration
	// Now is the clock; nil means time.Now. For tests.
	Now func() time.Time

	cert atomic.Pointer[tls.Certificate] // the pair served; set by Initialize, swapped by check
	next atomic.Int64                    // Unix nanoseconds of the next check

	// mu is held by the one handshake that checks the files; the others
	// serve the current pair meanwhile rather than wait.
	mu      sync.Mutex
	loaded  pairStamp // guarded by mu: the files the served pair came from
	failing bool      // guarded by mu: the files differ from loaded and failed to load
	failed  pairStamp // guarded by mu: the files of the last failure logged
}

// fileStamp identifies a version of a file: a rotation changes at least one
// field. The zero value stands for a file that could not be stat'ed.
type fileStamp struct {
	modTime  int64 // Unix nanoseconds
	size     int64
	dev, ino uint64
}

// pairStamp is the certificate file's stamp, then the key file's.
type pairStamp [2]fileStamp

// Initialize loads the pair. An error names the file and what is wrong
// with it: missing, not PEM, not a certificate, or a key that does not
// match the certificate.
func (r *Reloader) Initialize() error {
	if r.CertFile == "" || r.KeyFile == "" {
		return errors.New("certfile: CertFile and KeyFile are required")
	}
	if r.Logger == nil {
		return errors.New("certfile: Logger is required")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// Stat before reading: a change made while reading then shows at the
	// next check instead of being missed.
	st, _ := r.stat()
	cert, err := load(r.CertFile, r.KeyFile)
	if err != nil {
		return err
	}
	r.cert.Store(cert)
	r.loaded, r.failing = st, false
	r.next.Store(r.now().Add(r.interval()).UnixNano())
	return nil
}

// GetCertificate is for tls.Config.GetCertificate. When the files'
// modification time, size or inode changed since the last load (checked at
// most once per CheckInterval), it loads them again. If the new pair fails
// to load (half-written rotation, mismatched key) it keeps serving the
// previous pair, logs the error at ERROR once per change of the files, and
// tries again at the next check. It never blocks on another handshake's
// check. It fails only when Initialize has not succeeded.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	cert := r.cert.Load()
	if cert == nil {
		return nil, errors.New("certfile: no certificate: Initialize has not succeeded")
	}
	now := r.now()
	if now.UnixNano() < r.next.Load() || !r.mu.TryLock() {
		return cert, nil
	}
	defer r.mu.Unlock()
	if now.UnixNano() < r.next.Load() { // another handshake checked meanwhile
		return r.cert.Load(), nil
	}
	r.next.Store(now.Add(r.interval()).UnixNano())
	r.check()
	return r.cert.Load(), nil
}

// Leaf returns the current certificate's parsed leaf (for logs and tests:
// serial, NotAfter), or nil before Initialize has succeeded.
func (r *Reloader) Leaf() *x509.Certificate {
	if cert := r.cert.Load(); cert != nil {
		return cert.Leaf
	}
	return nil
}

// check reloads the pair when the files changed, or when the last reload
// failed. Called with mu held.
func (r *Reloader) check() {
	st, err := r.stat()
	if err == nil && st == r.loaded {
		r.failing = false // unchanged, or a failed rotation was undone
		return
	}
	// Changed, or still failing: a failed pair is retried even when its
	// stamps have not moved, since a second write within one timestamp tick
	// can leave them equal.
	var cert *tls.Certificate
	if err == nil {
		cert, err = load(r.CertFile, r.KeyFile)
	}
	if err != nil {
		if !r.failing || st != r.failed {
			old := r.cert.Load().Leaf
			r.Logger.Error("certificate reload failed; serving the previous certificate",
				"error", err.Error(), "serial", serial(old), "not_after", old.NotAfter)
		}
		r.failing, r.failed = true, st
		return
	}
	r.cert.Store(cert)
	r.loaded, r.failing = st, false
	r.Logger.Info("certificate reloaded",
		"subject", cert.Leaf.Subject.String(), "serial", serial(cert.Leaf), "not_after", cert.Leaf.NotAfter)
}

// stat stamps both files; a file that cannot be stat'ed gets the zero
// stamp, and the first such error is returned.
func (r *Reloader) stat() (pairStamp, error) {
	var st pairStamp
	var first error
	for i, name := range [2]string{r.CertFile, r.KeyFile} {
		fi, err := os.Stat(name) // follows symlinks, as a swap of "..data" must be seen
		if err != nil {
			if first == nil {
				first = fmt.Errorf("%s file: %w", [2]string{"certificate", "key"}[i], err)
			}
			continue
		}
		dev, ino := fileID(fi)
		st[i] = fileStamp{modTime: fi.ModTime().UnixNano(), size: fi.Size(), dev: dev, ino: ino}
	}
	return st, first
}

// load reads and checks a pair, naming the file at fault in its error.
func load(certFile, keyFile string) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("certificate file: %w", err) // *PathError names the file
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	// tls.X509KeyPair does not say which input is at fault, so the
	// certificate is checked first and its remaining errors are the key's.
	block := firstBlock(certPEM, func(typ string) bool { return typ == "CERTIFICATE" })
	if block == nil {
		return nil, fmt.Errorf("certificate file %s: no PEM CERTIFICATE block", certFile)
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certificate file %s: %w", certFile, err)
	}
	if firstBlock(keyPEM, func(typ string) bool { return strings.HasSuffix(typ, "PRIVATE KEY") }) == nil {
		return nil, fmt.Errorf("key file %s: no PEM PRIVATE KEY block", keyFile)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("key file %s does not go with certificate file %s: %w", keyFile, certFile, err)
	}
	pair.Leaf = leaf
	return &pair, nil
}

// firstBlock returns the first PEM block in data whose type is wanted, or
// nil. Like tls.X509KeyPair it skips other blocks ("EC PARAMETERS" before an
// openssl key).
func firstBlock(data []byte, want func(typ string) bool) *pem.Block {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil || want(b.Type) {
			return b
		}
	}
}

// serial formats a certificate's serial number as openssl does.
func serial(c *x509.Certificate) string {
	return strings.ToUpper(c.SerialNumber.Text(16))
}

func (r *Reloader) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Reloader) interval() time.Duration {
	if r.CheckInterval > 0 {
		return r.CheckInterval
	}
	return defaultCheckInterval
}
