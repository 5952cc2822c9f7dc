package whep

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pion/logging"
)

// pionLogs routes pion's logs into the relay's logger, which pion would
// otherwise print on its own (the relay's stdout carries only the ready
// line). pion's warnings are routine on the internet (a candidate it
// ignores, a late packet), so they are debug lines; its errors are
// warnings; its info, debug and trace lines are dropped below debug.
type pionLogs struct{ log *slog.Logger }

func (f pionLogs) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{f.log.With("component", "webrtc", "scope", scope)}
}

type pionLogger struct{ log *slog.Logger }

func (l pionLogger) logf(level slog.Level, format string, args ...any) {
	if l.log.Enabled(context.Background(), level) {
		l.log.Log(context.Background(), level, fmt.Sprintf(format, args...))
	}
}

func (l pionLogger) Trace(string)                 {}
func (l pionLogger) Tracef(string, ...any)        {}
func (l pionLogger) Debug(string)                 {}
func (l pionLogger) Debugf(string, ...any)        {}
func (l pionLogger) Info(string)                  {}
func (l pionLogger) Infof(string, ...any)         {}
func (l pionLogger) Warn(msg string)              { l.logf(slog.LevelDebug, "%s", msg) }
func (l pionLogger) Warnf(f string, args ...any)  { l.logf(slog.LevelDebug, f, args...) }
func (l pionLogger) Error(msg string)             { l.logf(slog.LevelWarn, "%s", msg) }
func (l pionLogger) Errorf(f string, args ...any) { l.logf(slog.LevelWarn, f, args...) }
