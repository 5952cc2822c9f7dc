package core

import (
	"bufio"
	"bytes"
	"net/textproto"
	"strings"
)

// The relay answers a player whose tunnel cannot be opened with
//
//	RTSP/1.0 503 Service Unavailable
//	CSeq: <the request's CSeq>
//	Content-Length: 0
//
// before it closes the connection, so players report "503 Service
// Unavailable" rather than a bare connection reset. It does so only when the
// first bytes are one complete RTSP request; anything else is just closed.

// requestComplete reports whether b holds a complete request header.
func requestComplete(b []byte) bool {
	return bytes.Contains(b, []byte("\r\n\r\n")) || bytes.Contains(b, []byte("\n\n"))
}

// serviceUnavailable returns the 503 reply to the RTSP request at the start
// of b, or nil when b does not start with a complete RTSP request.
func serviceUnavailable(b []byte) []byte {
	if !requestComplete(b) {
		return nil
	}
	r := textproto.NewReader(bufio.NewReader(bytes.NewReader(b)))
	line, err := r.ReadLine()
	if err != nil {
		return nil
	}
	parts := strings.Fields(line)
	if len(parts) != 3 || !strings.HasPrefix(parts[2], "RTSP/") {
		return nil
	}
	hdr, err := r.ReadMIMEHeader()
	if err != nil && len(hdr) == 0 {
		return nil
	}
	var out bytes.Buffer
	out.WriteString("RTSP/1.0 503 Service Unavailable\r\n")
	if cseq := strings.TrimSpace(hdr.Get("Cseq")); cseq != "" && !strings.ContainsAny(cseq, "\r\n") {
		out.WriteString("CSeq: " + cseq + "\r\n")
	}
	out.WriteString("Server: rtsptunnel-relay\r\nContent-Length: 0\r\n\r\n")
	return out.Bytes()
}
