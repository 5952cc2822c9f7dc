package core

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"testing"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/testutil"
)

// errWriter fails every write.
type errWriter struct{}

var errWrite = errors.New("write failed")

func (errWriter) Write([]byte) (int, error) { return 0, errWrite }

func TestCopyFromPlayer(t *testing.T) {
	for _, tc := range []struct {
		name string
		pair func(t *testing.T) (player, peer net.Conn)
	}{
		{"tcp", func(t *testing.T) (net.Conn, net.Conn) { return testutil.TCPPair(testutil.Context(t, testTimeout), t) }}, // the pooled path
		{"pipe", func(*testing.T) (net.Conn, net.Conn) { return net.Pipe() }},                                             // no file descriptor: io.Copy
	} {
		t.Run(tc.name, func(t *testing.T) {
			player, peer := tc.pair(t)
			payload := make([]byte, 3<<20+17)
			for i := range payload {
				payload[i] = byte(rand.Uint32())
			}
			go func() {
				for p := payload; len(p) > 0; {
					n := min(len(p), 1+rand.IntN(100000))
					peer.Write(p[:n])
					p = p[n:]
				}
				peer.Close()
			}()
			var got bytes.Buffer
			n, err := copyFromPlayer(&got, player)
			if err != nil || n != int64(len(payload)) || !bytes.Equal(got.Bytes(), payload) {
				t.Fatalf("copyFromPlayer = %d, %v; intact: %v", n, err, bytes.Equal(got.Bytes(), payload))
			}

			// A failing destination ends the copy with its error.
			player2, peer2 := tc.pair(t)
			go peer2.Write([]byte("OPTIONS"))
			if _, err := copyFromPlayer(errWriter{}, player2); !errors.Is(err, errWrite) {
				t.Fatalf("copyFromPlayer to a failing writer: %v", err)
			}

			// Closing the player ends a copy that waits.
			player3, _ := tc.pair(t)
			done := make(chan error, 1)
			go func() { _, err := copyFromPlayer(io.Discard, player3); done <- err }()
			player3.Close()
			if err := <-done; !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.ErrClosedPipe) {
				t.Fatalf("copyFromPlayer after Close: %v", err)
			}
		})
	}
}
