package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// edgeLine is the start of edgeAgent's LogMessageParser.LogRegexPattern
// (Azure/iotedge, edge-agent/src/Microsoft.Azure.Devices.Edge.Agent.Core/Logs):
// an optional "<N>" severity and an optional timestamp. A line without the
// prefix counts as severity 6 there.
var edgeLine = regexp.MustCompile(`^(<(?P<logLevel>\d)>)?\s*((?P<timestamp>\d{4}-\d{2}-\d{2}\s\d{2}:\d{2}:\d{2}.\d{3}\s[+-]\d{2}:\d{2})\s)?`)

// edgeFilter is GetModuleLogs' "loglevel" filter: it keeps the lines whose
// severity is less than or equal to level (doc/built-in-logs-pull.md).
func edgeFilter(t *testing.T, out string, level int) []string {
	t.Helper()
	var kept []string
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		m := edgeLine.FindStringSubmatch(l)
		sev := 6
		if m[2] == "" {
			t.Errorf("line without a <N> prefix: %q", l)
		} else {
			sev, _ = strconv.Atoi(m[2])
		}
		if m[4] == "" {
			t.Errorf("line without the timestamp IoT Edge parses: %q", l)
		}
		if sev <= level {
			kept = append(kept, l)
		}
	}
	return kept
}

// TestSyslogLevelFilter feeds the logger's real output through IoT Edge's
// level filter: level 3 keeps exactly the errors, 4 adds the warnings, 6 the
// information lines, 7 everything.
func TestSyslogLevelFilter(t *testing.T) {
	var buf bytes.Buffer
	level := new(slog.LevelVar)
	level.Set(slog.LevelDebug)
	log := New(&buf, FormatSyslog, level).With("component", "test")
	log.Debug("debug line", "n", 1)
	log.Info("info line", "open_duration", 3229096*time.Nanosecond)
	log.Warn("warn line\nwith a second line", "error", "a\nb")
	log.Error("error line", "error", errors.New("boom"))
	log.WithGroup("g").Info("grouped", "k", "v")
	out := buf.String()
	t.Logf("output:\n%s", out)
	if n := strings.Count(out, "\n"); n != 5 {
		t.Fatalf("%d lines, want 5 (one per record)", n)
	}
	for _, tc := range []struct {
		level int
		want  []string
	}{
		{3, []string{"error line"}},
		{4, []string{"warn line", "error line"}},
		{6, []string{"info line", "warn line", "error line", "grouped"}},
		{7, []string{"debug line", "info line", "warn line", "error line", "grouped"}},
	} {
		kept := edgeFilter(t, out, tc.level)
		if len(kept) != len(tc.want) {
			t.Errorf("loglevel %d kept %d lines, want %d: %q", tc.level, len(kept), len(tc.want), kept)
			continue
		}
		for i, w := range tc.want {
			if !strings.Contains(kept[i], "] - "+w) {
				t.Errorf("loglevel %d: line %d is %q, want message %q", tc.level, i, kept[i], w)
			}
		}
	}
	for _, w := range []string{"[DBG] - debug line component=test n=1", "open_duration=3.229ms", `error="a\nb"`, "g.k=v", "<3> "} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q", w)
		}
	}
}

func TestSyslogLevel(t *testing.T) {
	var buf bytes.Buffer
	level := new(slog.LevelVar)
	log := New(&buf, FormatSyslog, level)
	log.Debug("hidden")
	level.Set(slog.LevelDebug)
	log.Debug("shown")
	if out := buf.String(); strings.Contains(out, "hidden") || !strings.HasPrefix(out, "<7> ") {
		t.Errorf("output %q: want only the debug line logged after the level changed", out)
	}
}

func TestJSONDurations(t *testing.T) {
	var buf bytes.Buffer
	New(&buf, FormatJSON, slog.LevelInfo).Info("m", "open_duration", 3229096*time.Nanosecond, "retry_in", 2*time.Second)
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	if m["open_duration"] != "3.229ms" || m["retry_in"] != "2s" {
		t.Errorf("durations %v, %v: want strings with units", m["open_duration"], m["retry_in"])
	}
}

func TestParseLevel(t *testing.T) {
	for name, want := range map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn,
		"warning": slog.LevelWarn, "WARNING": slog.LevelWarn, "error": slog.LevelError} {
		if got, ok := ParseLevel(name); !ok || got != want {
			t.Errorf("ParseLevel(%q) = %v, %v; want %v", name, got, ok, want)
		}
	}
	if _, ok := ParseLevel("verbose"); ok {
		t.Error("ParseLevel accepted verbose")
	}
}
