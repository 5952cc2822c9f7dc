package testcloud

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/coder/websocket"
)

const (
	// DefaultAddr is the listen address used when Options.Addr is empty.
	DefaultAddr = "127.0.0.1:0"

	// DefaultMaxMessageSize is the largest websocket message accepted from the module
	// when Options.MaxMessageSize is zero.
	DefaultMaxMessageSize = 1 << 20

	// tunnelPath is the path prefix of session URLs: /tunnels/<id>.
	tunnelPath = "/tunnels/"

	// caFileName is the CA file's name inside the CA directory.
	caFileName = "testcloud-ca.pem"
)

// Options configures New. The zero value is ready to use.
type Options struct {
	// Logger receives the server's structured logs (one line per upgrade attempt and per
	// tunnel end). It defaults to discarding them.
	Logger *slog.Logger
	// Addr is the TCP address to listen on. It defaults to DefaultAddr. The certificate
	// covers localhost, 127.0.0.1, ::1 and the IP of Addr.
	Addr string
	// Dir is the directory the CA file is written to; it must exist. By default a new
	// temporary directory is made and removed by Close.
	Dir string
	// MaxMessageSize is the largest websocket message accepted from the module; a larger
	// one closes the tunnel with 1009. It defaults to DefaultMaxMessageSize.
	MaxMessageSize int64
}

// Server is the test cloud's TLS websocket endpoint. Create it with New and Close it when
// done. Its methods are safe for concurrent use.
type Server struct {
	// Static after New.
	logger  *slog.Logger
	maxMsg  int64
	pki     *pki
	caFile  string
	tempDir string // removed by Close; empty when Options.Dir was given
	ln      net.Listener
	http    *http.Server
	serveWG sync.WaitGroup

	mu       sync.Mutex          // guards the fields below
	sessions map[string]*Session // by id; closed sessions stay, to answer 410
	closed   bool

	closeOnce sync.Once
}

// New generates a CA and a server certificate, writes the CA file, and starts serving
// TLS on Options.Addr.
func New(opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Addr == "" {
		opts.Addr = DefaultAddr
	}
	if opts.MaxMessageSize == 0 {
		opts.MaxMessageSize = DefaultMaxMessageSize
	}

	host, _, err := net.SplitHostPort(opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("invalid address %q: %w", opts.Addr, err)
	}
	pki, err := newPKI(net.ParseIP(host))
	if err != nil {
		return nil, err
	}

	s := &Server{
		logger:   opts.Logger,
		maxMsg:   opts.MaxMessageSize,
		pki:      pki,
		sessions: make(map[string]*Session),
	}

	dir := opts.Dir
	if dir == "" {
		dir, err = os.MkdirTemp("", "testcloud-")
		if err != nil {
			return nil, fmt.Errorf("failed to create a directory for the CA file: %w", err)
		}
		s.tempDir = dir
	}
	s.caFile = filepath.Join(dir, caFileName)
	if err := os.WriteFile(s.caFile, pki.caPEM, 0o644); err != nil {
		s.removeTemp()
		return nil, fmt.Errorf("failed to write the CA file: %w", err)
	}

	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		s.removeTemp()
		return nil, fmt.Errorf("failed to listen on %s: %w", opts.Addr, err)
	}
	s.ln = ln

	mux := http.NewServeMux()
	mux.HandleFunc("GET "+tunnelPath+"{id}", s.handleTunnel)
	s.http = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		// TLS handshake failures (a module that does not trust the CA) show up here.
		ErrorLog: slog.NewLogLogger(s.logger.Handler(), slog.LevelDebug),
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{pki.server},
			MinVersion:   tls.VersionTLS12,
			// Websockets are HTTP/1.1 upgrades; do not offer h2.
			NextProtos: []string{"http/1.1"},
		},
	}
	s.serveWG.Add(1)
	go func() {
		defer s.serveWG.Done()
		err := s.http.ServeTLS(ln, "", "")
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.logger.Error("test cloud stopped serving", "error", err)
		}
	}()

	s.logger.Info("test cloud listening", "addr", s.Addr(), "ca_file", s.caFile)
	return s, nil
}

// Addr returns the address the server listens on, e.g. "127.0.0.1:41234".
func (s *Server) Addr() string {
	return s.ln.Addr().String()
}

// CAFile returns the path of the PEM file holding the CA certificate that signed the
// server's certificate: what the module must be told to trust. It lives until Close.
func (s *Server) CAFile() string {
	return s.caFile
}

// CAPEM returns the CA certificate in PEM form.
func (s *Server) CAPEM() []byte {
	return append([]byte(nil), s.pki.caPEM...)
}

// ClientTLSConfig returns a TLS configuration that trusts only the server's CA, for
// in-test websocket clients.
func (s *Server) ClientTLSConfig() *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(s.pki.caCert)
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// NewSession registers a tunnel session that accepts the given bearer token, and
// starts its local TCP listener on 127.0.0.1. The token must not be empty.
func (s *Server) NewSession(token string) (*Session, error) {
	if token == "" {
		return nil, errors.New("empty token")
	}
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	id := hex.EncodeToString(b[:])

	ss, err := newSession(s, id, token)
	if err != nil {
		return nil, err
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		ss.Close(websocket.StatusGoingAway, "")
		return nil, errors.New("test cloud is closed")
	}
	s.sessions[id] = ss
	return ss, nil
}

// Close closes every session (a live tunnel with 1001, going away), stops the server,
// waits for its goroutines and removes the CA file's temporary directory. It may be
// called more than once.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		sessions := make([]*Session, 0, len(s.sessions))
		for _, ss := range s.sessions {
			sessions = append(sessions, ss)
		}
		s.mu.Unlock()

		// In parallel: each close may wait for its peer's close frame.
		var wg sync.WaitGroup
		for _, ss := range sessions {
			wg.Go(func() { ss.Close(websocket.StatusGoingAway, "test cloud shutting down") })
		}
		wg.Wait()

		_ = s.http.Close()
		s.serveWG.Wait()
		s.removeTemp()
	})
}

func (s *Server) removeTemp() {
	if s.tempDir != "" {
		if err := os.RemoveAll(s.tempDir); err != nil {
			s.logger.Warn("failed to remove the CA directory", "dir", s.tempDir, "error", err)
		}
	}
}

// handleTunnel serves GET /tunnels/{id}.
func (s *Server) handleTunnel(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.mu.Lock()
	ss := s.sessions[id]
	s.mu.Unlock()
	if ss == nil {
		s.logger.Info("tunnel request for an unknown session", "remote", r.RemoteAddr, "status", http.StatusNotFound)
		http.Error(w, "unknown session", http.StatusNotFound)
		return
	}
	ss.handle(w, r)
}
