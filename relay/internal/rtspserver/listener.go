package rtspserver

import (
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"time"
)

// mergedListener accepts from a plain and an optional TLS listener, so
// that one gortsplib server (and so one ServerStream per camera) serves
// RTSP and RTSPS players alike. TLS connections are wrapped with
// tls.Server; their handshake runs on the connection's first read, in the
// connection's own goroutine, never in Accept.
type mergedListener struct {
	lns   []net.Listener
	tls   []*tls.Config // tls[i] wraps lns[i]'s connections when non-nil
	conns chan net.Conn
	errs  chan error
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
}

func newMergedListener(lns []net.Listener, tlsConfs []*tls.Config) *mergedListener {
	m := &mergedListener{lns: lns, tls: tlsConfs, conns: make(chan net.Conn), errs: make(chan error, len(lns)), done: make(chan struct{})}
	for i, ln := range lns {
		m.wg.Add(1)
		go m.accept(ln, tlsConfs[i])
	}
	return m
}

func (m *mergedListener) accept(ln net.Listener, conf *tls.Config) {
	defer m.wg.Done()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil && !errors.Is(err, net.ErrClosed) {
			// Like net/http: back off on temporary errors (EMFILE...).
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(backoff):
				continue
			case <-m.done:
				return
			}
		}
		backoff = 0
		if err != nil {
			select {
			case m.errs <- err:
			case <-m.done:
			}
			return
		}
		if conf != nil {
			c = tls.Server(c, conf)
		}
		select {
		case m.conns <- c:
		case <-m.done:
			c.Close()
			return
		}
	}
}

// Accept returns the next connection from either listener.
func (m *mergedListener) Accept() (net.Conn, error) {
	select {
	case c := <-m.conns:
		return c, nil
	case err := <-m.errs:
		m.Close() // one listener failed: stop the other too
		return nil, err
	case <-m.done:
		return nil, net.ErrClosed
	}
}

// Close closes both listeners and waits for their accept loops.
func (m *mergedListener) Close() error {
	m.once.Do(func() {
		close(m.done)
		for _, ln := range m.lns {
			ln.Close()
		}
	})
	m.wg.Wait()
	return nil
}

// Addr is the plain listener's address.
func (m *mergedListener) Addr() net.Addr { return m.lns[0].Addr() }
