package session

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rtsptunnel/rtsptunnel/modules/rtsptunnel/internal/tunnel"
)

// counterValues gathers the counter family name from reg and returns its
// values by the value of label.
func counterValues(t *testing.T, reg prometheus.Gatherer, name, label string) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]float64{}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label {
					values[lp.GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
	}
	return values
}

// TestMetricsReasonsAtZero checks that Initialize creates every failure and
// close reason series at zero: a series born at 1 has no increase(), so an
// alert on the first failure would never fire.
func TestMetricsReasonsAtZero(t *testing.T) {
	h := newHarness(t, nil).start(t)
	for _, tc := range []struct {
		name string
		want []string
	}{
		{"rtsptunnel_sessions_failed_total", stringsOf(FailReasons)},
		{"rtsptunnel_sessions_closed_total", stringsOf(tunnel.Reasons)},
	} {
		got := counterValues(t, h.reg, tc.name, "reason")
		for _, r := range tc.want {
			if v, ok := got[r]; !ok || v != 0 {
				t.Errorf("%s{reason=%q} = %v (exists %v), want 0", tc.name, r, v, ok)
			}
		}
		if len(got) != len(tc.want) {
			t.Errorf("%s has %d series, want %d", tc.name, len(got), len(tc.want))
		}
	}
}

func stringsOf[S ~string](s []S) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = string(v)
	}
	return out
}

// TestFailReasonsComplete keeps FailReasons in step with the FailReason
// constants declared in this package.
func TestFailReasonsComplete(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	listed := stringsOf(FailReasons)
	for _, name := range files {
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.CONST {
				continue
			}
			for _, spec := range g.Specs {
				vs := spec.(*ast.ValueSpec)
				if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "FailReason" {
					continue
				}
				for _, v := range vs.Values {
					lit, ok := v.(*ast.BasicLit)
					if !ok {
						continue
					}
					if r := lit.Value[1 : len(lit.Value)-1]; !slices.Contains(listed, r) {
						t.Errorf("FailReason %s is missing from FailReasons", lit.Value)
					}
				}
			}
		}
	}
}
