package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Server serves /metrics and /healthz. Set the fields, call Initialize, and
// Close when done; a new Addr means a new Server (the old one is closed first).
type Server struct {
	// Addr is the listen address, e.g. ":9600".
	Addr string
	// Gatherer is what /metrics serves (usually the registry given to New).
	Gatherer prometheus.Gatherer
	// Metrics answers /healthz; nil means always healthy.
	Metrics *Metrics
	// Logger receives serving errors; nil discards them.
	Logger *slog.Logger

	ln   net.Listener  // set by Initialize
	srv  *http.Server  // set by Initialize
	done chan struct{} // closed when Serve returns
}

// Initialize listens on Addr and starts serving in a goroutine. It fails when
// the address cannot be bound; nothing runs then.
func (s *Server) Initialize() error {
	logger := s.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", s.Addr)
	if err != nil {
		return fmt.Errorf("failed to listen for metrics on %s: %w", s.Addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.Gatherer, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}))
	mux.HandleFunc("GET /healthz", s.healthz)
	s.ln = ln
	s.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
	s.done = make(chan struct{})
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("metrics server stopped", "error", err)
		}
	}()
	return nil
}

// ListenAddr returns the bound address (useful with port 0). Valid after Initialize.
func (s *Server) ListenAddr() net.Addr { return s.ln.Addr() }

// Close stops the server, waiting up to 2s for requests in progress, and
// returns after the serving goroutine has exited.
func (s *Server) Close() error {
	if s.srv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		err = s.srv.Close()
	}
	<-s.done
	return err
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	ok, reason := s.Metrics.Healthy(time.Now())
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "unhealthy: %s\n", reason)
		return
	}
	fmt.Fprintf(w, "ok: %s\n", reason)
}
