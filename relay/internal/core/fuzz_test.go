package core

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzServiceUnavailable feeds arbitrary first bytes of a player (who is not
// authenticated) to the 503 answer: nothing panics, and an answer is exactly
// a 503 status line and fixed headers, with a CSeq that cannot inject a line.
func FuzzServiceUnavailable(f *testing.F) {
	for _, seed := range []string{
		"OPTIONS rtsp://h/s RTSP/1.0\r\nCSeq: 1\r\n\r\n",
		"DESCRIBE rtsp://h/s RTSP/1.0\r\nCSeq: 2\r\nAccept: application/sdp\r\n\r\n",
		"OPTIONS * RTSP/1.0\nCSeq: 3\nX: y\n\n",
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"OPTIONS rtsp://h/s RTSP/1.0\r\nCSeq: 1\r\nCSeq: 2\r\n\r\n",
		"OPTIONS rtsp://h/s RTSP/1.0\r\nCSeq: 1\rX-Injected: 1\r\n\r\n",
		"OPTIONS rtsp://h/s RTSP/1.0\r\n CSeq: folded\r\n\r\n",
		"\r\n\r\n", "$\x00\x10\x00\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		reply := serviceUnavailable(b)
		if reply == nil {
			return
		}
		lines := strings.Split(strings.TrimSuffix(string(reply), "\r\n\r\n"), "\r\n")
		if lines[0] != "RTSP/1.0 503 Service Unavailable" {
			t.Fatalf("status line %q", lines[0])
		}
		for _, l := range lines[1:] {
			switch {
			case strings.HasPrefix(l, "CSeq: "), l == "Server: rtsptunnel-relay", l == "Content-Length: 0":
			default:
				t.Fatalf("unexpected line %q in %q", l, reply)
			}
			if strings.ContainsAny(l, "\r\n") {
				t.Fatalf("line %q carries a line break", l)
			}
		}
		if bytes.Count(reply, []byte("\r\n\r\n")) != 1 || !bytes.HasSuffix(reply, []byte("\r\n\r\n")) {
			t.Fatalf("reply %q is not one header block", reply)
		}
	})
}
