package testutil

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
)

// LogBuffer is a goroutine-safe log sink: the components under test log
// from their own goroutines while the test reads. The zero value is ready
// to use.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer // guarded by mu
}

// Logger returns a JSON slog.Logger writing to b at level (and above).
func (b *LogBuffer) Logger(level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(b, &slog.HandlerOptions{Level: level}))
}

// Write appends p; it is safe for concurrent use.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns everything written so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Count returns how many JSON log lines have msg as their message.
func (b *LogBuffer) Count(msg string) int {
	return strings.Count(b.String(), fmt.Sprintf(`"msg":%q`, msg))
}

// Records returns the decoded JSON log lines whose message is msg, in the
// order they were written; lines that are not JSON are skipped.
func (b *LogBuffer) Records(msg string) []map[string]any {
	var out []map[string]any
	for l := range strings.SplitSeq(b.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}
