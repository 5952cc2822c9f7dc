package app

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// edgeSeverity is the "<N>" part of edgeAgent's LogMessageParser pattern
// (Azure/iotedge); GetModuleLogs' "loglevel" keeps lines with N <= loglevel.
var edgeSeverity = regexp.MustCompile(`^<(\d)> \d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3} [+-]\d{2}:\d{2} `)

// TestMainStartErrorsSyslog runs Main as the image does (no logFormat set)
// into start-up failures: every line on stderr carries the syslog prefix,
// and IoT Edge's level filter keeps the error at 3 and the warning at 4.
func TestMainStartErrorsSyslog(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		environ  []string
		errors   int // lines kept by loglevel 3
		warnings int // more lines kept by loglevel 4
	}{
		{"bad flag", []string{"--bogus"}, nil, 1, 0},
		{"bad setting", nil, []string{"RTSPTUNNEL_MAXSESSIONS=lots"}, 1, 0},
		{"typo and no identity", nil, []string{"RTSPTUNNEL_MAXSESSION=5"}, 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := Main(tc.args, tc.environ, &stdout, &stderr); code != exitUsage {
				t.Errorf("exit code %d, want %d", code, exitUsage)
			}
			t.Logf("stderr:\n%s", stderr.String())
			kept := map[int]int{}
			for _, l := range strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n") {
				m := edgeSeverity.FindStringSubmatch(l)
				if m == nil {
					t.Errorf("line without the syslog prefix: %q", l)
					continue
				}
				sev, _ := strconv.Atoi(m[1])
				for level := sev; level <= 7; level++ {
					kept[level]++
				}
			}
			if kept[3] != tc.errors || kept[4] != tc.errors+tc.warnings {
				t.Errorf("loglevel 3 keeps %d lines, 4 keeps %d; want %d and %d", kept[3], kept[4], tc.errors, tc.errors+tc.warnings)
			}
		})
	}
}
