package main

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"

	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/metrics"
	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/session"
	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/tunnel"
)

// The monitoring folder at the repository root ships a Grafana dashboard and
// Prometheus alert rules. These tests keep them in step with the code: every
// expression must be well formed and every rtsptunnel_ (and go_, process_)
// metric it names must be one the module serves on /metrics. The relay's
// names are checked by relay/internal/metrics/monitoring_test.go, which keeps
// a copy of the small PromQL scanner below (two Go modules, and a shared test
// package would have to live in one of them).
const (
	alertsPath    = "../../monitoring/alerts.yaml"
	dashboardPath = "../../monitoring/grafana-dashboard.json"
)

// moduleMetricNames returns the names of the series the module's /metrics
// serves: the registry app.Run builds (Go and process collectors plus
// metrics.New), with every collector exercised so that each family appears.
// Histograms add their _bucket, _sum and _count series.
func moduleMetricNames(t *testing.T) map[string]bool {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m, err := metrics.New(reg, metrics.Options{IoTHub: "hub", EdgeDevice: "edge1", Module: "rtsptunnel"})
	if err != nil {
		t.Fatal(err)
	}
	m.InitReasons([]string{string(session.FailBadRequest)}, []string{string(tunnel.ReasonDeadPeer)})
	m.SessionOpened()
	m.ObserveOpenDuration(time.Second)
	m.MethodCall("tunnelOpen", 200)
	m.SetHubConnected(true)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, f := range families {
		names[f.GetName()] = true
		if f.GetType() == dto.MetricType_HISTOGRAM || f.GetType() == dto.MetricType_SUMMARY {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[f.GetName()+s] = true
			}
		}
	}
	return names
}

// TestMonitoringMetricsExist checks every expression of the alert rules and
// the dashboard, and that the module serves every metric they name.
func TestMonitoringMetricsExist(t *testing.T) {
	have := moduleMetricNames(t)
	exprs := append(alertExprs(t, alertsPath), dashboardExprs(t, dashboardPath)...)
	if len(exprs) < 10 {
		t.Fatalf("found only %d expressions in the monitoring folder", len(exprs))
	}
	used := map[string]bool{}
	for _, e := range exprs {
		names, err := promqlMetricNames(e)
		if err != nil {
			t.Errorf("%v in %q", err, e)
			continue
		}
		for _, n := range names {
			used[n] = true
			switch {
			case strings.HasPrefix(n, "relay_"): // checked by the relay's test
			case n == "up": // Prometheus's own scrape health series
			case strings.HasPrefix(n, "rtsptunnel_"), strings.HasPrefix(n, "go_"), strings.HasPrefix(n, "process_"):
				if !have[n] {
					t.Errorf("%q uses %s, which the module does not export", e, n)
				}
			default:
				t.Errorf("%q uses %s, which neither the module nor the relay exports", e, n)
			}
		}
	}
	// Names in descriptions and annotations must be real too.
	for _, path := range []string{alertsPath, dashboardPath} {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range regexp.MustCompile(`\brtsptunnel_[a-z0-9_]+`).FindAllString(string(b), -1) {
			if !have[n] {
				t.Errorf("%s mentions %s, which the module does not export", path, n)
			}
		}
	}
	// The alerts the issue asked for, by the metric each one needs.
	for _, n := range []string{"rtsptunnel_hub_connected", "rtsptunnel_sessions_failed_total", "rtsptunnel_sessions_closed_total",
		"rtsptunnel_sessions_active", "rtsptunnel_open_duration_seconds_bucket", "rtsptunnel_bytes_total"} {
		if !used[n] {
			t.Errorf("the monitoring folder does not use %s", n)
		}
	}
}

// TestMonitoringScanner checks the scanner on expressions it must accept and
// reject.
func TestMonitoringScanner(t *testing.T) {
	for _, tc := range []struct {
		expr  string
		names []string
		bad   bool
	}{
		{expr: `up{job="x"} == 0`, names: []string{"up"}},
		{expr: `histogram_quantile(0.95, sum by (le) (rate(a_bucket{x=~"$v",y!="}"}[$__rate_interval])))`, names: []string{"a_bucket"}},
		{expr: `(max by (c) (s{state="idle"}) == 1) and on (job, c) (sum without (i) (v) > 0)`, names: []string{"s", "v"}},
		{expr: `sum(rate(a[5m])) / sum(rate(b[5m])) * 8`, names: []string{"a", "b"}},
		{expr: `sum(rate(a[5m])`, bad: true},
		{expr: `sum(a{x="1"]`, bad: true},
		{expr: `a{x="1}`, bad: true},
		{expr: `sume(a)`, bad: true},
		{expr: `Rtsptunnel_x`, bad: true},
		{expr: `a; b`, bad: true},
		{expr: ``, bad: true},
	} {
		names, err := promqlMetricNames(tc.expr)
		if (err != nil) != tc.bad {
			t.Errorf("%q: err = %v, want bad %v", tc.expr, err, tc.bad)
		}
		if !tc.bad && !slices.Equal(names, tc.names) {
			t.Errorf("%q: names %v, want %v", tc.expr, names, tc.names)
		}
	}
}

// alertExprs reads a Prometheus rules file and returns every rule's expr. It
// is a line-based reader for the file's own layout (block sequences and
// mappings, "expr: value", "expr: |" blocks): the product modules carry no
// YAML library and the tests module has none either. Beyond the exprs it
// checks the structure Prometheus requires: groups with names, each rule an
// alert with an expr, alert names unique within their group.
func alertExprs(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	var exprs []string
	alerts, groups := map[string]bool{}, 0
	sawGroups := false
	var alert string // the rule being read
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		if strings.Contains(line, "\t") {
			t.Errorf("%s:%d: a tab (YAML indents with spaces)", path, i+1)
		}
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		indent := len(line) - len(strings.TrimLeft(line, " "))
		key, value, ok := strings.Cut(strings.TrimPrefix(trimmed, "- "), ":")
		if !ok {
			t.Errorf("%s:%d: not a key: value line: %q", path, i+1, trimmed)
			continue
		}
		value = strings.TrimSpace(value)
		switch key {
		case "groups":
			sawGroups = indent == 0
		case "name":
			if strings.HasPrefix(trimmed, "- ") {
				groups++
				alerts = map[string]bool{}
			}
		case "alert", "record":
			if alert != "" {
				t.Errorf("%s:%d: rule %s has no expr", path, i+1, alert)
			}
			alert = unquote(value)
			if alerts[alert] {
				t.Errorf("%s:%d: alert %s twice in its group", path, i+1, alert)
			}
			alerts[alert] = true
		case "expr":
			if alert == "" {
				t.Errorf("%s:%d: expr outside a rule", path, i+1)
			}
			alert = ""
			if value == "|" || value == "|-" || value == ">" || value == ">-" {
				var block []string
				for i+1 < len(lines) && (strings.TrimSpace(lines[i+1]) == "" ||
					len(lines[i+1])-len(strings.TrimLeft(lines[i+1], " ")) > indent) {
					i++
					block = append(block, strings.TrimSpace(lines[i]))
				}
				value = strings.TrimSpace(strings.Join(block, " "))
			} else {
				value = unquote(value)
			}
			exprs = append(exprs, value)
		case "for", "keep_firing_for", "interval":
			if _, err := time.ParseDuration(value); err != nil {
				t.Errorf("%s:%d: %s: %v", path, i+1, key, err)
			}
		}
	}
	if alert != "" {
		t.Errorf("%s: rule %s has no expr", path, alert)
	}
	if !sawGroups || groups == 0 {
		t.Errorf("%s: no groups", path)
	}
	return exprs
}

// unquote strips YAML single or double quotes from a scalar.
func unquote(s string) string {
	if len(s) >= 2 && (s[0] == '"' || s[0] == '\'') && s[len(s)-1] == s[0] {
		if s[0] == '\'' {
			return strings.ReplaceAll(s[1:len(s)-1], "''", "'")
		}
		var u string
		if err := json.Unmarshal([]byte(s), &u); err == nil {
			return u
		}
	}
	return s
}

// dashboardExprs decodes a Grafana dashboard and returns every target's
// expr, and the metric of each label_values() template query.
func dashboardExprs(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title      string            `json:"title"`
		UID        string            `json:"uid"`
		Panels     []json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if d.Title == "" || d.UID == "" || len(d.Panels) == 0 {
		t.Errorf("%s: no title, uid or panels", path)
	}
	var exprs []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if targets, ok := v["targets"].([]any); ok {
				for _, tg := range targets {
					e, _ := tg.(map[string]any)["expr"].(string)
					if e == "" {
						t.Errorf("%s: panel %q has a target without expr", path, v["title"])
					}
					exprs = append(exprs, e)
				}
			}
			for _, c := range v {
				walk(c)
			}
		case []any:
			for _, c := range v {
				walk(c)
			}
		}
	}
	var all map[string]any
	if err := json.Unmarshal(b, &all); err != nil {
		t.Fatal(err)
	}
	walk(all["panels"])
	labelValues := regexp.MustCompile(`^label_values\(\s*([^,]+),\s*[a-zA-Z_]\w*\s*\)$`)
	for _, v := range d.Templating.List {
		var q struct {
			Query string `json:"query"`
		}
		if json.Unmarshal(v.Query, &q) != nil || q.Query == "" {
			continue
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Errorf("%s: variable %s: query %q is not label_values(metric, label)", path, v.Name, q.Query)
			continue
		}
		exprs = append(exprs, m[1])
	}
	return exprs
}

// promqlFuncs are the PromQL functions and aggregation operators an
// expression may call; an unknown name is most likely a typo.
var promqlFuncs = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "count": true, "topk": true, "bottomk": true,
	"quantile": true, "stddev": true, "group": true, "count_values": true,
	"rate": true, "irate": true, "increase": true, "delta": true, "idelta": true, "deriv": true, "changes": true,
	"resets": true, "histogram_quantile": true, "abs": true, "absent": true, "absent_over_time": true,
	"clamp_min": true, "clamp_max": true, "round": true, "time": true, "timestamp": true, "vector": true,
	"scalar": true, "label_replace": true, "label_join": true, "sort": true, "sort_desc": true,
	"avg_over_time": true, "min_over_time": true, "max_over_time": true, "sum_over_time": true,
	"count_over_time": true, "last_over_time": true, "quantile_over_time": true, "predict_linear": true,
}

// promqlMetricNames scans a PromQL expression and returns the metric names
// it selects, in order. It is no parser: full PromQL parsing needs
// github.com/prometheus/prometheus, far too heavy a dependency for a product
// module (promtool check rules does it, where installed). It checks what
// breaks most often by hand: balanced (), [] and {}, closed strings, known
// function names, metric names of the form [a-z_:][a-z0-9_:]*, and no
// characters foreign to PromQL. Label names in {} and in by/without/on/
// ignoring/group_left/group_right lists, durations in [] and Grafana's
// $variables are skipped.
func promqlMetricNames(expr string) ([]string, error) {
	if strings.TrimSpace(expr) == "" {
		return nil, fmt.Errorf("empty expression")
	}
	isIdent := func(c byte, first bool) bool {
		return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || !first && c >= '0' && c <= '9'
	}
	metricName := regexp.MustCompile(`^[a-z_:][a-z0-9_:]*$`)
	var names []string
	var stack []byte   // open brackets
	labelList := false // the next ( opens a list of label names
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			j := i + 1
			for ; j < len(expr) && expr[j] != c; j++ {
				if expr[j] == '\\' && c != '`' {
					j++
				}
			}
			if j >= len(expr) {
				return nil, fmt.Errorf("unterminated string at %d", i)
			}
			i = j + 1
		case c == '(' || c == '[' || c == '{':
			if c == '(' && labelList {
				j := strings.IndexByte(expr[i:], ')')
				if j < 0 {
					return nil, fmt.Errorf("unclosed ( at %d", i)
				}
				labelList = false
				i += j + 1
				continue
			}
			stack = append(stack, c)
			i++
		case c == ')' || c == ']' || c == '}':
			open := map[byte]byte{')': '(', ']': '[', '}': '{'}[c]
			if len(stack) == 0 || stack[len(stack)-1] != open {
				return nil, fmt.Errorf("unbalanced %c at %d", c, i)
			}
			stack = stack[:len(stack)-1]
			i++
		case len(stack) > 0 && (stack[len(stack)-1] == '[' || stack[len(stack)-1] == '{'):
			i++ // durations, label names and matchers
		case c == '$':
			j := i + 1
			for j < len(expr) && isIdent(expr[j], false) {
				j++
			}
			i = j
		case c >= '0' && c <= '9' || c == '.':
			j := i + 1
			for j < len(expr) && (isIdent(expr[j], false) || expr[j] == '.') {
				j++
			}
			i = j
		case isIdent(c, true):
			j := i + 1
			for j < len(expr) && isIdent(expr[j], false) {
				j++
			}
			word := expr[i:j]
			next := strings.TrimLeft(expr[j:], " \t\n")
			switch {
			case slices.Contains([]string{"by", "without", "on", "ignoring", "group_left", "group_right"}, word):
				labelList = strings.HasPrefix(next, "(")
			case slices.Contains([]string{"and", "or", "unless", "bool", "offset"}, word):
			case promqlFuncs[word] && (strings.HasPrefix(next, "by") || strings.HasPrefix(next, "without")):
				// an aggregation with its grouping first: sum by (l) (...)
			case strings.HasPrefix(next, "("):
				if !promqlFuncs[word] {
					return nil, fmt.Errorf("unknown function %s", word)
				}
			case !metricName.MatchString(word):
				return nil, fmt.Errorf("bad metric name %s", word)
			default:
				names = append(names, word)
			}
			i = j
		case strings.IndexByte(" \t\n+-*/%^=!<>,", c) >= 0:
			i++
		default:
			return nil, fmt.Errorf("unexpected %q at %d", c, i)
		}
	}
	if len(stack) > 0 {
		return nil, fmt.Errorf("unclosed %c", stack[len(stack)-1])
	}
	return names, nil
}
