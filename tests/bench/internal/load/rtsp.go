package load

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// RTSPClient sends OPTIONS requests over one connection and times the round
// trips. It is not safe for concurrent use.
type RTSPClient struct {
	conn net.Conn
	br   *bufio.Reader
	url  string
	cseq int
}

// NewRTSPClient uses conn (already connected to an RTSP server, directly or
// through a tunnel) for requests to url.
func NewRTSPClient(conn net.Conn, url string) *RTSPClient {
	return &RTSPClient{conn: conn, br: bufio.NewReader(conn), url: url}
}

// Options sends one OPTIONS request and reads the whole response. It returns
// the time from the write to the first response byte and to the end of the
// response.
func (c *RTSPClient) Options() (first, total time.Duration, err error) {
	c.cseq++
	req := fmt.Sprintf("OPTIONS %s RTSP/1.0\r\nCSeq: %d\r\nUser-Agent: rtsptunnel-bench\r\n\r\n", c.url, c.cseq)
	start := time.Now()
	if _, err := io.WriteString(c.conn, req); err != nil {
		return 0, 0, fmt.Errorf("failed to send OPTIONS: %w", err)
	}
	if _, err := c.br.Peek(1); err != nil {
		return 0, 0, fmt.Errorf("no response to OPTIONS: %w", err)
	}
	first = time.Since(start)
	if err := c.readResponse(); err != nil {
		return first, 0, err
	}
	return first, time.Since(start), nil
}

// readResponse reads one RTSP response and checks its status and CSeq.
func (c *RTSPClient) readResponse() error {
	status, err := c.br.ReadString('\n')
	if err != nil {
		return fmt.Errorf("failed to read the status line: %w", err)
	}
	if !strings.HasPrefix(status, "RTSP/1.0 200") {
		return fmt.Errorf("OPTIONS answered %q", strings.TrimSpace(status))
	}
	length, cseq := 0, -1
	for {
		line, err := c.br.ReadString('\n')
		if err != nil {
			return fmt.Errorf("failed to read a header: %w", err)
		}
		line = strings.TrimSpace(line)
		if line == "" {
			break
		}
		k, v, _ := strings.Cut(line, ":")
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "content-length":
			length, _ = strconv.Atoi(strings.TrimSpace(v))
		case "cseq":
			cseq, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	if cseq != c.cseq {
		return fmt.Errorf("response CSeq %d, want %d", cseq, c.cseq)
	}
	if length > 0 {
		if _, err := c.br.Discard(length); err != nil {
			return fmt.Errorf("failed to read the body: %w", err)
		}
	}
	return nil
}
