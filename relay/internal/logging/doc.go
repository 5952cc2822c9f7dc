// Package logging builds the process's slog.Logger in one of three line
// formats, and holds the level names the settings accept.
//
// It exists because neither of slog's handlers writes what the IoT Edge
// runtime can filter: edgeAgent's GetModuleLogs and UploadModuleLogs direct
// methods take a "loglevel" N and keep the lines whose syslog severity is
// less than or equal to N, read from a "<N>" prefix at the start of each
// line (IoT Edge's doc/built-in-logs-pull.md, "Recommended logging format";
// the parser is LogMessageParser in edge-agent, which takes a line without
// the prefix for severity 6). JSON lines have no prefix, so that filter kept
// or dropped them all. Format [FormatSyslog] writes IoT Edge's own layout
// (its Logger in edge-util):
//
//	<6> 2025-07-14 21:51:10.000 +00:00 [INF] - session opened session=7d3e9a camera=door open_duration=31ms module=10.0.0.7:51532
//
// severity, timestamp (yyyy-MM-dd HH:mm:ss.fff zzz), level, " - ", the
// message, then the attributes as slog's text handler writes them (key=value,
// quoted when needed). A record is always one line: newlines in the message
// are escaped and the text handler quotes values that hold them.
//
// The relay is not an IoT Edge module, so its default stays FormatJSON (what
// log collectors on a server ingest without a parser); FormatSyslog is there
// for a relay run as an IoT Edge module or under a syslog-style collector.
// This package is a copy of the module's (modules/rtsptunnel/internal/logging):
// the module is a self-contained Go module and shares no code with the relay.
//
// In every format a time.Duration attribute is written as a string with its
// unit ("1.5s", "31ms"), never as a bare number of nanoseconds.
package logging
