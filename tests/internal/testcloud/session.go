package testcloud

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

const (
	// copyBufferSize is the largest websocket message the test cloud sends: what one TCP
	// read returns, at most.
	copyBufferSize = 32 << 10

	// writeTimeout bounds one write to the module or to the TCP client, so a frozen peer
	// ends the tunnel instead of hanging the test.
	writeTimeout = 10 * time.Second
)

// Session is one tunnel of the test cloud: a websocket URL and token for tunnelOpen, and
// a local TCP listener whose first connection is spliced with the module's websocket.
// Create it with Server.NewSession. Its methods are safe for concurrent use.
type Session struct {
	// Static after newSession.
	srv       *Server
	id        string
	logger    *slog.Logger
	tokenHash [sha256.Size]byte
	ln        net.Listener // closed after its first accepted connection, or by Close
	ctx       context.Context
	cancel    context.CancelFunc // called by Close

	// wg counts the accept goroutine and the handler running the tunnel. Add is only
	// called under mu while closing is false, so it never races with Close's Wait.
	wg sync.WaitGroup

	tcp      net.Conn      // the TCP client; written once, before tcpReady is closed
	tcpReady chan struct{} // closed when tcp is set

	connected chan struct{} // closed when the websocket is up
	done      chan struct{} // closed when the tunnel has ended, see Closed
	doneOnce  sync.Once

	// closeReq carries close requests (Close, the TCP client hanging up, a bad message)
	// to the tunnel's owner loop. One slot: a request that finds it full is dropped,
	// since a close is already on its way.
	closeReq chan closeRequest

	toModule   atomic.Int64
	fromModule atomic.Int64

	mu          sync.Mutex // guards the fields below
	refuse      int
	header      http.Header
	attempts    int
	upgrading   bool // set once an upgrade was let through: a session is single-use
	closing     bool
	status      websocket.StatusCode
	reason      string
	moduleFirst bool
}

type closeRequest struct {
	code   websocket.StatusCode
	reason string
}

func newSession(srv *Server, id, token string) (*Session, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("failed to listen for the session's TCP client: %w", err)
	}
	ss := &Session{
		srv:       srv,
		id:        id,
		logger:    srv.logger.With("session", id),
		tokenHash: sha256.Sum256([]byte(token)),
		ln:        ln,
		tcpReady:  make(chan struct{}),
		connected: make(chan struct{}),
		done:      make(chan struct{}),
		closeReq:  make(chan closeRequest, 1),
		status:    -1,
	}
	ss.ctx, ss.cancel = context.WithCancel(context.Background())
	ss.wg.Add(1)
	go ss.acceptFirst()
	return ss, nil
}

// ID returns the session's id, the last element of its URL path.
func (ss *Session) ID() string { return ss.id }

// URL returns the websocket URL to give the module as remoteEndpoint, e.g.
// wss://127.0.0.1:41234/tunnels/5f0c....
func (ss *Session) URL() string {
	return "wss://" + ss.srv.Addr() + tunnelPath + ss.id
}

// ListenAddr returns the address of the session's local TCP listener, e.g.
// "127.0.0.1:41235": point the RTSP client at rtsp://<ListenAddr>/<camera path>. Only the
// first connection is accepted; the listener closes after it.
func (ss *Session) ListenAddr() string { return ss.ln.Addr().String() }

// Refuse makes later upgrade requests fail with the given HTTP status (a 4xx or 5xx),
// whatever their token, as a cloud that rejects the tunnel would. Refuse(0) accepts
// again.
func (ss *Session) Refuse(status int) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.refuse = status
}

// Header returns a copy of the headers of the last upgrade request, accepted or not
// (Authorization included), or nil when none arrived yet.
func (ss *Session) Header() http.Header {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.header.Clone()
}

// Attempts returns how many upgrade requests arrived for this session, accepted or not.
func (ss *Session) Attempts() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.attempts
}

// WaitConnected blocks until the module's websocket is up, ctx is done, or the session
// ended without a websocket.
func (ss *Session) WaitConnected(ctx context.Context) error {
	select {
	case <-ss.connected:
		return nil
	case <-ss.done:
		select {
		case <-ss.connected:
			return nil
		default:
		}
		return errors.New("session closed before the module connected")
	case <-ctx.Done():
		return fmt.Errorf("module did not connect: %w", ctx.Err())
	}
}

// Closed returns a channel that is closed when the tunnel has ended: the websocket is
// closed (by either side or by a failure) and the TCP client disconnected; or the
// session was closed before any websocket arrived. CloseStatus is final from then on.
func (ss *Session) Closed() <-chan struct{} { return ss.done }

// CloseStatus returns the status code and reason of the close frame the module sent,
// once Closed is closed. When the test cloud closed first, that is the module's echo of
// the test cloud's code (its reason may then be empty). It returns -1 when the
// module sent no close frame (the connection dropped, or there never was a websocket).
func (ss *Session) CloseStatus() (websocket.StatusCode, string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.status, ss.reason
}

// ModuleClosedFirst reports whether the module started the close handshake (camera EOF,
// module shutdown ...) rather than the test cloud. It is final once Closed is closed.
func (ss *Session) ModuleClosedFirst() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.moduleFirst
}

// BytesToModule returns how many bytes from the TCP client were sent to the module. A
// write is counted as it starts (and uncounted if it fails), so the count is never below
// what the module has received.
func (ss *Session) BytesToModule() int64 { return ss.toModule.Load() }

// BytesFromModule returns how many bytes received from the module were written to the
// TCP client, counted like BytesToModule.
func (ss *Session) BytesFromModule() int64 { return ss.fromModule.Load() }

// Close closes the tunnel from the cloud side: the websocket with code and reason (the
// reason must fit in 123 bytes), the TCP client and the listener; later upgrade
// requests get 410. It blocks until the tunnel has ended, which includes waiting for the
// module's close frame (coder/websocket gives it 5 s). It may be called more than once;
// only the first call's code is sent.
func (ss *Session) Close(code websocket.StatusCode, reason string) {
	ss.mu.Lock()
	ss.closing = true
	ss.mu.Unlock()

	ss.requestClose(code, reason)
	ss.cancel()
	_ = ss.ln.Close()
	ss.wg.Wait()
	ss.closeTCP()
	ss.finish()
}

// requestClose asks the tunnel's owner loop to close the websocket; see closeReq.
func (ss *Session) requestClose(code websocket.StatusCode, reason string) {
	select {
	case ss.closeReq <- closeRequest{code: code, reason: reason}:
	default:
	}
}

func (ss *Session) finish() {
	ss.doneOnce.Do(func() { close(ss.done) })
}

func (ss *Session) closeTCP() {
	select {
	case <-ss.tcpReady:
		_ = ss.tcp.Close()
	default:
	}
}

// acceptFirst accepts the session's one TCP client.
func (ss *Session) acceptFirst() {
	defer ss.wg.Done()
	c, err := ss.ln.Accept()
	_ = ss.ln.Close() // one TCP connection per tunnel
	if err != nil {
		return
	}
	ss.tcp = c
	close(ss.tcpReady)
	ss.logger.Info("tcp client connected", "remote", c.RemoteAddr().String())
	if ss.ctx.Err() != nil { // Close ran while we accepted
		_ = c.Close()
	}
}

// authorized checks an Authorization header against the session's token. Both sides are
// hashed first, so the comparison takes the same time whatever the token's length.
func (ss *Session) authorized(h string) bool {
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	got := sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(got[:], ss.tokenHash[:]) == 1
}

// handle serves one upgrade request for this session and, when it is accepted, runs the
// tunnel until it ends.
func (ss *Session) handle(w http.ResponseWriter, r *http.Request) {
	ss.mu.Lock()
	ss.attempts++
	ss.header = r.Header.Clone()
	status := 0
	switch {
	case ss.closing:
		status = http.StatusGone
	case ss.refuse != 0:
		status = ss.refuse
	case !ss.authorized(r.Header.Get("Authorization")):
		status = http.StatusUnauthorized
	case ss.upgrading:
		status = http.StatusConflict
	default:
		ss.upgrading = true
		ss.wg.Add(1)
	}
	ss.mu.Unlock()

	log := ss.logger.With("remote", r.RemoteAddr, "user_agent", r.UserAgent(),
		"connection_source", r.Header.Get("TunnelConnectionSource"))
	if status != 0 {
		log.Info("tunnel refused", "status", status)
		if status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer realm="testcloud"`)
		}
		http.Error(w, http.StatusText(status), status)
		return
	}
	defer ss.wg.Done()

	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		// Video does not compress; the module should not negotiate it either.
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		// Accept has answered the request (e.g. 426 to a plain GET); let a real
		// websocket try again.
		log.Info("websocket upgrade failed", "error", err)
		ss.mu.Lock()
		ss.upgrading = false
		ss.mu.Unlock()
		return
	}
	c.SetReadLimit(ss.srv.maxMsg)
	close(ss.connected)
	log.Info("tunnel connected")

	ss.tunnel(c)
}

// tunnel splices the websocket with the TCP client until the websocket ends. It owns c's
// closing: requests arrive on closeReq, and the close handshake runs in its own goroutine
// because it needs the reader to keep reading.
func (ss *Session) tunnel(c *websocket.Conn) {
	defer ss.finish()

	closeStarted := make(chan struct{}) // closed by this loop when the close begins
	readErr := make(chan error, 1)
	writerDone := make(chan struct{})
	readerDone := make(chan struct{})

	go func() {
		err := ss.wsToTCP(c, closeStarted)
		close(readerDone) // before readErr, so the writer knows who hung up
		readErr <- err
	}()
	go func() {
		defer close(writerDone)
		ss.tcpToWS(c, readerDone)
	}()

	var (
		sent     *closeRequest
		closeErr = make(chan error, 1)
		rerr     error
	)
loop:
	for {
		select {
		case req := <-ss.closeReq:
			if sent == nil {
				sent = &req
				close(closeStarted)
				go func() { closeErr <- c.Close(req.code, req.reason) }()
			}
		case rerr = <-readErr:
			break loop
		}
	}

	// The websocket is done: hang up on the TCP client, which ends the writer.
	ss.closeTCP()
	<-writerDone
	var cerr error
	if sent != nil {
		cerr = <-closeErr // returns promptly now that the reader has seen the end
	} else {
		_ = c.CloseNow()
	}

	// Work out what the module sent.
	ss.mu.Lock()
	var ce websocket.CloseError
	switch {
	case errors.As(rerr, &ce):
		ss.status, ss.reason = ce.Code, ce.Reason
		ss.moduleFirst = sent == nil
	case sent != nil && cerr == nil:
		// Close read the module's echo itself, and it matched the code sent.
		ss.status = sent.code
	case sent != nil && errors.As(cerr, &ce):
		ss.status, ss.reason = ce.Code, ce.Reason
	}
	status, reason, first := ss.status, ss.reason, ss.moduleFirst
	ss.mu.Unlock()

	attrs := []any{"status", int(status), "reason", reason, "module_closed_first", first,
		"bytes_to_module", ss.toModule.Load(), "bytes_from_module", ss.fromModule.Load()}
	if sent != nil {
		attrs = append(attrs, "cloud_code", int(sent.code), "cloud_reason", sent.reason)
	}
	if status == -1 {
		attrs = append(attrs, "error", fmt.Sprint(rerr))
	}
	ss.logger.Info("tunnel closed", attrs...)
}

// wsToTCP copies binary messages from the module to the TCP client until reading the
// websocket fails, and returns that error (a websocket.CloseError when the module sent
// a close frame). A message that arrives before the TCP client has connected waits for
// it.
func (ss *Session) wsToTCP(c *websocket.Conn, closeStarted <-chan struct{}) error {
	for {
		typ, data, err := c.Read(context.Background())
		if err != nil {
			return err
		}
		if typ != websocket.MessageBinary {
			ss.requestClose(websocket.StatusUnsupportedData, "the tunnel carries binary messages only")
			continue // until the close handshake ends the reads
		}
		select {
		case <-ss.tcpReady:
		case <-closeStarted:
			continue // drop it: the tunnel is closing before it had a client
		}
		// Counted before the write, so the counter never lags what the client has read.
		ss.fromModule.Add(int64(len(data)))
		n := 0
		if err = ss.tcp.SetWriteDeadline(time.Now().Add(writeTimeout)); err == nil {
			n, err = ss.tcp.Write(data)
		}
		if err != nil {
			ss.fromModule.Add(int64(n - len(data)))
			ss.requestClose(websocket.StatusNormalClosure, "client disconnected")
			continue
		}
	}
}

// tcpToWS copies the TCP client's bytes to the module, one binary message per read,
// until the client hangs up (then it asks for a 1000 close) or the tunnel ends.
func (ss *Session) tcpToWS(c *websocket.Conn, readerDone <-chan struct{}) {
	select {
	case <-ss.tcpReady:
	case <-readerDone:
		return
	}
	buf := make([]byte, copyBufferSize)
	for {
		n, err := ss.tcp.Read(buf)
		if n > 0 {
			// Counted before the write, so the counter never lags what the module has read.
			ss.toModule.Add(int64(n))
			ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
			werr := c.Write(ctx, websocket.MessageBinary, buf[:n])
			cancel()
			if werr != nil {
				ss.toModule.Add(int64(-n))
				return // the websocket is gone; the reader sees it too
			}
		}
		if err != nil {
			select {
			case <-readerDone: // the websocket ended first and we hung up
			default:
				ss.logger.Info("tcp client disconnected", "error", err)
				ss.requestClose(websocket.StatusNormalClosure, "client disconnected")
			}
			return
		}
	}
}
