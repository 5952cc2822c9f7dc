package core

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rtsptunnel/rtsptunnel/relay/internal/metrics"
)

// splice copies player ⇄ module until either side ends, then closes both.
// It runs the player → module copy itself and module → player in one more
// goroutine, and returns only after that goroutine has exited. Each
// direction is a plain blocking copy over its own connections, so a slow or
// frozen session holds back nobody else; TCP and websocket flow control push
// back on the sender.
func (s *Server) splice(ctx context.Context, sess *session, player, module net.Conn, pre *prefetcher) outcome {
	var (
		once  sync.Once
		first outcome
	)
	// finish records why the session ended and closes both connections,
	// which unblocks the other direction. Only the first call counts.
	finish := func(o outcome, goingAway bool) {
		once.Do(func() {
			first = o
			player.Close()
			if g, ok := module.(GoingAwayCloser); ok && goingAway {
				g.CloseGoingAway()
			} else {
				module.Close()
			}
		})
	}
	stop := context.AfterFunc(ctx, func() {
		finish(outcome{metrics.OutcomeOK, "relay shutting down"}, true)
	})
	defer stop()

	toPlayer := &counter{dst: player, n: &sess.toPlayer, metric: s.Metrics.BytesTotal.WithLabelValues(metrics.DirToPlayer)}
	toCamera := &counter{dst: module, n: &sess.toCamera, metric: s.Metrics.BytesTotal.WithLabelValues(metrics.DirToCamera)}

	downDone := make(chan struct{})
	go func() {
		defer close(downDone)
		// A module connection from wsserver copies through its WriteTo,
		// which holds no buffer while it waits (see poolcopy.go).
		_, err := io.Copy(toPlayer, module)
		switch {
		case err == nil:
			finish(outcome{metrics.OutcomeOK, "module closed the tunnel"}, false)
		case toPlayer.writeErr != nil:
			finish(outcome{metrics.OutcomeOK, "player write failed: " + describe(err)}, false)
		default:
			finish(outcome{metrics.OutcomeOK, "module connection failed: " + describe(err)}, false)
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
		finish(outcome{metrics.OutcomeOK, "player closed the connection"}, false)
	case toCamera.writeErr != nil:
		finish(outcome{metrics.OutcomeOK, "module write failed: " + describe(err)}, false)
	default:
		finish(outcome{metrics.OutcomeOK, "player connection failed: " + describe(err)}, false)
	}
	<-downDone
	return first
}

// counter writes to dst and counts the bytes for the session and the
// relay_bytes_total series. It remembers dst's error so the caller can tell
// which side of a copy failed.
type counter struct {
	dst      io.Writer
	n        *atomic.Int64
	metric   prometheus.Counter
	writeErr error // owned by the copying goroutine
}

func (c *counter) Write(p []byte) (int, error) {
	n, err := c.dst.Write(p)
	if n > 0 {
		c.n.Add(int64(n))
		c.metric.Add(float64(n))
	}
	if err != nil {
		c.writeErr = err
	}
	return n, err
}
