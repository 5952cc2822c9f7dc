package testutil

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// LogBuffer is a goroutine-safe log sink that tests query after the fact.
// The zero value is ready to use; Logger writes JSON lines into it.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p; it is safe for concurrent use.
func (s *LogBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *LogBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Logger returns a logger writing JSON lines at debug level into s.
func (s *LogBuffer) Logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(s, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Lines returns the JSON log lines written so far, decoded; a line that is
// not a JSON object fails the test.
func (s *LogBuffer) Lines(t testing.TB) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(s.String()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// Count returns how many JSON log lines have message msg and, for each
// pair of attrs (key, value), that attribute with that string value.
func (s *LogBuffer) Count(t testing.TB, msg string, attrs ...string) int {
	t.Helper()
	if len(attrs)%2 != 0 {
		t.Fatalf("testutil: Count wants key/value pairs, got %q", attrs)
	}
	n := 0
lines:
	for _, l := range s.Lines(t) {
		if l["msg"] != msg {
			continue
		}
		for i := 0; i < len(attrs); i += 2 {
			if l[attrs[i]] != attrs[i+1] {
				continue lines
			}
		}
		n++
	}
	return n
}

// TLogger returns a logger at debug level that writes each record through
// t.Log (prefixed with name) and counts records by message for Logged and
// LastLogged. After the test it stops writing to t (a late goroutine must
// not log through a finished test) but keeps counting.
func TLogger(t testing.TB, name string) *slog.Logger {
	return TLoggerAt(t, name, slog.LevelDebug)
}

// TLoggerAt is TLogger for records at level and above; records below it are
// neither written nor counted.
func TLoggerAt(t testing.TB, name string, level slog.Level) *slog.Logger {
	h := &tHandler{t: t, name: name, level: level}
	t.Cleanup(func() {
		h.mu.Lock()
		h.done = true
		h.mu.Unlock()
	})
	return slog.New(h)
}

// Logged returns how often message was logged through l, a logger made by
// TLogger (or derived from one with With).
func Logged(l *slog.Logger, message string) int {
	h := rootOf(l)
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.count[message]
}

// LastLogged returns the last line logged through l (made by TLogger) with
// message, attributes included, or "" if none was.
func LastLogged(l *slog.Logger, message string) string {
	h := rootOf(l)
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last[message]
}

func rootOf(l *slog.Logger) *tHandler {
	h, ok := l.Handler().(*tHandler)
	if !ok {
		panic("testutil: the logger was not made by TLogger")
	}
	return h.rootH()
}

// tHandler is TLogger's slog.Handler. Handlers made by WithAttrs share the
// root's counts, guarded by the root's mu.
type tHandler struct {
	t     testing.TB
	name  string
	level slog.Level
	attrs []slog.Attr
	root  *tHandler // nil on the root itself

	mu    sync.Mutex
	done  bool
	count map[string]int
	last  map[string]string // the last line logged with each message
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
		root.count, root.last = map[string]int{}, map[string]string{}
	}
	root.count[r.Message]++
	root.last[r.Message] = b.String()
	if !root.done {
		root.t.Log(b.String())
	}
	return nil
}

func (h *tHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return &tHandler{root: h.rootH(), level: h.level, attrs: append(append([]slog.Attr(nil), h.attrs...), a...)}
}

// WithGroup ignores groups: the tests query messages, not attribute paths.
func (h *tHandler) WithGroup(string) slog.Handler { return h }
