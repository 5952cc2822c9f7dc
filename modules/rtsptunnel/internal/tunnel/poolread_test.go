package tunnel

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// TestPoolReader checks that poolReader behaves like Read on a TCP
// connection: data, a reset, EOF, and a close during the wait.
func TestPoolReader(t *testing.T) {
	t.Run("data and EOF", func(t *testing.T) {
		a, peer := tcpPipe(t)
		read := poolReader(a)
		go func() {
			time.Sleep(20 * time.Millisecond) // let the reader wait first
			peer.Write([]byte("hello"))
			peer.Close()
		}()
		var got []byte
		var err error
		for err == nil {
			var bp *[]byte
			var n int
			bp, n, err = read()
			if n > 0 {
				got = append(got, (*bp)[:n]...)
			}
			if bp != nil {
				bufPool.Put(bp)
			}
		}
		if string(got) != "hello" || !errors.Is(err, io.EOF) {
			t.Fatalf("read %q, %v; want hello, EOF", got, err)
		}
	})
	t.Run("reset", func(t *testing.T) {
		a, peer := tcpPipe(t)
		read := poolReader(a)
		peer.SetLinger(0) // close with RST
		peer.Close()
		_, _, err := read()
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("read after a reset: %v", err)
		}
	})
	t.Run("closed while waiting", func(t *testing.T) {
		a, _ := tcpPipe(t)
		read := poolReader(a)
		done := make(chan error, 1)
		go func() {
			bp, n, err := read()
			if bp != nil || n != 0 {
				err = errors.New("got a buffer or data")
			}
			done <- err
		}()
		time.Sleep(20 * time.Millisecond)
		a.Close()
		select {
		case err := <-done:
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("read after Close: %v, want net.ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("read did not return after Close")
		}
	})
	t.Run("pipe", func(t *testing.T) {
		a, b := net.Pipe()
		defer a.Close()
		read := poolReader(a)
		go b.Write([]byte("x"))
		bp, n, err := read()
		if bp == nil || n != 1 || err != nil {
			t.Fatalf("pipe read: %v %d %v", bp != nil, n, err)
		}
		bufPool.Put(bp)
		b.Close()
	})
}
