package metrics

import (
	"os"
	"regexp"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

// TestMonitoringMetricsExist checks that every relay_ metric the repository's
// Grafana dashboard and Prometheus alert rules (monitoring/ at the root) name,
// in expressions and in descriptions alike, is one the relay exports. The
// expressions' syntax, and the module's names, are checked by
// modules/rtsptunnel/monitoring_test.go, which parses both files.
func TestMonitoringMetricsExist(t *testing.T) {
	have := map[string]bool{}
	for _, f := range gatherAll(t) {
		have[f.GetName()] = true
		if f.GetType() == dto.MetricType_HISTOGRAM {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				have[f.GetName()+s] = true
			}
		}
	}
	name := regexp.MustCompile(`\brelay_[a-z0-9_]+`)
	for _, path := range []string{"../../../monitoring/alerts.yaml", "../../../monitoring/grafana-dashboard.json"} {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		used := name.FindAllString(string(b), -1)
		if len(used) == 0 {
			t.Errorf("%s names no relay metric", path)
		}
		for _, n := range used {
			if !have[n] {
				t.Errorf("%s uses %s, which the relay does not export", path, n)
			}
		}
	}
}
