package logging

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Line formats accepted by New.
const (
	FormatSyslog = "syslog" // "<N> timestamp [LVL] - message key=value", what IoT Edge filters on
	FormatJSON   = "json"   // slog's JSON handler: one object per line
	FormatText   = "text"   // slog's text handler: key=value, no severity prefix
)

// New returns a logger writing format (FormatSyslog, FormatJSON or
// FormatText; anything else means FormatSyslog) to w, one write per line,
// dropping records below level. It is safe for concurrent use.
func New(w io.Writer, format string, level slog.Leveler) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: durationsWithUnits}
	switch format {
	case FormatJSON:
		return slog.New(slog.NewJSONHandler(w, opts))
	case FormatText:
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(newSyslogHandler(w, level))
}

// ParseLevel parses a level name: debug, info, warn or warning (the name
// Microsoft's modules use), error; case-insensitive.
func ParseLevel(name string) (slog.Level, bool) {
	switch strings.ToLower(name) {
	case "debug":
		return slog.LevelDebug, true
	case "info":
		return slog.LevelInfo, true
	case "warn", "warning":
		return slog.LevelWarn, true
	case "error":
		return slog.LevelError, true
	}
	return slog.LevelInfo, false
}

// Severity returns the syslog severity of a slog level: 7 debug, 6 info,
// 4 warning, 3 error.
func Severity(l slog.Level) int {
	switch {
	case l < slog.LevelInfo:
		return 7
	case l < slog.LevelWarn:
		return 6
	case l < slog.LevelError:
		return 4
	}
	return 3
}

// durationsWithUnits writes a time.Duration as "1.5s" rather than a number
// of nanoseconds (what slog's JSON handler does), rounded to a precision a
// reader can use.
func durationsWithUnits(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.String(a.Key, roundDuration(a.Value.Duration()).String())
	}
	return a
}

func roundDuration(d time.Duration) time.Duration {
	switch {
	case d >= 10*time.Second || d <= -10*time.Second:
		return d.Round(time.Millisecond)
	case d >= 10*time.Millisecond || d <= -10*time.Millisecond:
		return d.Round(100 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

// syslogHandler writes FormatSyslog. The attributes are rendered by a text
// handler into buf, then written after the prefix and the message.
type syslogHandler struct {
	mu   *sync.Mutex   // guards buf and the writes to w; shared by the handlers derived with WithAttrs/WithGroup
	buf  *bytes.Buffer // the text handler's output for the record being handled
	text slog.Handler  // writes the attributes only (no time, level, msg) into buf
	w    io.Writer
}

func newSyslogHandler(w io.Writer, level slog.Leveler) *syslogHandler {
	buf := new(bytes.Buffer)
	text := slog.NewTextHandler(buf, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == slog.LevelKey || a.Key == slog.MessageKey) {
				return slog.Attr{} // written by Handle in the prefix
			}
			return durationsWithUnits(groups, a)
		},
	})
	return &syslogHandler{mu: new(sync.Mutex), buf: buf, text: text, w: w}
}

func (h *syslogHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.text.Enabled(ctx, l)
}

func (h *syslogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.text = h.text.WithAttrs(attrs)
	return &c
}

func (h *syslogHandler) WithGroup(name string) slog.Handler {
	c := *h
	c.text = h.text.WithGroup(name)
	return &c
}

var abbrev = map[int]string{7: "DBG", 6: "INF", 4: "WRN", 3: "ERR"}

// msgEscaper keeps a record on one line: IoT Edge reads the severity of
// each line from its own prefix.
var msgEscaper = strings.NewReplacer("\n", `\n`, "\r", `\r`)

func (h *syslogHandler) Handle(ctx context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.buf.Reset()
	// The text handler writes the record's and the logger's attributes,
	// or a lone newline when there are none.
	r2 := slog.NewRecord(time.Time{}, r.Level, "", r.PC)
	r.Attrs(func(a slog.Attr) bool { r2.AddAttrs(a); return true })
	if err := h.text.Handle(ctx, r2); err != nil {
		return err
	}
	attrs := bytes.TrimRight(h.buf.Bytes(), "\n")

	sev := Severity(r.Level)
	t := r.Time
	if t.IsZero() {
		t = time.Now()
	}
	line := make([]byte, 0, 64+len(r.Message)+len(attrs))
	line = append(line, '<', byte('0'+sev), '>', ' ')
	line = t.AppendFormat(line, "2006-01-02 15:04:05.000 -07:00")
	line = append(line, " ["...)
	line = append(line, abbrev[sev]...)
	line = append(line, "] - "...)
	line = append(line, msgEscaper.Replace(r.Message)...)
	if len(attrs) > 0 {
		line = append(line, ' ')
		line = append(line, attrs...)
	}
	line = append(line, '\n')
	_, err := h.w.Write(line)
	return err
}
