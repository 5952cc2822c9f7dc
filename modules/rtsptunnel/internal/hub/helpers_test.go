package hub

// Helpers for the tests that need no emulator. The tests against the
// emulator live in the emulatortest module (see its doc.go), so that this
// module does not depend on tools/edgeemu.

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// testContext returns a context that ends with the test or after d.
func testContext(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// startRun runs c.Run until the test ends (or stop is called) and checks
// that it returns nil promptly.
func startRun(t *testing.T, ctx context.Context, c *Client) (stop func()) {
	t.Helper()
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(rctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run returned %v", err)
				}
			case <-time.After(30 * time.Second): // handlers 2 s, a publish paho holds 10 s
				t.Errorf("Run did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// testLogger writes to t.Log at debug level; after the test it discards.
func testLogger(t *testing.T, name string) *slog.Logger {
	h := &tHandler{t: t, name: name, level: slog.LevelDebug}
	t.Cleanup(func() {
		h.mu.Lock()
		h.done = true
		h.mu.Unlock()
	})
	return slog.New(h)
}

// tHandler is a slog.Handler that logs through testing.T and counts
// messages, so tests can assert that something was logged.
type tHandler struct {
	t     *testing.T
	name  string
	level slog.Level
	attrs []slog.Attr
	mu    sync.Mutex
	done  bool
	count map[string]int
	last  map[string]string // the last line logged with each message
	root  *tHandler
}

func (h *tHandler) rootH() *tHandler {
	if h.root != nil {
		return h.root
	}
	return h
}

func (h *tHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *tHandler) Handle(_ context.Context, r slog.Record) error {
	root := h.rootH()
	var b strings.Builder
	b.WriteString(root.name + " " + r.Level.String() + " " + r.Message)
	for _, a := range h.attrs {
		b.WriteString(" " + a.String())
	}
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.String())
		return true
	})
	root.mu.Lock()
	defer root.mu.Unlock()
	if root.count == nil {
		root.count = map[string]int{}
	}
	root.count[r.Message]++
	if root.last == nil {
		root.last = map[string]string{}
	}
	root.last[r.Message] = b.String()
	if !root.done {
		root.t.Log(b.String())
	}
	return nil
}

func (h *tHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return &tHandler{root: h.rootH(), level: h.level, attrs: append(append([]slog.Attr(nil), h.attrs...), a...)}
}

func (h *tHandler) WithGroup(string) slog.Handler { return h }

// logged returns how often message was logged through l.
func logged(l *slog.Logger, message string) int {
	h := l.Handler().(*tHandler).rootH()
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.count[message]
}

// lastLogged returns the last line logged through l with message, attributes
// included.
func lastLogged(l *slog.Logger, message string) string {
	h := l.Handler().(*tHandler).rootH()
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last[message]
}

// writeFile writes b to a new file in a temporary directory.
func writeFile(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
