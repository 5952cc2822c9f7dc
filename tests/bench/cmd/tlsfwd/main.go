// Command tlsfwd is the throughput benchmark's reference tunnel: a TCP
// forwarder that can terminate or originate TLS, and does nothing else.
//
// Two of them, player → tlsfwd (TCP in, TLS out) → tlsfwd (TLS in, TCP out)
// → camera, have the shape of rtsptunnel's path (relay → wss → module):
// three loopback connections and TLS between two processes, but no websocket
// framing, masking, sessions or accounting. What they reach is what any
// tunnel of that shape can reach on the machine, measured in the same run
// (scripts/bench); the difference to rtsptunnel is what rtsptunnel's own
// code costs.
//
//	tlsfwd --listen 127.0.0.1:0 --to 127.0.0.1:9000 --cert c.pem --key k.pem   # TLS in
//	tlsfwd --listen 127.0.0.1:0 --to 127.0.0.1:9001 --ca ca.pem                 # TLS out
//
// It prints {"listen":"<host:port>"} when it accepts connections.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// bufSize is the copy buffer per direction, the size rtsptunnel's module
// and relay copy with.
const bufSize = 32 << 10

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "tlsfwd:", err)
		os.Exit(1)
	}
}

func run() error {
	listen := flag.String("listen", "127.0.0.1:0", "address to accept connections on")
	to := flag.String("to", "", "address to forward each connection to (required)")
	cert := flag.String("cert", "", "serve TLS with this certificate (PEM; with --key)")
	key := flag.String("key", "", "private key of --cert (PEM)")
	ca := flag.String("ca", "", "dial --to with TLS, verifying its certificate with this CA (PEM)")
	flag.Parse()
	if *to == "" || flag.NArg() > 0 || (*cert == "") != (*key == "") {
		flag.Usage()
		return errors.New("want --to, and --cert with --key or neither")
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	if *cert != "" {
		c, err := tls.LoadX509KeyPair(*cert, *key)
		if err != nil {
			return err
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{c}, MinVersion: tls.VersionTLS12})
	}
	dial := func(ctx context.Context) (net.Conn, error) { return (&net.Dialer{}).DialContext(ctx, "tcp", *to) }
	if *ca != "" {
		pem, err := os.ReadFile(*ca)
		if err != nil {
			return err
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return fmt.Errorf("%s: no certificate", *ca)
		}
		d := &tls.Dialer{Config: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}
		dial = func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", *to) }
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { <-ctx.Done(); ln.Close() }()
	line, _ := json.Marshal(map[string]string{"listen": ln.Addr().String()})
	fmt.Println(string(line))

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		wg.Go(func() {
			if err := forward(ctx, c, dial); err != nil {
				log.Warn("forward failed", "error", err)
			}
		})
	}
}

// forward copies c ⇄ a new connection to the target until either side ends.
func forward(ctx context.Context, c net.Conn, dial func(context.Context) (net.Conn, error)) error {
	defer c.Close()
	t, err := dial(ctx)
	if err != nil {
		return err
	}
	defer t.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		copyBuf(t, c)
		t.Close()
	}()
	copyBuf(c, t)
	c.Close()
	<-done
	return nil
}

// copyBuf copies with a bufSize buffer: the readers' and writers' own
// WriteTo/ReadFrom (which pick other sizes) are hidden.
func copyBuf(dst io.Writer, src io.Reader) {
	buf := make([]byte, bufSize)
	_, _ = io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, buf)
}
