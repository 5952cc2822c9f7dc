package rtspfront

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Listener names one camera's listen address.
type Listener struct {
	Camera string
	Addr   string // host:port; port 0 picks a free one
}

// Handler serves one player connection for camera. It must close conn and
// return when ctx is done.
type Handler func(ctx context.Context, camera string, conn net.Conn)

// Server accepts player connections. Set the fields, call Initialize, and
// Close when done.
type Server struct {
	Listeners []Listener
	Handle    Handler
	Logger    *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	lns    []net.Listener // static after Initialize
	wg     sync.WaitGroup // accept loops and handlers
}

// Initialize listens on every address and starts accepting. If any listen
// fails, it closes the others and returns an error naming the camera.
func (s *Server) Initialize() error {
	if s.Handle == nil || s.Logger == nil {
		return errors.New("rtspfront: Handle and Logger are required")
	}
	for _, l := range s.Listeners {
		ln, err := net.Listen("tcp", l.Addr)
		if err != nil {
			for _, o := range s.lns {
				o.Close()
			}
			s.lns = nil
			return fmt.Errorf("failed to listen for camera %s: %w", l.Camera, err)
		}
		s.lns = append(s.lns, ln)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	for i, ln := range s.lns {
		s.wg.Add(1)
		go s.acceptLoop(s.Listeners[i].Camera, ln)
	}
	return nil
}

// Addr returns the actual address of the i-th listener.
func (s *Server) Addr(i int) net.Addr { return s.lns[i].Addr() }

// Close stops accepting, cancels every handler's context, and waits for the
// handlers to return.
func (s *Server) Close() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	for _, ln := range s.lns {
		ln.Close()
	}
	s.wg.Wait()
}

func (s *Server) acceptLoop(camera string, ln net.Listener) {
	defer s.wg.Done()
	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil {
				return
			}
			// Like net/http: back off on temporary errors (EMFILE...).
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.Logger.Warn("accept failed", "camera", camera, "error", err, "retry_in", backoff.String())
			select {
			case <-time.After(backoff):
				continue
			case <-s.ctx.Done():
				return
			}
		}
		backoff = 0
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.Handle(s.ctx, camera, conn)
		}()
	}
}
