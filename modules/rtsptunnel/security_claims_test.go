package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/settings"
)

var securityPath = filepath.Join(repoRoot, "SECURITY.md")

// securityRow is one data row of a SECURITY.md table.
type securityRow struct {
	line  int
	cells []string
}

// securityTables returns SECURITY.md's tables by their header's first cell.
func securityTables(t *testing.T) map[string][]securityRow {
	t.Helper()
	b, err := os.ReadFile(securityPath)
	if err != nil {
		t.Fatal(err)
	}
	tables := map[string][]securityRow{}
	var header string
	for i, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(l, "|") {
			header = ""
			continue
		}
		cells := strings.Split(strings.Trim(l, "|"), " | ")
		for j := range cells {
			cells[j] = strings.TrimSpace(cells[j])
		}
		switch {
		case header == "":
			header = cells[0]
			if last := cells[len(cells)-1]; last != "checked by" {
				t.Errorf("SECURITY.md:%d: the table %q has no \"checked by\" column", i+1, header)
			}
		case strings.HasPrefix(l, "|---"):
		default:
			tables[header] = append(tables[header], securityRow{line: i + 1, cells: cells})
		}
	}
	return tables
}

// testFuncs returns the names of every Test and Fuzz function in the
// repository's Go test files.
func testFuncs(t *testing.T) map[string]bool {
	t.Helper()
	decl := regexp.MustCompile(`(?m)^func ((?:Test|Fuzz)[A-Za-z0-9_]+)\(`)
	names := map[string]bool{}
	err := filepath.WalkDir(repoRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range decl.FindAllStringSubmatch(string(b), -1) {
			names[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// TestSecurityClaims: every row of every SECURITY.md table names, in its
// "checked by" column, at least one test, and every test it names exists.
func TestSecurityClaims(t *testing.T) {
	tables := securityTables(t)
	for _, want := range []string{"asset", "attempt", "setting"} {
		if len(tables[want]) == 0 {
			t.Errorf("SECURITY.md has no %q table", want)
		}
	}
	funcs := testFuncs(t)
	name := regexp.MustCompile("`((?:Test|Fuzz)[A-Za-z0-9_]+)`")
	for header, rows := range tables {
		for _, r := range rows {
			names := name.FindAllStringSubmatch(r.cells[len(r.cells)-1], -1)
			if len(names) == 0 {
				t.Errorf("SECURITY.md:%d (%s table, %q): no test named in \"checked by\"", r.line, header, r.cells[0])
			}
			for _, n := range names {
				if !funcs[n[1]] {
					t.Errorf("SECURITY.md:%d (%q) names %s, which no test file declares", r.line, r.cells[0], n[1])
				}
			}
		}
	}
}

// TestSecurityDefaults: the module's rows of SECURITY.md's hardening table
// give the defaults the code has.
func TestSecurityDefaults(t *testing.T) {
	d := settings.Defaults()
	secs := func(ds ...time.Duration) string {
		var s []string
		for _, x := range ds {
			s = append(s, fmt.Sprintf("%g s", x.Seconds()))
		}
		return strings.Join(s, " / ")
	}
	list := func(v any) string { return strings.ReplaceAll(fmt.Sprint(v), " ", ",") }
	want := map[string]string{
		"`allowInsecureWebSocket`": fmt.Sprintf("`%v`", d.AllowInsecureWebSocket),
		"`allowedRemoteHosts`":     fmt.Sprintf("`%s` (any host except loopback, link-local, unspecified, multicast and cloud metadata addresses)", list(d.AllowedRemoteHosts)),
		"`targets`":                fmt.Sprintf("`{}`: `127.0.0.1` + `allowedPorts` `%s` only", list(d.AllowedPorts)),
		"`maxSessions`":            fmt.Sprint(d.MaxSessions),
		"`dialTimeout` / `handshakeTimeout` / `openTimeout`": secs(d.DialTimeout, d.HandshakeTimeout, d.OpenTimeout),
		"`idleTimeout`":                  secs(d.IdleTimeout),
		"`pingInterval` / `pingTimeout`": secs(d.PingInterval, d.PingTimeout),
		"`metricsAddr`":                  "`" + d.MetricsAddr + "`",
	}
	if len(d.Targets) != 0 {
		t.Errorf("default targets %v: SECURITY.md says {}", d.Targets)
	}
	seen := map[string]bool{}
	for _, r := range securityTables(t)["setting"] {
		w, ok := want[r.cells[0]]
		if !ok {
			if strings.HasPrefix(r.cells[0], "`") {
				t.Errorf("SECURITY.md:%d: setting row %s is not checked against the code: add it to TestSecurityDefaults", r.line, r.cells[0])
			}
			continue
		}
		seen[r.cells[0]] = true
		if r.cells[1] != w {
			t.Errorf("SECURITY.md:%d: %s default %q, the code says %q", r.line, r.cells[0], r.cells[1], w)
		}
	}
	for k := range want {
		if !seen[k] {
			t.Errorf("SECURITY.md's hardening table lacks the row %s", k)
		}
	}
}
