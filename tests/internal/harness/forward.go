package harness

import (
	"context"
	"net"
	"sync"
)

// Forwarder accepts connections on a listener (often one inside a network
// namespace) and pipes each to a connection that dial makes (often in
// another namespace): a plain link between two places, which sees nothing
// of what it carries. Hold makes the current connections half-open.
//
// All methods are safe for concurrent use.
type Forwarder struct {
	ln   net.Listener                                // static
	dial func(ctx context.Context) (net.Conn, error) // static

	ctx    context.Context // done when Close is called
	cancel context.CancelFunc
	wg     sync.WaitGroup // accept loop and one goroutine per connection

	mu    sync.Mutex
	conns map[net.Conn]struct{} // guarded by mu; both ends of every pair
	held  map[*link]struct{}    // guarded by mu; live pairs, for Hold
}

// link is one forwarded connection; hold is closed when Hold cuts it.
type link struct {
	hold     chan struct{}
	holdOnce sync.Once
}

// Forward serves ln until Close, piping every accepted connection to one
// from dial (called for each). When dial fails the accepted connection is
// closed.
func Forward(ln net.Listener, dial func(ctx context.Context) (net.Conn, error)) *Forwarder {
	ctx, cancel := context.WithCancel(context.Background())
	f := &Forwarder{ln: ln, dial: dial, ctx: ctx, cancel: cancel,
		conns: map[net.Conn]struct{}{}, held: map[*link]struct{}{}}
	f.wg.Go(f.acceptLoop)
	return f
}

// Addr is the listener's address.
func (f *Forwarder) Addr() string { return f.ln.Addr().String() }

// Hold stops every current connection dead, in both directions and for
// good, without closing anything: no byte, no FIN, no RST passes any more,
// as when a NAT or firewall on the way silently drops a connection's state
// or the far host vanishes. New connections are forwarded normally, so a
// peer that notices and reconnects gets through. It returns how many
// connections it held.
func (f *Forwarder) Hold() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	for l := range f.held {
		l.holdOnce.Do(func() { close(l.hold) })
	}
	n := len(f.held)
	clear(f.held)
	return n
}

// Close stops listening, closes every connection and waits for the
// forwarder's goroutines.
func (f *Forwarder) Close() {
	f.cancel()
	f.ln.Close()
	f.mu.Lock()
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

func (f *Forwarder) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ctx.Err() != nil {
		c.Close()
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *Forwarder) untrack(c net.Conn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
	c.Close()
}

func (f *Forwarder) acceptLoop() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		if !f.track(c) {
			return
		}
		f.wg.Go(func() {
			defer f.untrack(c)
			up, err := f.dial(f.ctx)
			if err != nil {
				return
			}
			if !f.track(up) {
				return
			}
			defer f.untrack(up)
			l := &link{hold: make(chan struct{})}
			f.mu.Lock()
			f.held[l] = struct{}{}
			f.mu.Unlock()
			defer func() {
				f.mu.Lock()
				delete(f.held, l)
				f.mu.Unlock()
			}()
			done := make(chan struct{}, 2)
			go func() { f.pipe(l, up, c); done <- struct{}{} }()
			go func() { f.pipe(l, c, up); done <- struct{}{} }()
			<-done
			<-done
		})
	}
}

// pipe copies src to dst until src ends (passed on as a half-close, as a
// router would) or the link is held (then it waits for Close, passing
// nothing on).
func (f *Forwarder) pipe(l *link, dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-l.hold:
			<-f.ctx.Done()
			return
		default:
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if tc, ok := dst.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
			return
		}
	}
}
