package harness

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// FaultProxy is a TCP proxy on loopback for fault injection between two parts
// of the system (module and camera, module and cloud). It forwards bytes
// unchanged until told otherwise:
//
//   - Freeze stops moving bytes in both directions on every connection,
//     existing and new, without closing anything: what a network cut or a peer
//     that hangs looks like (no FIN, no RST; the sender's buffers fill up).
//     A peer that closes or crashes meanwhile is not passed on either.
//   - Thaw resumes forwarding.
//   - Reset aborts every current connection with a TCP RST towards the client
//     and closes the upstream side: a peer that crashed or rebooted.
//
// New connections are accepted and dialled upstream in every state. All
// methods are safe for concurrent use.
type FaultProxy struct {
	ln net.Listener // static

	target string // guarded by mu; see Retarget
	mu     sync.Mutex
	frozen chan struct{}      // guarded by mu; nil while forwarding, else closed by Thaw
	pairs  map[*pair]struct{} // guarded by mu; live connections
	closed bool               // guarded by mu
	total  int                // guarded by mu; connections accepted so far
	wg     sync.WaitGroup     // accept loop and copy goroutines
}

type pair struct {
	client, upstream net.Conn
}

// NewFaultProxy listens on 127.0.0.1 and forwards every connection to target.
func NewFaultProxy(target string) (*FaultProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("failed to listen: %w", err)
	}
	p := &FaultProxy{ln: ln, target: target, pairs: map[*pair]struct{}{}}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Retarget makes new connections go to target; current ones keep theirs.
// It lets a proxy be put in front of a server that has yet to pick its port.
func (p *FaultProxy) Retarget(target string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target = target
}

// Addr returns the proxy's address, e.g. "127.0.0.1:41234".
func (p *FaultProxy) Addr() string { return p.ln.Addr().String() }

// Conns returns the number of connections open through the proxy now.
func (p *FaultProxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.pairs)
}

// Total returns the number of connections accepted so far.
func (p *FaultProxy) Total() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.total
}

// Freeze stops forwarding; see FaultProxy.
func (p *FaultProxy) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.frozen == nil {
		p.frozen = make(chan struct{})
	}
}

// Thaw resumes forwarding after Freeze.
func (p *FaultProxy) Thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.frozen != nil {
		close(p.frozen)
		p.frozen = nil
	}
}

// Reset aborts every current connection: the client gets a TCP RST, the
// upstream side is closed. It returns how many connections were reset.
func (p *FaultProxy) Reset() int {
	p.mu.Lock()
	pairs := make([]*pair, 0, len(p.pairs))
	for pr := range p.pairs {
		pairs = append(pairs, pr)
	}
	p.mu.Unlock()
	for _, pr := range pairs {
		if tc, ok := pr.client.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // close sends RST
		}
		pr.client.Close()
		pr.upstream.Close()
	}
	return len(pairs)
}

// Close stops accepting, closes every connection and waits for the proxy's
// goroutines.
func (p *FaultProxy) Close() {
	p.mu.Lock()
	p.closed = true
	if p.frozen != nil {
		close(p.frozen)
		p.frozen = nil
	}
	for pr := range p.pairs {
		pr.client.Close()
		pr.upstream.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}

func (p *FaultProxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		target := p.target
		p.mu.Unlock()
		up, err := net.DialTimeout("tcp", target, 5*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		pr := &pair{client: c, upstream: up}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			up.Close()
			return
		}
		p.pairs[pr] = struct{}{}
		p.total++
		p.wg.Add(3)
		p.mu.Unlock()
		var once sync.Once
		closeBoth := func() {
			once.Do(func() {
				c.Close()
				up.Close()
				p.mu.Lock()
				delete(p.pairs, pr)
				p.mu.Unlock()
			})
		}
		// A direction that ends with EOF passes the half-close on; the pair is
		// closed when both have ended, or at once when one fails.
		var halves sync.WaitGroup
		halves.Add(2)
		run := func(dst, src net.Conn) {
			defer p.wg.Done()
			defer halves.Done()
			if !p.copy(dst, src) {
				closeBoth()
			}
		}
		go run(up, c)
		go run(c, up)
		go func() { defer p.wg.Done(); halves.Wait(); closeBoth() }()
	}
}

// copy forwards src to dst, holding each chunk while the proxy is frozen. It
// reports whether src ended with EOF (passed on to dst as a half-close).
func (p *FaultProxy) copy(dst, src net.Conn) bool {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			gate := p.frozen
			p.mu.Unlock()
			if gate != nil {
				<-gate
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return false
			}
		}
		if err != nil {
			// A peer's FIN or RST is held too while frozen: through a cut
			// network nothing arrives, not even the end.
			p.mu.Lock()
			gate := p.frozen
			p.mu.Unlock()
			if gate != nil {
				<-gate
			}
			if errors.Is(err, io.EOF) {
				if tc, ok := dst.(*net.TCPConn); ok {
					return tc.CloseWrite() == nil
				}
			}
			return false
		}
	}
}
