package core

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// splice copies player ⇄ tunnel until either side ends, then closes the
// player and returns why the session ended and whether the tunnel should
// close as going away; the caller ends the tunnel. It runs the player →
// camera copy itself and camera → player in one more goroutine, and returns
// only after that goroutine has exited. Each direction is a plain blocking
// copy over its own connections, so a slow or frozen session holds back
// nobody else; TCP and websocket flow control push back on the sender.
func (s *Server) splice(ctx context.Context, camera string, player net.Conn, module *Tunnel, pre *prefetcher) (reason string, goingAway bool) {
	var once sync.Once
	// finish records why the session ended and closes both connections,
	// which unblocks the other direction. Only the first call counts.
	finish := func(r string, away bool) {
		once.Do(func() {
			reason, goingAway = r, away
			player.Close()
			module.closeConn(away)
		})
	}
	stop := context.AfterFunc(ctx, func() { finish("relay shutting down", true) })
	defer stop()
	if s.IdleTimeout > 0 {
		idle := watchIdle(module, s.IdleTimeout, func() {
			finish(fmt.Sprintf("nothing from the camera for %v (idleTimeout)", s.IdleTimeout), false)
		})
		defer idle()
	}

	toPlayer := &counter{dst: player, metric: s.Metrics.PlayerBytes.WithLabelValues(camera)}
	toCamera := &counter{dst: module}

	downDone := make(chan struct{})
	go func() {
		defer close(downDone)
		// The Tunnel copies through the module connection's WriteTo, which
		// holds no buffer while it waits (see poolcopy.go).
		_, err := module.WriteTo(toPlayer)
		switch {
		case err == nil:
			finish("module closed the tunnel", false)
		case toPlayer.writeErr != nil:
			finish("player write failed: "+describe(err), false)
		default:
			finish("module connection failed: "+describe(err), false)
		}
	}()

	buf, perr := pre.stop()
	var err error
	if len(buf) > 0 {
		_, err = toCamera.Write(buf)
	}
	if err == nil && perr == nil {
		_, err = copyFromPlayer(toCamera, player)
	} else if err == nil {
		err = perr
		if errors.Is(err, io.EOF) {
			err = nil
		}
	}
	switch {
	case err == nil:
		finish("player closed the connection", false)
	case toCamera.writeErr != nil:
		finish("module write failed: "+describe(err), false)
	default:
		finish("player connection failed: "+describe(err), false)
	}
	<-downDone
	return reason, goingAway
}

// watchIdle calls onIdle once when t has received no byte from the camera
// for d. It checks every d/4, so it fires between d and 1.25 d after the
// last byte. The returned function stops the watch.
func watchIdle(t *Tunnel, d time.Duration, onIdle func()) (stop func()) {
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(d / 4)
		defer tick.Stop()
		last, since := t.BytesFromCamera(), time.Now()
		for {
			select {
			case <-done:
				return
			case now := <-tick.C:
				if n := t.BytesFromCamera(); n != last {
					last, since = n, now
				} else if now.Sub(since) >= d {
					onIdle()
					return
				}
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done) }) }
}

// counter writes to dst and counts the bytes in metric. It remembers dst's error so the caller can tell
// which side of a copy failed.
type counter struct {
	dst      io.Writer
	metric   prometheus.Counter // nil: not counted here
	writeErr error              // owned by the copying goroutine
}

func (c *counter) Write(p []byte) (int, error) {
	n, err := c.dst.Write(p)
	if n > 0 && c.metric != nil {
		c.metric.Add(float64(n))
	}
	if err != nil {
		c.writeErr = err
	}
	return n, err
}
